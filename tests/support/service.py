"""Runs the real service (runtime + uvicorn) inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.clock import Clock
from service.config import Settings
from service.http.app import create_app
from service.ingest.kafka_security import client_security
from service.notify.base import Notifier
from service.ruleset import load_rules
from service.runtime import Runtime
from tests.support.kafka import EventLog

RULES = Path(__file__).resolve().parents[2] / "rules"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listen(port: int) -> socket.socket:
    """Binds the test's port now; another worker may have taken it since free_port() chose it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def test_settings(bootstrap: str, tmp: Path, **overrides: Any) -> Settings:
    """Settings with topics and group of their own, so tests sharing a broker never meet."""
    uid = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_alerts_topic": f"alerts-{uid}",
        "kafka_events_topic": f"incidents.events-{uid}",
        "kafka_dlq_topic": f"alerts.dlq-{uid}",
        "kafka_commands_topic": f"incidents.commands-{uid}",
        "kafka_group_id": f"incidentd-{uid}",
        "database_url": f"sqlite+aiosqlite:///{tmp / f'state-{uid}.db'}",
        "rules_dir": RULES,
        "http_port": free_port(),
        "pagers": ["console"],
        "page_backoff_initial_seconds": 0.05,
        "page_backoff_max_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test


@dataclass
class RunningService:
    runtime: Runtime
    url: str
    events: EventLog
    client: httpx.AsyncClient

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    async def post_webhook(self, body: bytes, **headers: str) -> httpx.Response:
        return await self.client.post(
            f"{self.url}/api/v1/alerts/alertmanager",
            content=body,
            headers={"content-type": "application/json", **headers},
        )


@contextlib.asynccontextmanager
async def run_service(
    settings: Settings,
    *,
    clock: Clock | None = None,
    notifiers: dict[str, Notifier] | None = None,
) -> AsyncIterator[RunningService]:
    listener = _listen(settings.http_port)
    settings = settings.model_copy(update={"http_port": listener.getsockname()[1]})
    runtime = await Runtime.create(settings, load_rules(settings.rules_dir), clock=clock, notifiers=notifiers)
    app = create_app(runtime.http_services(), runtime.http_settings(), lifespan=runtime.lifespan)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.http_port, log_level="warning")
    )
    # The test runner owns Ctrl-C, not the service under test.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.02)
    security = client_security(settings)
    events = await EventLog(settings.kafka_bootstrap_servers, settings.kafka_events_topic, security).start()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            yield RunningService(runtime, f"http://127.0.0.1:{settings.http_port}", events, client)
    finally:
        await events.stop()
        server.should_exit = True
        await task
        listener.close()


async def spawn_run(
    cwd: Path, env: dict[str, str], *, embedded: bool = True, unset: tuple[str, ...] = ()
) -> asyncio.subprocess.Process:
    """``incidentd run`` as a real process (``python -m service``) in ``cwd``, with ``env``
    over this process's environment (less ``unset``) and the shipped rules, its output piped."""
    inherited = {k: v for k, v in os.environ.items() if k not in unset}
    environ = {**inherited, "INCIDENTD_RULES_DIR": str(RULES), "INCIDENTD_LOG_LEVEL": "INFO", **env}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "run",
        *(["--embedded"] if embedded else []),
        cwd=cwd,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
