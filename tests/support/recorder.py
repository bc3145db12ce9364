"""A pager that keeps what it was asked to send."""

from __future__ import annotations

from service.notify.base import PageRequest


class Recorder:
    comms = True

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.sent: list[PageRequest] = []

    async def send(self, request: PageRequest) -> str | None:
        self.sent.append(request)
        return None

    async def aclose(self) -> None:
        return None
