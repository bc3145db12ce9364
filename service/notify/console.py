"""Pages written to the terminal: the embedded mode's pager."""

from __future__ import annotations

import sys
from typing import TextIO

from service.config import Settings
from service.notify.base import PageRequest
from service.observability import logs

BANNERS = {"trigger": "PAGE", "ack": "PAGE ACKNOWLEDGED", "close": "PAGE CLOSED", "update": "UPDATE"}


class ConsoleNotifier:
    name = "console"
    comms = True

    def __init__(self, stream: TextIO | None = None, json_lines: bool = False) -> None:
        """``json_lines``: each page is one JSON log line (INCIDENTD_LOG_FORMAT=json), so a
        log shipper reading stdout sees only JSON."""
        self._stream = stream
        self._json = json_lines

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleNotifier:
        return cls(json_lines=logs.resolve_format(settings.log_format, sys.stdout) == "json")

    async def send(self, request: PageRequest) -> str | None:
        stream = self._stream or sys.stdout
        banner = BANNERS[request.action]
        to = f" to {', '.join(request.roles)}" if request.roles else ""
        head = (
            f"=== {banner} {request.priority} {request.incident_id}{to} (key {request.idempotency_key}) ==="
        )
        if self._json:
            text = "\n".join(part for part in (head, request.message, request.description) if part)
            stream.write(
                logs.json_line(
                    "service.notify.console",
                    text,
                    incident_id=request.incident_id,
                    action=request.action,
                    priority=request.priority,
                    roles=list(request.roles),
                    idempotency_key=request.idempotency_key,
                )
                + "\n"
            )
        else:
            stream.write(f"\n{head}\n{request.message}\n{request.description}\n")
        stream.flush()
        return None

    async def aclose(self) -> None:
        return None
