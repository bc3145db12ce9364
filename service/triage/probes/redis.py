"""Redis ``PING`` over a raw RESP exchange (no client library for one command), the URL
(``redis://[:password@]host[:port][/db]``) read from the environment or a file."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

from service.triage.findings import Finding, one_line, redact
from service.triage.probes.base import ProbeFailed, Stopwatch, read_secret, secret_source


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class RedisProbe:
    name = "redis"

    async def run(self, target: dict[str, Any]) -> Finding:
        url = read_secret(target)
        parts = urlsplit(url)
        if parts.scheme not in ("redis", ""):
            raise ProbeFailed(f"unsupported scheme {parts.scheme!r} (redis:// only)")
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        password = unquote(parts.password) if parts.password else None
        clock = Stopwatch()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise ProbeFailed(redact(f"cannot connect: {exc}", [url, password or ""])) from None
        try:
            if password is not None:
                user = unquote(parts.username) if parts.username else None
                writer.write(_command("AUTH", *([user] if user else []), password))
                reply = await reader.readline()
                if not reply.startswith(b"+OK"):
                    raise ProbeFailed("AUTH refused")
            writer.write(_command("PING"))
            await writer.drain()
            reply = await reader.readline()
        finally:
            writer.close()
        answer = reply.decode(errors="replace").strip()
        ok = answer == "+PONG"
        details = {"reply": answer.lstrip("+-"), "latency_ms": clock.ms}
        summary = f"PING -> {answer.lstrip('+-') or '(nothing)'} in {clock.ms} ms"
        return Finding(
            self.name,
            ok,
            one_line(redact(summary, [password or ""])),
            secret_source(target),
            details,
            clock.ms,
        )
