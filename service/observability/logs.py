"""One log format for the whole process: incidentd's own loggers, FastStream, aiokafka,
uvicorn (access and error logs), alembic, asyncio and Python warnings.

``INCIDENTD_LOG_FORMAT=json`` writes one JSON object per line (``time``, ``level``,
``logger``, ``message``, then ``exc`` for a traceback and the record's own fields);
``text`` writes ``time LEVEL logger: message``. Unset, a terminal gets text and anything
else (a pipe, a file, a container runtime) gets JSON: what reads a non-terminal is usually
a log shipper. Colour codes are written only to a terminal.

Every library logger is made to propagate to the root logger, whose one handler writes to
stderr: FastStream and uvicorn would otherwise install handlers of their own, with their
own formats and colours (FastStream's always colours, terminal or not).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

LogFormat = Literal["json", "text"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# The attributes every LogRecord has; anything else on a record is a field its caller added
# (``extra=``), which the JSON format keeps.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# Fields a library adds for its own formatter, not for readers: uvicorn's coloured copy.
_DROPPED = frozenset({"color_message"})

# Libraries whose loggers carry handlers of their own (FastStream adds one at import, and
# one per broker unless given a logger; uvicorn's only with a log_config, which we do not
# pass): cleared, so their records reach the root handler only.
_LIBRARIES = ("faststream", "uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka", "alembic")

# FastStream logs at INFO what is bookkeeping, not news: "callback for Task-NN is being
# executed..." each time one of its consumer tasks ends (every shutdown, once per lane;
# faststream/_internal/endpoint/subscriber/supervisor.py), and each record received and
# processed (at the broker's log_level, DEBUG here). Its warnings and errors are kept;
# INCIDENTD_LOG_LEVEL=DEBUG shows everything.
_QUIET_BELOW_DEBUG = {"faststream": logging.WARNING}

_COLOURS = {"DEBUG": "36", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def resolve_format(setting: str | None, stream: TextIO) -> LogFormat:
    """The format for ``stream``: the setting when set, else text on a terminal, JSON otherwise."""
    if setting == "json" or (setting is None and not is_terminal(stream)):
        return "json"
    return "text"


def parse_level(value: str) -> int:
    name = value.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"INCIDENTD_LOG_LEVEL={value!r}: one of {', '.join(LEVELS)}")
    return int(getattr(logging, name))


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_line(logger: str, message: str, level: str = "INFO", **fields: object) -> str:
    """One JSON log line (no newline), for what the service prints that is not a log record
    (the start banner, the console pager) so that a JSON stream stays all JSON."""
    head = {"time": _timestamp(datetime.now(UTC).timestamp()), "level": level, "logger": logger}
    return json.dumps({**head, "message": message, **fields}, default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        out.update(_access_fields(record))
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in _DROPPED or key in out or value in ("", None):
                continue
            out[key] = value
        return json.dumps(out, default=str, ensure_ascii=False)


def _access_fields(record: logging.LogRecord) -> dict[str, object]:
    """uvicorn's access line as fields: its args are (client, method, path, version, status)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, version, status = args
    return {"client": client, "method": method, "path": path, "http_version": version, "status": status}


class TextFormatter(logging.Formatter):
    def __init__(self, colour: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._colour = colour

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not self._colour:
            return super().formatMessage(record)
        plain = record.levelname
        record.levelname = f"\x1b[{_COLOURS.get(plain, '0')}m{plain}\x1b[0m"
        try:
            return super().formatMessage(record)
        finally:
            record.levelname = plain


def formatter(fmt: LogFormat, stream: TextIO) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter(colour=is_terminal(stream))


def configure(level: str, fmt: str | None, stream: TextIO | None = None) -> LogFormat:
    """Route every logger of the process through one handler on ``stream`` (stderr) in
    ``fmt`` (None: :func:`resolve_format`). Returns the format chosen."""
    out = stream or sys.stderr
    chosen = resolve_format(fmt, out)
    numeric = parse_level(level)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(chosen, out))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # FastStream adds its handler when imported: import it first, so that it is cleared here.
    importlib.import_module("faststream")
    for name in _LIBRARIES:
        lib = logging.getLogger(name)
        for old in list(lib.handlers):
            lib.removeHandler(old)
        lib.propagate = True
        lib.setLevel(logging.NOTSET)
    for name, floor in _QUIET_BELOW_DEBUG.items():
        logging.getLogger(name).setLevel(max(numeric, floor) if numeric > logging.DEBUG else numeric)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    return chosen


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: object) -> None:
    if issubclass(kind, KeyboardInterrupt):
        return
    logging.getLogger("incidentd").critical(
        "uncaught %s: %s", kind.__name__, exc, exc_info=(kind, exc, exc.__traceback__)
    )
