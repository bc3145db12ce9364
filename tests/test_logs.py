"""INCIDENTD_LOG_FORMAT: one format for every logger of the real process, and a shutdown
that writes no error line, as an operator sees it (a subprocess, pipes, signals)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.observability import logs
from tests.support.payloads import alert, body, webhook
from tests.support.service import free_port, spawn_run

KEYS = {"time", "level", "logger", "message"}
# What a shutdown must never print, whatever the format.
NOISE = ("Traceback", "Unclosed", "never retrieved", "callback for Task", "\x1b[")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


class Service:
    """``incidentd run --embedded`` with both streams read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[tuple[str, str]] = []  # (stream, line)
        self._seen = asyncio.Condition()
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read("out", proc.stdout)),
            asyncio.create_task(self._read("err", proc.stderr)),
        ]

    async def _read(self, name: str, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            async with self._seen:
                self.lines.append((name, raw.decode().rstrip("\n")))
                self._seen.notify_all()

    async def wait_for(self, pattern: str, timeout: float = 90) -> None:
        def found() -> bool:
            return any(re.search(pattern, line) for _, line in self.lines)

        async def _wait() -> None:
            async with self._seen:
                await self._seen.wait_for(lambda: found() or self.proc.returncode is not None)
            assert found(), f"exited before {pattern!r}: {self.lines[-20:]}"

        await asyncio.wait_for(_wait(), timeout)

    async def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return await self.exited()

    async def exited(self) -> int:
        """The exit code, once every line the process wrote is read."""
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await asyncio.gather(*self._readers)
        return code


async def start(cwd: Path, http_port: int, embedded: bool = True, **env: str) -> Service:
    environ = {
        "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "INCIDENTD_HTTP_PORT": str(http_port),
        **env,
    }
    # The format is the test's to choose, never the caller's environment.
    proc = await spawn_run(cwd, environ, embedded=embedded, unset=("INCIDENTD_LOG_FORMAT",))
    return Service(proc)


def parsed(lines: list[tuple[str, str]]) -> Iterator[tuple[str, dict[str, object]]]:
    for stream, line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line on std{stream}: {line!r}") from None
        assert isinstance(record, dict) and KEYS <= set(record), (stream, line)
        yield stream, record


async def test_json_format_covers_every_logger_and_ctrl_c_exits_0_without_an_error_line(
    tmp_path: Path,
) -> None:
    http_port = free_port()
    # Format unset and the streams are pipes, not a terminal: JSON is the default.
    service = await start(tmp_path, http_port)
    try:
        await service.wait_for(r"incidentd is running")
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(
                f"http://127.0.0.1:{http_port}/api/v1/alerts/alertmanager",
                content=body(webhook(alert("ApiDown", namespace="aragora"))),
            )
        assert resp.status_code == 202
        await service.wait_for(r"=== PAGE P1 inc-")
        await service.wait_for(r'"logger": "uvicorn\.access"')
        assert await service.stop(signal.SIGINT) == 0
    finally:
        if service.proc.returncode is None:
            service.proc.kill()
            await service.proc.wait()

    records = list(parsed(service.lines))
    loggers = {str(r["logger"]) for _, r in records}
    assert {"service.embedded.broker", "service.cli", "service.notify.console", "uvicorn.access"} <= loggers
    assert any(name.startswith("aiokafka") for name in loggers), loggers
    access = [r for _, r in records if r["logger"] == "uvicorn.access"]
    webhook_line = next(r for r in access if r.get("path") == "/api/v1/alerts/alertmanager")
    assert (webhook_line["method"], webhook_line["status"]) == ("POST", 202)
    page = next(r for s, r in records if r["logger"] == "service.notify.console")
    assert "[INCIDENT] SEV-1" in str(page["message"]) and str(page["incident_id"]).startswith("inc-")
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(r["time"])) for _, r in records)
    errors = [r for _, r in records if r["level"] in ("ERROR", "CRITICAL") or "exc" in r]
    assert errors == []
    assert [line for _, line in service.lines if any(n in line for n in NOISE)] == []
    assert any(r["message"] == "SIGINT: shutting down" for _, r in records)


async def test_text_format_has_no_colour_codes_and_a_signal_while_starting_closes_every_client(
    tmp_path: Path,
) -> None:
    # Consumer groups, as replicas use them (run --embedded assigns its partitions itself).
    service = await start(
        tmp_path, free_port(), INCIDENTD_LOG_FORMAT="text", INCIDENTD_KAFKA_ASSIGNMENT="group"
    )
    try:
        # The consumers are joining their groups (a broker holds the first join for
        # seconds): the moment a stop used to leave them running, fetching from a
        # broker already gone, and reported unclosed at exit.
        await service.wait_for(r"aiokafka\.consumer\.group_coordinator: \(Re-\)joining group")
        assert await service.stop(signal.SIGTERM) == 0
    finally:
        if service.proc.returncode is None:
            service.proc.kill()
            await service.proc.wait()

    err = [line for stream, line in service.lines if stream == "err"]
    assert any("SIGTERM while starting: stopping" in line for line in err), err[-10:]
    assert [line for line in err if not TEXT_LINE.match(line)] == []
    assert [line for line in err if " ERROR " in line or " CRITICAL " in line] == []
    assert [line for _, line in service.lines if any(n in line for n in NOISE)] == []


async def test_a_failed_start_says_why_in_one_json_line_and_closes_its_clients(tmp_path: Path) -> None:
    nothing_there = free_port()
    service = await start(
        tmp_path,
        free_port(),
        embedded=False,
        INCIDENTD_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{nothing_there}",
        INCIDENTD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
    )
    assert await service.exited() == 1
    records = [r for _, r in parsed(service.lines)]
    last = records[-1]
    assert (last["level"], last["logger"]) == ("CRITICAL", "service.cli")
    assert str(last["message"]) == (
        f"incidentd: cannot connect to Kafka at 127.0.0.1:{nothing_there} (PLAINTEXT): "
        f"nothing answers at 127.0.0.1:{nothing_there} (Connection refused)"
    )
    assert [line for _, line in service.lines if any(n in line for n in NOISE)] == []


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() changes the whole process: put back what the rest of the run expects."""
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    libraries = {name: logging.getLogger(name).level for name in ("faststream", "uvicorn", "aiokafka")}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for name, lib_level in libraries.items():
        logging.getLogger(name).setLevel(lib_level)
    sys.excepthook = hook
    logging.captureWarnings(False)


async def test_invalid_settings_stop_the_start_in_one_json_line(tmp_path: Path) -> None:
    proc = await spawn_run(tmp_path, {"INCIDENTD_HTTP_PORT": "abc"}, unset=("INCIDENTD_LOG_FORMAT",))
    out, err = await proc.communicate()
    assert proc.returncode == 1 and out == b""
    [line] = err.decode().splitlines()  # the settings were never read: the format still holds
    record = json.loads(line)
    assert (record["level"], record["logger"]) == ("CRITICAL", "service.cli")
    assert record["message"] == (
        "incidentd: invalid configuration:\n  INCIDENTD_HTTP_PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_json_records_carry_the_traceback_the_fields_and_python_warnings(restore_logging: None) -> None:
    stream = io.StringIO()
    assert logs.configure("info", None, stream) == "json"  # a StringIO is no terminal
    log = logging.getLogger("service.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed for %s", "inc-1", extra={"incident_id": "inc-1"})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old thing", DeprecationWarning, stacklevel=1)
    logging.getLogger("faststream.kafka").info("callback for Task-9 is being executed...")
    logging.getLogger("faststream.kafka").warning("consumer for %s stopped", "alerts")
    first, second, fast, *rest = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (first["level"], first["logger"], first["message"]) == (
        "ERROR",
        "service.test",
        "failed for inc-1",
    )
    assert first["incident_id"] == "inc-1" and "ValueError: boom" in first["exc"]
    assert second["logger"] == "py.warnings" and "DeprecationWarning: old thing" in second["message"]
    # FastStream's own records come out in the same format; its INFO bookkeeping stays below.
    assert (fast["level"], fast["logger"], fast["message"]) == (
        "WARNING",
        "faststream.kafka",
        "consumer for alerts stopped",
    )
    assert rest == []


def test_text_on_a_non_terminal_has_no_escape_codes_and_a_bad_level_is_named(restore_logging: None) -> None:
    stream = io.StringIO()
    assert logs.configure("WARNING", "text", stream) == "text"
    logging.getLogger("aiokafka").error("Unable to update metadata")
    assert TEXT_LINE.match(stream.getvalue()) and "\x1b" not in stream.getvalue()
    with pytest.raises(ValueError, match="INCIDENTD_LOG_LEVEL='loud': one of DEBUG, INFO"):
        logs.parse_level("loud")
