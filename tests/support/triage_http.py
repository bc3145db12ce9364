"""Loopback HTTP for triage tests: a health endpoint (ok, broken, hanging) and a Prometheus
``/api/v1/query`` answering the runbook's 5xx-rate query."""

from __future__ import annotations

import asyncio
import socket
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


class LocalHttp:
    """A health endpoint and a Prometheus ``/api/v1/query`` on one loopback uvicorn."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.error_rate = "0.25"
        self.release = asyncio.Event()

        async def health(_: Request) -> Response:
            return JSONResponse({"status": "ok", "db": "up"})

        async def broken(_: Request) -> Response:
            return PlainTextResponse("upstream connect error", status_code=503)

        async def hang(_: Request) -> Response:
            await self.release.wait()
            return PlainTextResponse("late")

        async def query(request: Request) -> Response:
            q = request.query_params.get("query", "")
            self.queries.append(q)
            if "bad(" in q:
                return JSONResponse(
                    {"status": "error", "errorType": "bad_data", "error": "parse error"}, status_code=400
                )
            result = [{"metric": {}, "value": [time.time(), self.error_rate]}]
            return JSONResponse({"status": "success", "data": {"resultType": "vector", "result": result}})

        routes = [
            Route("/api/health", health),
            Route("/broken", broken),
            Route("/hang", hang),
            Route("/api/v1/query", query),
        ]
        # Bound and listening before uvicorn starts: a request waits in the backlog, never refused.
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        port = self.socket.getsockname()[1]
        config = uvicorn.Config(Starlette(routes=routes), log_level="error")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> LocalHttp:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        self.server.should_exit = True
        await self._task
        self.socket.close()
