"""What every stand-in API server shares: a loopback ThreadingHTTPServer of its own,
its lifecycle, and a way for tests to await what it has seen instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted answer of a JSON stand-in (Jira, Statuspage)."""

    status: int
    body: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    commit: bool = False  # do the request's work, then answer with this reply anyway


class LoopbackServer:
    """Subclasses give ``_handler()``; handler threads call ``notify_waiters()`` after each event."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.held: set[threading.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with self.lock:
            holds = list(self.held)
        for hold in holds:  # never leave a handler thread parked on a test's event
            hold.set()
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)
            self._server.server_close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    @property
    def base_url(self) -> str:
        assert self._server is not None, f"use `async with {type(self).__name__}() as fake`"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked on every request and answer."""
        changed = self._changed
        assert changed is not None

        async def _wait() -> None:
            while True:
                changed.clear()
                if predicate():
                    return
                await changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    def notify_waiters(self) -> None:
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(changed.set)


def read_json(handler: BaseHTTPRequestHandler) -> Any:
    """The request's JSON body ({} when empty or not JSON: the stand-in judges it)."""
    raw = handler.rfile.read(int(handler.headers.get("content-length", "0")))
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def send_json(
    handler: BaseHTTPRequestHandler, status: int, answer: Any, headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Answer with JSON; a client that hung up (a timeout under test) is not an error."""
    data = json.dumps(answer).encode()
    try:
        handler.send_response(status)
        for k, v in headers:
            handler.send_header(k, v)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
