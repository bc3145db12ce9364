"""`incidentd run --embedded` as a user runs it: a real process, Ctrl-C, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
from pathlib import Path

import aiosqlite
import httpx

from tests.support.pagerduty_api import FakePagerDuty, Reply
from tests.support.payloads import alert, body, webhook
from tests.support.service import free_port, spawn_run


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []

    async def read_until(self, stream: str, pattern: str, timeout: float = 60) -> re.Match[str]:
        source = self.proc.stdout if stream == "out" else self.proc.stderr
        lines = self.out if stream == "out" else self.err
        assert source is not None

        async def _read() -> re.Match[str]:
            for line in lines:
                if m := re.search(pattern, line):
                    return m
            while True:
                raw = await source.readline()
                if not raw:
                    raise AssertionError(f"process ended before {pattern!r}; stderr: {''.join(self.err)}")
                line = raw.decode()
                lines.append(line)
                if m := re.search(pattern, line):
                    return m

        return await asyncio.wait_for(_read(), timeout)

    async def rest_of_stderr(self, timeout: float = 60) -> list[str]:
        """Every line to the end of the stream (the process's end), read as it comes: an
        unread pipe that fills would stop the process."""
        stderr = self.proc.stderr
        assert stderr is not None

        async def _read() -> None:
            while raw := await stderr.readline():
                self.err.append(raw.decode())

        await asyncio.wait_for(_read(), timeout)
        return self.err


async def start(tmp: Path, kafka_port: int, http_port: int, **env: str) -> Proc:
    env = {
        "INCIDENTD_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "INCIDENTD_HTTP_PORT": str(http_port),
        **env,
    }
    proc = await spawn_run(tmp, env)
    return Proc(proc)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; only its parent could reap it.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_two_embedded_copies_side_by_side_page_and_stop_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    copies = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        kafka_port, http_port = free_port(), free_port()
        copies.append((await start(tmp_path / name, kafka_port, http_port), http_port))
    dirs = [tmp_path / "a", tmp_path / "b"]
    brokers: list[int] = []
    try:
        for proc, http_port in copies:
            await proc.read_until("out", r"incidentd is running \(embedded")
            await proc.read_until("out", rf"POST http://127\.0\.0\.1:{http_port}/api/v1/alerts/alertmanager")
            await proc.read_until("out", r"Watch: .*incidentd tail incidents\.events")
            m = await proc.read_until("err", r"embedded broker \(tansu\) listening on .*, pid (\d+)")
            brokers.append(int(m.group(1)))
        async with httpx.AsyncClient(timeout=30) as client:
            for proc, http_port in copies:
                resp = await client.post(
                    f"http://127.0.0.1:{http_port}/api/v1/alerts/alertmanager",
                    content=body(webhook(alert("ApiDown", namespace="aragora"))),
                )
                assert resp.status_code == 202
                await proc.read_until("out", r"=== PAGE P1 inc-")
                await proc.read_until("out", r"\[INCIDENT\] SEV-1: ApiDown is happening")
        for (proc, http_port), cwd in zip(copies, dirs, strict=True):
            assert (cwd / "var" / f"incidentd-{http_port}.db").exists()  # SQLite state under ./var
            proc.proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.proc.wait(), 60) == 0
            assert not any("Traceback" in line for line in proc.err)
        for pid in brokers:
            assert not alive(pid), f"embedded broker {pid} left running"
    finally:
        for proc, _ in copies:
            if proc.proc.returncode is None:
                proc.proc.kill()
                await proc.proc.wait()


async def test_embedded_refuses_a_port_in_use_with_a_clear_message(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await start(tmp_path, port, free_port())
        _, err = await asyncio.wait_for(proc.proc.communicate(), 60)
        assert proc.proc.returncode == 1
        assert f"127.0.0.1:{port} is already in use" in err.decode()
        assert "Traceback" not in err.decode()
    finally:
        server.close()


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _started(tmp: Path, **env: str) -> tuple[Proc, int, int, int]:
    kafka_port, http_port = free_port(), free_port()
    proc = await start(tmp, kafka_port, http_port, **env)
    await proc.read_until("out", r"incidentd is running \(embedded")
    m = await proc.read_until("err", r"embedded broker \(tansu\) listening on .*, pid (\d+)")
    return proc, int(m.group(1)), kafka_port, http_port


async def test_sigterm_with_a_page_in_hand_stops_everything_and_frees_the_ports(tmp_path: Path) -> None:
    proc, broker, kafka_port, http_port = await _started(tmp_path)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(
                f"http://127.0.0.1:{http_port}/api/v1/alerts/alertmanager",
                content=body(webhook(alert("ApiDown", namespace="aragora"))),
            )
        assert resp.status_code == 202
        proc.proc.send_signal(signal.SIGTERM)  # while the alert is being stored and paged
        assert await asyncio.wait_for(proc.proc.wait(), 60) == 0
        await proc.read_until("err", r"SIGTERM: shutting down")
        assert not alive(broker), "the embedded broker outlived the service"
        assert port_free(kafka_port) and port_free(http_port)
        leftovers = [line for line in proc.err if "Traceback" in line or "ERROR" in line]
        assert leftovers == []
        # Nothing it held is left leased: a replica (or the next start) takes it at once.
        assert await _leased(tmp_path / "var" / f"incidentd-{http_port}.db") == 0
    finally:
        if proc.proc.returncode is None:
            proc.proc.kill()
            await proc.proc.wait()


async def test_sigterm_after_kafka_died_stops_within_its_bound_and_gives_back_the_page_in_flight(
    tmp_path: Path,
) -> None:
    # A PagerDuty that holds its answer: the trigger is in flight, its job leased, at SIGTERM.
    hold = threading.Event()
    async with FakePagerDuty() as pagerduty:
        pagerduty.script(Reply(hold=hold))
        proc, broker, _, http_port = await _started(
            tmp_path,
            INCIDENTD_PAGERS="pagerduty",
            INCIDENTD_PAGERDUTY_API_URL=pagerduty.url,
            INCIDENTD_PAGERDUTY_ROUTING_KEY="R0UTING",
            INCIDENTD_SHUTDOWN_TIMEOUT_SECONDS="3",
            INCIDENTD_KAFKA_PUBLISH_TIMEOUT_SECONDS="1",
        )
        url = f"http://127.0.0.1:{http_port}/api/v1/alerts/alertmanager"
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                resp = await client.post(url, content=body(webhook(alert("ApiDown", namespace="aragora"))))
                assert resp.status_code == 202
                await pagerduty.wait_for(lambda: len(pagerduty.events) == 1, 30)
                os.kill(broker, signal.SIGKILL)
                # Its record stays in the producer, unsent, which aiokafka's stop would wait
                # out for its request timeout (40 s).
                resp = await client.post(url, content=body(webhook(alert("DiskFull", namespace="aragora"))))
                assert resp.status_code == 503
            proc.proc.send_signal(signal.SIGTERM)
            # Within its bound (3 s for the stop, a second more for the Kafka client), not 40 s.
            err = await proc.rest_of_stderr(timeout=20)
            assert await proc.proc.wait() == 0
            assert not [line for line in err if "Traceback" in line]
            # The stop went on past the consumers Kafka's loss broke, to the release of the
            # page job it was sending.
            assert [line for line in err if "shutdown: cannot stop consuming" in line]
            assert await _leased(tmp_path / "var" / f"incidentd-{http_port}.db") == 0
        finally:
            hold.set()
            if proc.proc.returncode is None:
                proc.proc.kill()
                await proc.proc.wait()


async def _leased(db: Path) -> int:
    leased = 0
    async with aiosqlite.connect(db) as conn:
        for table in ("page_jobs", "timers", "outbox", "remediations"):
            cursor = await conn.execute(f"SELECT count(*) FROM {table} WHERE lease_owner IS NOT NULL")
            leased += (await cursor.fetchone() or (0,))[0]
    return leased


async def test_a_killed_service_takes_its_embedded_broker_with_it(tmp_path: Path) -> None:
    proc, broker, kafka_port, _ = await _started(tmp_path)
    proc.proc.kill()
    await proc.proc.wait()
    for _ in range(100):  # the kernel signals the broker when its parent dies
        if not alive(broker):
            break
        await asyncio.sleep(0.05)
    assert not alive(broker), "the embedded broker outlived a killed service"
    assert port_free(kafka_port)
