"""The CLI for people, as real processes: `incidentd incidents list|show|ack|resolve|assign`
against a running service with a bearer token, `--version`, `tail --bootstrap-servers`
against the real broker and against nothing, and the exit codes the README documents."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.support.kafka import produce
from tests.support.service import RunningService, free_port, run_service, test_settings

TOKEN = "cli-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningService]:
    settings = test_settings(kafka, tmp_path_factory.mktemp("cli"), webhook_token=TOKEN)
    async with run_service(settings) as running:
        yield running


async def incidentd(*args: str, **env: str) -> Run:
    """Runs the CLI as a person would; the service keeps serving in this event loop meanwhile."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENTD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def as_person(svc: RunningService, token: str = TOKEN) -> dict[str, str]:
    return {"INCIDENTD_URL": svc.url, "INCIDENTD_WEBHOOK_TOKEN": token}


async def declare(svc: RunningService, title: str, severity: str = "SEV-2") -> str:
    resp = await svc.client.post(
        f"{svc.url}/api/v1/incidents", json={"title": title, "severity": severity, "by": "dave"}, headers=AUTH
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["incident"]["id"])


async def incident(svc: RunningService, incident_id: str) -> dict[str, object]:
    resp = await svc.client.get(f"{svc.url}/api/v1/incidents/{incident_id}", headers=AUTH)
    return dict(resp.json()["incident"])


async def test_version_is_the_installed_package_version() -> None:
    run = await incidentd("--version")
    assert (run.code, run.out) == (0, f"incidentd {version('incidentd')}\n")


async def test_list_prints_a_table_and_the_apis_json(svc: RunningService) -> None:
    title = f"Checkout slow {uuid.uuid4().hex[:6]}"
    inc = await declare(svc, title)
    run = await incidentd("incidents", "list", "--status", "triggered", **as_person(svc))
    assert run.code == 0, run.err
    header, *rows = run.out.splitlines()
    assert header.split() == ["ID", "SEVERITY", "STATE", "PHASE", "OPENED", "ACK", "BY", "TITLE"]
    [row] = [r for r in rows if r.startswith(inc)]
    assert row.split()[1:4] == ["SEV-2", "triggered", "investigating"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row.split()[4])  # seconds are enough
    assert row.endswith(title)

    as_json = await incidentd("incidents", "list", "--json", "--severity", "SEV-2", **as_person(svc))
    assert as_json.code == 0, as_json.err
    assert inc in [i["id"] for i in json.loads(as_json.out)["incidents"]]


async def test_show_prints_the_incident_its_timeline_and_pages(svc: RunningService) -> None:
    inc = await declare(svc, "Search down", "SEV-1")
    run = await incidentd("incidents", "show", inc, **as_person(svc))
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"{inc}  SEV-1  triggered  phase investigating"
    assert "  title: Search down" in lines
    assert "timeline:" in lines and "pages:" in lines
    timeline = lines[lines.index("timeline:") + 1 : lines.index("pages:")]
    assert timeline and all(line.startswith("  20") for line in timeline), timeline

    as_json = await incidentd("incidents", "show", inc, "--json", **as_person(svc))
    assert json.loads(as_json.out)["incident"]["title"] == "Search down"


async def test_ack_assign_resolve_change_the_incident(svc: RunningService) -> None:
    inc = await declare(svc, "Payments failing")
    ack = await incidentd("incidents", "ack", inc, "--by", "alice", **as_person(svc))
    assert (ack.code, ack.out, ack.err) == (0, f"{inc} acknowledged by alice\n", "")
    assert (await incident(svc, inc))["acknowledged_by"] == "alice"

    assign = await incidentd("incidents", "assign", inc, "IC", "carol", "--by", "alice", **as_person(svc))
    assert (assign.code, assign.out) == (0, f"{inc} acknowledged by alice (Incident Commander: carol)\n")
    assert (await incident(svc, inc))["roles"] == {"Incident Commander": "carol"}

    resolve = await incidentd("incidents", "resolve", inc, "--note", "rolled back", **as_person(svc))
    assert (resolve.code, resolve.out) == (0, f"{inc} resolved (Incident Commander: carol)\n")
    assert (await incident(svc, inc))["status"] == "resolved"

    # Refused by the service: one line with its status and reason, exit 1.
    again = await incidentd("incidents", "ack", inc, **as_person(svc))
    assert again.code == 1 and again.out == ""
    [line] = again.err.splitlines()
    assert line.startswith(f"incidentd: 409 from POST /api/v1/incidents/{inc}/ack: ")


async def test_refusals_are_one_line_with_the_documented_exit_code(svc: RunningService) -> None:
    missing = await incidentd("incidents", "show", "inc-nope", **as_person(svc))
    assert (missing.code, missing.err) == (
        1,
        "incidentd: 404 from GET /api/v1/incidents/inc-nope: no incident inc-nope\n",
    )
    inc = await declare(svc, "Bad role")
    bad = await incidentd("incidents", "assign", inc, "CEO", "x", **as_person(svc))
    assert bad.code == 1 and "422 from POST" in bad.err and "invalid command; role: " in bad.err
    wrong_token = await incidentd("incidents", "list", **as_person(svc, token="nope"))
    assert wrong_token.code == 4
    assert wrong_token.err == (
        "incidentd: 401 from GET /api/v1/incidents: missing or wrong bearer token"
        " (set --token or INCIDENTD_WEBHOOK_TOKEN)\n"
    )
    usage = await incidentd("incidents", "list", "--limit", "many", **as_person(svc))
    assert usage.code == 2 and "Traceback" not in usage.err


async def test_token_from_a_file_and_url_from_a_flag(svc: RunningService, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    run = await incidentd("incidents", "list", "--url", svc.url, "--token-file", str(token_file))
    assert run.code == 0, run.err
    assert run.out.startswith("ID ") or run.out == "no incidents\n"


async def test_an_unreachable_service_is_exit_3_without_a_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = await incidentd("incidents", "list", "--url", url)
    assert run.code == 3
    [line] = run.err.splitlines()
    assert line.startswith(f"incidentd: cannot reach {url}: ")


async def test_tail_prints_the_records_of_the_broker_it_is_pointed_at(kafka: str) -> None:
    topic = f"cli-tail-{uuid.uuid4().hex[:8]}"
    await produce(kafka, topic, [b'{"n": 1}'])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENTD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "tail",
        topic,
        "--bootstrap-servers",
        kafka,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert re.fullmatch(rb'\[\d+@0\] \{"n": 1\}\n', line), line
    finally:
        proc.terminate()
        await proc.wait()


async def test_tail_with_no_broker_is_one_line_and_exit_3() -> None:
    port = free_port()
    run = await incidentd("tail", "--bootstrap-servers", f"127.0.0.1:{port}")
    assert (run.code, run.out) == (3, "")
    assert run.err == (
        f"incidentd: cannot connect to Kafka at 127.0.0.1:{port} (PLAINTEXT): "
        f"nothing answers at 127.0.0.1:{port} (Connection refused)\n"
    )


async def test_tail_gives_up_on_a_silent_listener_within_its_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        run = await incidentd("tail", "--bootstrap-servers", address, "--connect-timeout", "1")
    assert (run.code, run.err) == (
        3,
        f"incidentd: no Kafka broker answered at {address} (nothing answered within 1 s)\n",
    )
