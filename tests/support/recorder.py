"""A pager that keeps what it was asked to send."""

from __future__ import annotations

from service.notify.base import PageRequest


class Recorder:
    """Under a real pager's name (``opsgenie``) it stands in for that pager; ``comms``: does
    it carry [UPDATE] messages."""

    def __init__(self, name: str = "rec", *, comms: bool = True) -> None:
        self.name = name
        self.comms = comms
        self.sent: list[PageRequest] = []

    async def send(self, request: PageRequest) -> str | None:
        self.sent.append(request)
        return None

    async def aclose(self) -> None:
        return None
