"""Triage probes one by one against real local servers (a health endpoint, a Prometheus query
API, the Kubernetes stand-in, the machine's PostgreSQL and Redis), the runner's bounds, and
triage.yaml's validation."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.batch import TimerIntent
from service.remediate.kube import Kube
from service.ruleset import RulesError, load_rules
from service.ruleset.triage import RUNBOOK_ERROR_RATE
from service.store.store import Effects, Store
from service.store.timers import TRIAGE
from service.triage.findings import Finding, summarize
from service.triage.probes.base import Probe
from service.triage.probes.health import HealthProbe
from service.triage.probes.pods import PodsProbe
from service.triage.probes.postgres import PostgresProbe
from service.triage.probes.prometheus import PrometheusProbe
from service.triage.probes.redis import RedisProbe
from service.triage.probes.registry import build_probes
from service.triage.probes.rollouts import RolloutsProbe
from service.triage.runner import run_probes
from service.triage.stage import TriageStage
from tests.support.k8s_api import FakeKubernetes
from tests.support.service import RULES, free_port
from tests.support.time import T0
from tests.support.triage_http import LocalHttp

PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def http() -> AsyncIterator[LocalHttp]:
    async with LocalHttp() as server:
        yield server


# -- probes one by one -----------------------------------------------------------------


async def test_health_probe_reports_status_latency_and_body(http: LocalHttp) -> None:
    ok = await HealthProbe().run({"probe": "health", "url": f"{http.url}/api/health"})
    assert ok.ok and ok.details["status"] == 200 and '"status":"ok"' in ok.details["body"]
    assert ok.summary.startswith("HTTP 200 in ") and ok.details["latency_ms"] >= 0

    bad = await HealthProbe().run({"probe": "health", "url": f"{http.url}/broken"})
    assert not bad.ok and bad.details["status"] == 503
    # The body is in the details; the summary, which goes to the channel, does not carry it.
    assert "upstream connect error" in bad.details["body"] and "upstream" not in bad.summary


async def test_health_url_credentials_never_show(http: LocalHttp) -> None:
    url = http.url.replace("http://", "http://user:s3cret@") + "/api/health"
    finding = await HealthProbe().run({"probe": "health", "url": url})
    assert "s3cret" not in json.dumps(finding.to_json())


async def test_prometheus_probe_asks_the_runbook_query(http: LocalHttp) -> None:
    finding = await PrometheusProbe().run(
        {"probe": "prometheus", "url": http.url, "query": RUNBOOK_ERROR_RATE}
    )
    assert http.queries == [RUNBOOK_ERROR_RATE]
    assert not finding.ok and finding.details["value"] == pytest.approx(0.25)
    assert finding.summary == "5xx rate 0.25/s"

    http.error_rate = "0"
    quiet = await PrometheusProbe().run({"probe": "prometheus", "url": http.url, "query": RUNBOOK_ERROR_RATE})
    assert quiet.ok


async def test_pods_probe_finds_the_crash_loop_and_its_log(k8s: FakeKubernetes, kube: Kube) -> None:
    rs = k8s.replicasets("shop")[-1]["metadata"]["name"]
    for name in ("api-a", "api-b"):
        k8s.add_pod("shop", name, labels={"app": "api"}, node="n1", owner_kind="ReplicaSet", owner_name=rs)
    k8s.set_pod_status(
        "shop", "api-b", restarts=7, waiting="CrashLoopBackOff", last_terminated="Error", ready=False
    )
    k8s.set_pod_log("shop", "api-b", "".join(f"line {i}\n" for i in range(100)) + "panic: db down\n")

    finding = await PodsProbe(kube).run(
        {"probe": "pods", "namespace": "shop", "selector": "app=api", "tail_lines": 5}
    )
    assert not finding.ok
    assert finding.summary == "1 of 2 pods failing: api-b CrashLoopBackOff restarts=7 last=Error"
    rows = {r["name"]: r for r in finding.details["pods"]}
    assert rows["api-a"]["failing"] is False and "log_tail" not in rows["api-a"]
    assert rows["api-b"]["restarts"] == 7 and rows["api-b"]["last_termination_reason"] == "Error"
    assert rows["api-b"]["log_tail"] == "line 96\nline 97\nline 98\nline 99\npanic: db down\n"
    # Read-only: nothing but GETs reached the API server.
    assert {r.method for r in k8s.requests} == {"GET"}


async def test_rollouts_probe_shows_revisions_and_times(k8s: FakeKubernetes, kube: Kube) -> None:
    finding = await RolloutsProbe(kube).run({"probe": "rollouts", "namespace": "shop"})
    assert finding.ok
    [latest, previous] = finding.details["deployments"]["api"]
    assert (latest["revision"], latest["images"]) == (2, ["api:v2"])
    assert (previous["revision"], previous["images"]) == (1, ["api:v1"])
    assert latest["created_at"] and finding.summary.startswith("api rev 2 ")


async def test_kubernetes_probes_without_a_cluster_fail_as_findings() -> None:
    probes = build_probes(None)
    [pods, rollouts] = await run_probes(
        probes, [{"probe": "pods", "namespace": "x"}, {"probe": "rollouts", "namespace": "x"}], 5
    )
    assert (pods.ok, pods.summary) == (False, "no Kubernetes API configured")
    assert (rollouts.ok, rollouts.summary) == (False, "no Kubernetes API configured")


async def test_postgres_probe_selects_one_and_counts_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TRIAGE_PG", PG_DSN)
    finding = await _run(PostgresProbe(), {"probe": "postgres", "secret_env": "TEST_TRIAGE_PG"})
    assert finding.ok and finding.details["select_1"] == 1 and finding.details["connections"] >= 1
    assert finding.target == "$TEST_TRIAGE_PG" and PG_DSN not in json.dumps(finding.to_json())


async def test_postgres_dsn_from_a_file_and_a_refused_login_keeps_it_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "dsn"
    secret.write_text(PG_DSN + "\n")
    ok = await _run(PostgresProbe(), {"probe": "postgres", "secret_file": str(secret)})
    assert ok.ok

    wrong = "postgresql://nobody:hunter2hunter2@127.0.0.1:5432/no_such_db"
    monkeypatch.setenv("TEST_TRIAGE_PG", wrong)
    [failed] = await run_probes(
        build_probes(None), [{"probe": "postgres", "secret_env": "TEST_TRIAGE_PG", "timeout": 5}], 10
    )
    assert not failed.ok and "hunter2hunter2" not in json.dumps(failed.to_json())

    # A driver error that quotes the DSN (asyncpg's own do not) is redacted all the same.
    async def quoting(dsn: str, **kw: Any) -> None:
        raise ValueError(f"invalid DSN: {dsn}")

    monkeypatch.setattr("asyncpg.connect", quoting)
    [quoted] = await run_probes(
        build_probes(None), [{"probe": "postgres", "secret_env": "TEST_TRIAGE_PG", "timeout": 5}], 10
    )
    assert "invalid DSN" in quoted.summary and "hunter2hunter2" not in json.dumps(quoted.to_json())

    [unset] = await run_probes(
        build_probes(None), [{"probe": "postgres", "secret_env": "TEST_TRIAGE_NONE"}], 5
    )
    assert (unset.ok, unset.summary) == (False, "environment variable TEST_TRIAGE_NONE is not set")


async def test_redis_probe_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TRIAGE_REDIS", REDIS_URL)
    finding = await _run(RedisProbe(), {"probe": "redis", "secret_env": "TEST_TRIAGE_REDIS"})
    assert finding.ok and finding.details["reply"] == "PONG", finding

    monkeypatch.setenv("TEST_TRIAGE_REDIS", f"redis://:pw-xyz@127.0.0.1:{free_port()}/0")
    [refused] = await run_probes(
        build_probes(None), [{"probe": "redis", "secret_env": "TEST_TRIAGE_REDIS"}], 5
    )
    assert not refused.ok and "cannot connect" in refused.summary and "pw-xyz" not in refused.summary


# -- the runner: bounded, and every failure a finding ---------------------------------------


class Hangs:
    name = "hangs"

    async def run(self, target: dict[str, Any]) -> Finding:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Raises:
    name = "raises"

    async def run(self, target: dict[str, Any]) -> Finding:
        raise RuntimeError("probe bug")


async def test_a_hanging_probe_times_out_and_an_erroring_one_fails_while_the_rest_report(
    http: LocalHttp,
) -> None:
    probes: dict[str, Probe] = {**build_probes(None), "hangs": Hangs(), "raises": Raises()}
    targets = [
        {"probe": "hangs", "timeout": 0.3},
        {"probe": "raises"},
        {"probe": "health", "url": f"{http.url}/api/health"},
        {"probe": "health", "url": f"{http.url}/hang", "timeout": 0.3},
        {"probe": "nope"},
    ]
    started = time.monotonic()
    hang, err, health, slow_http, unknown = await run_probes(probes, targets, deadline=10)
    assert time.monotonic() - started < 2  # bounded by the 0.3 s timeouts, run together
    assert (hang.ok, hang.summary, hang.details) == (False, "timed out after 0.3s", {"error": "timeout"})
    assert (err.ok, err.summary) == (False, "error: RuntimeError: probe bug")
    assert health.ok
    assert (slow_http.ok, slow_http.summary) == (False, "timed out after 0.3s")
    assert (unknown.ok, unknown.summary) == (False, "unknown probe 'nope'")
    assert summarize([hang, err, health, slow_http, unknown]).startswith(
        "Triage: 4 of 5 checks failed\n- FAIL hangs"
    )


async def test_the_overall_deadline_cuts_off_what_is_left() -> None:
    started = time.monotonic()
    [cut] = await run_probes({"hangs": Hangs()}, [{"probe": "hangs", "timeout": 60}], deadline=0.2)
    assert time.monotonic() - started < 1
    assert (cut.ok, cut.summary) == (False, "cut off at the triage deadline (0.2s)")


async def _run(probe: Probe, target: dict[str, Any]) -> Finding:
    return await asyncio.wait_for(probe.run(target), 10)


# -- rules --------------------------------------------------------------------------------


def test_shipped_triage_rules_render_the_runbook_checks_from_labels() -> None:
    rules = load_rules(RULES)
    labels = {"alertname": "ApiDown", "namespace": "aragora", "service": "aragora-api"}
    # An annotation naming another URL changes nothing: the shipped health URL is fixed.
    targets = rules.triage.targets(labels, {"health_url": "http://169.254.169.254/latest/meta-data"})
    by_probe = {t["probe"]: t for t in targets}
    assert list(by_probe) == ["health", "pods", "rollouts", "prometheus", "postgres", "redis"]
    assert by_probe["health"]["url"] == "https://api.aragora.ai/api/health"
    assert by_probe["pods"] == {
        "probe": "pods",
        "namespace": "aragora",
        "selector": "app=aragora-api",
        "tail_lines": 50,
        "timeout": 5.0,
    }
    assert by_probe["prometheus"]["query"] == RUNBOOK_ERROR_RATE
    assert by_probe["postgres"] == {"probe": "postgres", "secret_env": "TRIAGE_DATABASE_URL", "timeout": 5.0}
    # An alert without a service label runs no probes.
    assert rules.triage.targets({"alertname": "ApiDown", "namespace": "aragora"}, {}) == []


async def test_the_stage_plans_probes_and_a_timer_for_an_opening() -> None:
    rules = load_rules(RULES)
    stage = TriageStage(rules.triage)
    alert = {"labels": {"namespace": "aragora", "service": "web"}, "annotations": {}}
    plan = stage.plan([alert, alert, {"labels": {"namespace": "other"}}])
    assert [t["probe"] for t in plan] == ["health", "pods", "rollouts", "prometheus", "postgres", "redis"]


def _rules_with(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "rules"
    shutil.copytree(RULES, root)
    (root / "triage.yaml").write_text(text)
    return root


def test_triage_rules_problems_are_reported_with_file_and_line(tmp_path: Path) -> None:
    root = _rules_with(
        tmp_path,
        "timeout: 5s\n"
        "rules:\n"
        "  - name: a\n"
        "    matchers: ['service=~\".+\"']\n"
        "    probes:\n"
        "      - probe: health\n"  # no url
        "      - probe: postgres\n"
        "        secret_env: X\n"
        "        url: 'http://{{ labels.x }}'\n"
        "      - probe: ping\n"
        "      - probe: redis\n"  # no secret
        "      - probe: pods\n"
        "        namespace: '{{ labels.namespace '\n",
    )
    with pytest.raises(RulesError) as caught:
        load_rules(root)
    text = str(caught.value)
    path = str(root / "triage.yaml")
    assert f"{path}:6:9: rules[0].probes[0]: probe health needs url" in text, text
    assert f"{path}:10:9: rules[0].probes[2].probe: " in text, text
    assert f"{path}:11:9: rules[0].probes[3]: probe redis needs one of secret_env or secret_file" in text
    assert f"{path}:13:9: rules[0].probes[4].namespace: " in text, text


def test_a_rules_directory_without_triage_yaml_runs_no_probes(tmp_path: Path) -> None:
    root = tmp_path / "rules"
    shutil.copytree(RULES, root)
    (root / "triage.yaml").unlink()
    assert load_rules(root).triage.rules == []


def test_default_timeout_applies_unless_a_probe_sets_its_own() -> None:
    rules = load_rules(RULES)
    assert rules.triage.timeout == timedelta(seconds=5)


# -- the triage timers have a worker of their own -------------------------------------------


async def test_triage_timers_are_claimed_only_by_the_triage_worker(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await store.start(migrate=True)
    try:
        intents = [TimerIntent("inc-1", 1, TRIAGE, T0), TimerIntent("inc-1", 1, "reminder:1", T0)]
        assert await store.commit(Effects(timers=intents), T0)
        assert await store.timers.next_due(triage=True) == T0.timestamp()
        [other] = await store.timers.claim_due(T0, 10, 10)
        [triage] = await store.timers.claim_due(T0, 10, 10, triage=True)
        assert (other.name, triage.name) == ("reminder:1", TRIAGE)
        assert await store.timers.claim_due(T0, 10, 10, triage=True) == []
    finally:
        await store.close()
