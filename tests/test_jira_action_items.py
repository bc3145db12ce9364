"""Action items added after the Jira ticket was filed (at the resolve): each a comment on the
ticket, once, through httpx against the local stand-in and through the page worker; the
running service's flow is in test_jira.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest

from service.clock import ManualClock
from service.config import Settings
from service.context import Context
from service.emit.cloudevents import EventFactory
from service.escalate.commands import AddActionItem, CommandHandler, Resolve
from service.escalate.decisions import Decisions
from service.notify.base import PageError, PageRequest, idempotency_key
from service.notify.worker import PageWorker
from service.observability.metrics import Metrics
from service.ruleset import RuleSet
from service.store.store import Effects, Store
from tests.support.fake_http import Reply
from tests.support.incidents import make_incident
from tests.support.jira_api import FakeJira
from tests.support.time import T0
from tests.test_jira import jira, request, tick


@pytest.fixture
async def fake() -> AsyncIterator[FakeJira]:
    async with FakeJira() as server:
        yield server


ITEM = {"item": "Alert on queue depth", "owner": "alice", "due": "2026-12-09"}
ITEM_LINE = "- Alert on queue depth (owner: alice, due: 2026-12-09)"


def item_request(n: int = 1, items: list[dict[str, Any]] | None = None) -> PageRequest:
    """The [UPDATE] job's request for the n-th action item of inc-j's first opening."""
    return request("update", target=f"action_item:{n}", action_items=items if items is not None else [ITEM])


async def test_an_item_added_after_the_ticket_is_one_comment_despite_a_503(fake: FakeJira) -> None:
    j = jira(fake)
    try:
        assert await j.send(request(action_items=[])) == "OPS-1"  # filed at the resolve
        fake.script("POST", Reply(503, {"errorMessages": ["Service Unavailable"]}))
        with pytest.raises(PageError) as info:
            await j.send(item_request())
        assert info.value.retryable and fake.comment_bodies("OPS-1") == []
        assert await j.send(item_request()) == "OPS-1"  # the retry
        [comment] = fake.comment_bodies("OPS-1")
        assert ITEM_LINE in comment.splitlines()
        assert comment.endswith(f"({idempotency_key('inc-j', 1, 'action_item:1')})")
        assert await j.send(item_request()) == "OPS-1"  # sent again: still one comment
        assert len(fake.comment_bodies("OPS-1")) == 1 and len(fake.issues) == 1
        # The next item is a comment of its own.
        second = {"item": "Write a runbook"}
        assert await j.send(item_request(2, [ITEM, second])) == "OPS-1"
        assert fake.comment_bodies("OPS-1")[1].splitlines()[1] == "- Write a runbook"
    finally:
        await j.aclose()


async def test_a_comment_whose_answer_was_lost_is_not_posted_again(fake: FakeJira) -> None:
    j = jira(fake)
    try:
        await j.send(request(action_items=[]))
        fake.script("POST", Reply(504, {"errorMessages": ["gateway timeout"]}, commit=True))
        with pytest.raises(PageError) as info:
            await j.send(item_request())
        assert info.value.retryable and len(fake.comment_bodies("OPS-1")) == 1  # it did land
        assert await j.send(item_request()) == "OPS-1"
        assert len(fake.comment_bodies("OPS-1")) == 1
        assert len([r for r in fake.requests if r.method == "POST" and r.path.endswith("/comment")]) == 1
    finally:
        await j.aclose()


async def test_no_ticket_yet_waits_and_an_item_the_ticket_lists_gets_no_comment(fake: FakeJira) -> None:
    j = jira(fake, create_retry=30)
    try:
        with pytest.raises(PageError) as info:
            await j.send(item_request())  # the ticket's create is still retrying
        assert info.value.retryable and info.value.retry_after == 30
        assert [r.method for r in fake.requests] == ["GET"]  # a search, nothing posted
        # Filed after the item was added: the description lists it already.
        await j.send(request(action_items=[ITEM]))
        assert await j.send(item_request()) == "OPS-1"
        assert fake.comment_bodies("OPS-1") == []
    finally:
        await j.aclose()


async def test_an_item_added_to_a_resolved_incident_reaches_the_ticket_once_through_the_worker(
    store: Store, rules: RuleSet, fake: FakeJira
) -> None:
    clock, j = ManualClock(T0), jira(fake)
    settings = Settings(page_backoff_initial_seconds=10, page_backoff_max_seconds=60)
    ctx = Context(store, rules, EventFactory("events", "io.incidentd", "/test"), clock, Metrics(), settings)
    w, commands = PageWorker(ctx, {"jira": j}), CommandHandler(ctx, ["jira"], [])
    inc = make_incident("inc-a")
    await store.commit(Effects(incidents=[inc]), T0)
    try:
        # Added while open: the ticket filed at the resolve lists it; no job of its own.
        await commands.apply("inc-a", AddActionItem(item="Fix the probe", by="carol"), "api")
        await commands.apply("inc-a", Resolve(by="carol"), "api")
        await tick(w)
        [issue] = fake.issues
        assert "- Fix the probe" in issue["fields"]["description"].splitlines()
        # Added after: one job for Jira; its first comment attempt fails, the retry lands.
        fake.script("POST", Reply(503, {"errorMessages": ["Service Unavailable"]}))
        item = AddActionItem(item="Alert on queue depth", owner="alice", due=date(2026, 12, 9), by="carol")
        await commands.apply("inc-a", item, "api")
        await commands.apply("inc-a", item, "api")  # a repeat changes nothing
        await tick(w)
        jobs = [(p.action, p.target, p.status) for p in await store.pages.for_incident("inc-a")]
        assert jobs[-1] == ("update", "action_item:2", "pending")
        assert [t for _, t, _ in jobs] == ["first", "action_item:2"]  # the close, then the item
        clock.advance(timedelta(seconds=13))
        assert await tick(w) == 1
        assert [p.status for p in await store.pages.for_incident("inc-a")][-1] == "sent"
        [comment] = fake.comment_bodies(issue["key"])
        assert ITEM_LINE in comment.splitlines()
        events = [json.loads(r.value) for r in await store.outbox.unpublished(100)]
        pages = [e["data"]["page"] for e in events if "page" in e["data"]]
        assert [(p["action"], p["target"], p["retrying"]) for p in pages] == [
            ("close", "first", False),
            ("update", "action_item:2", True),
            ("update", "action_item:2", False),
        ]
        assert pages[-1]["reference"] == issue["key"]
    finally:
        await j.aclose()


def test_only_an_item_added_to_a_resolved_incident_asks_for_the_ticket(rules: RuleSet) -> None:
    decisions = Decisions(rules)
    inc = make_incident("inc-d")
    added = decisions.decide(inc, AddActionItem(item="Before the resolve", by="carol"), T0)
    assert added.pages == [] and added.only is None  # the ticket, filed at the resolve, lists it
    decisions.decide(inc, Resolve(by="carol"), T0)
    after = decisions.decide(inc, AddActionItem(item="Canary deploys", owner="dave", by="carol"), T0)
    [page] = after.pages
    assert (page.action, page.target, page.opening, page.by) == ("update", "action_item:2", 1, "carol")
    assert page.message == "[ACTION ITEM] SEV-1: ApiDown\n- Canary deploys"
    assert after.only == ("jira",) and not after.comms_only
