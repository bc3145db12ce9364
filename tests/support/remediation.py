"""Remediation on a simulated clock, against the fake Kubernetes API over real HTTP.

The pipeline, the store (SQLite or PostgreSQL), the remediation worker and the page
worker are the service's own; only time is injected, so cooldowns, approval and
verification timeouts are tested without waiting.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from service.batch import DeadLetter, Record
from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.pipeline import Paging, build_pipeline
from service.remediate.approval import Approvals
from service.remediate.control import RemediationControl
from service.remediate.kube import Kube, from_url
from service.remediate.worker import RemediationWorker
from service.ruleset import RuleSet, load_rules
from service.store.store import Store
from tests.support.k8s_api import FakeKubernetes
from tests.support.payloads import body, webhook
from tests.support.recorder import Recorder
from tests.support.service import RULES, test_settings
from tests.support.time import T0

# Every action enforced on namespace "shop", so each test sees what a policy does;
# the tests that need other guardrails write their own.
ENFORCED = """
mode: enforce
cooldown: 30m
budget_per_hour: 10
page_roles: [DevOps]
allowlist:
  namespaces:
    shop: [api, web, "worker-*"]
  nodes: ["node-*"]
policies:
  - name: rollback-bad-deploy
    action: rollback
    mode: enforce
    matchers: ['alertname=~"BadDeploy|ApiDown"']
    preconditions: {changed_within: 30m}
    approval: {severities: [SEV-1], timeout: 10m}
    verify: {timeout: 10m}
  - name: scale-up
    action: scale
    mode: enforce
    matchers: ['alertname=~"Saturated.*"']
    params: {replicas: 5, max_replicas: 10}
    rate_limit: {max: 2, per: 1h}
  - name: restart-hung
    action: restart
    mode: enforce
    matchers: ['alertname="Hung"']
  - name: delete-stuck
    action: delete_pods
    mode: enforce
    matchers: ['alertname="Stuck"']
    params: {max_pods: 2}
  - name: drain
    action: drain_node
    mode: enforce
    matchers: ['alertname="NodeBad"']
    verify: {timeout: 5m, alert_resolved: false}
"""


def rules_dir_with(tmp: Path, remediation: str) -> Path:
    """A copy of the project's rules with this remediation.yaml."""
    folder = tmp / f"rules-{len(list(tmp.glob('rules-*')))}"
    shutil.copytree(RULES, folder)
    (folder / "remediation.yaml").write_text(remediation)
    return folder


def rules_with(tmp: Path, remediation: str) -> RuleSet:
    return load_rules(rules_dir_with(tmp, remediation))


def kube_for(api: FakeKubernetes | str) -> Kube:
    """The service's Kubernetes client, on the stand-in (or any URL), with its token."""
    if isinstance(api, str):
        return from_url(api, FakeKubernetes.TOKEN, timeout=5.0)
    return from_url(api.base_url, api.token, timeout=5.0)


def node_with_guarded_db(fake: FakeKubernetes) -> None:
    """node-1 runs db-0 (db-1 is on node-2) and a DaemonSet pod; a PodDisruptionBudget
    wants both db pods up, so db-0 cannot be evicted until a third db pod exists."""
    fake.add_node("node-1")
    fake.add_deployment("shop", "db", replicas=2, labels={"app": "db"})
    for name, node in (("db-0", "node-1"), ("db-1", "node-2")):
        fake.add_pod(
            "shop", name, labels={"app": "db"}, node=node, owner_kind="ReplicaSet", owner_name="db-rs"
        )
    fake.add_pod(
        "kube-system",
        "agent-0",
        labels={"app": "agent"},
        node="node-1",
        owner_kind="DaemonSet",
        owner_name="agent",
    )
    fake.add_pdb("shop", "db", selector={"app": "db"}, min_available=2)


def add_third_db_pod(fake: FakeKubernetes) -> None:
    fake.add_pod(
        "shop", "db-2", labels={"app": "db"}, node="node-2", owner_kind="ReplicaSet", owner_name="db-rs"
    )


class Scenario:
    """One incidentd process: its own store connection, workers and clock."""

    def __init__(
        self,
        store: Store,
        rules: RuleSet,
        kube: Kube | None,
        settings: Settings | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.store, self.rules = store, rules
        self.settings = settings or Settings(
            remediation_mode="enforce", remediation_verify_interval_seconds=30
        )
        self.clock = clock or ManualClock(T0)
        self.metrics = Metrics()
        self.pager = Recorder()
        self.dead: list[DeadLetter] = []
        events = EventFactory("events", "io.incidentd", "/test")

        async def sink(dead: list[DeadLetter]) -> None:
            self.dead.extend(dead)

        ctx = Context(store, rules, events, self.clock, self.metrics, self.settings)
        self.pipeline = build_pipeline(ctx, Paging([self.pager.name]), sink, self.settings.remediation_mode)
        self.worker = RemediationWorker(ctx, [self.pager.name], kube)
        self.pages = PageWorker(ctx, {self.pager.name: self.pager})
        self.approvals = Approvals(store, self.clock, self.worker.wake)
        self.control = RemediationControl(ctx, cluster=kube is not None, wake=self.worker.wake)
        self.offset = 0

    async def start(self) -> Scenario:
        await self.store.start()
        return self

    async def alert(self, *alerts: dict[str, Any], settle: bool = True) -> None:
        self.offset += 1
        await self.pipeline.process(
            [Record(body(webhook(*alerts)), "alerts", 0, self.offset)], self.clock.now()
        )
        if settle:
            await self.settle()

    async def settle(self) -> None:
        while await self.worker.run_once() or await self.pages.run_once():
            await self.pages.drain()

    async def after(self, **delta: float) -> None:
        self.clock.advance(timedelta(**delta))
        await self.settle()

    async def events(self, prefix: str = "remediation.") -> list[dict[str, Any]]:
        """Every stored event whose type starts with io.incidentd.<prefix>, oldest first."""
        found = [json.loads(r.value) for r in await self.store.outbox.unpublished(100_000)]
        return [e for e in found if e["type"].startswith(f"io.incidentd.{prefix}")]

    async def outcomes(self) -> list[tuple[str, str | None]]:
        """(event type suffix, guardrail) of every remediation event."""
        return [
            (e["type"].removeprefix("io.incidentd."), e["data"]["remediation"].get("guardrail"))
            for e in await self.events()
        ]


def enforced_settings(kafka: str, tmp: Path, fake: FakeKubernetes, **overrides: Any) -> Settings:
    """The real service's settings with remediation enforced against the API stand-in."""
    values: dict[str, Any] = {
        "rules_dir": rules_dir_with(tmp, ENFORCED),
        "kube_api_url": fake.base_url,
        "kube_token": fake.token,
        "remediation_mode": "enforce",
        "remediation_verify_interval_seconds": 0.2,
    }
    return test_settings(kafka, tmp, **(values | overrides))
