"""Pages written to the terminal: the embedded mode's pager."""

from __future__ import annotations

import sys
from typing import TextIO

from service.config import Settings
from service.notify.base import PageRequest

BANNERS = {"trigger": "PAGE", "ack": "PAGE ACKNOWLEDGED", "close": "PAGE CLOSED", "update": "UPDATE"}


class ConsoleNotifier:
    name = "console"
    comms = True

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleNotifier:
        del settings
        return cls()

    async def send(self, request: PageRequest) -> str | None:
        stream = self._stream or sys.stdout
        banner = {"trigger": "PAGE", "ack": "PAGE ACKNOWLEDGED", "close": "PAGE CLOSED", "update": "UPDATE"}[
            request.action
        ]
        to = f" to {', '.join(request.roles)}" if request.roles else ""
        stream.write(
            f"\n=== {banner} {request.priority} {request.incident_id}{to} "
            f"(key {request.idempotency_key}) ===\n{request.message}\n{request.description}\n"
        )
        stream.flush()
        return None

    async def aclose(self) -> None:
        return None
