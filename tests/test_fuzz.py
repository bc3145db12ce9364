"""Fuzzing every JSON endpoint over HTTP: whatever the body, the answer is never a 5xx.

Generated bodies: JSON values (recursive, with text that holds NUL, lone surrogates,
quotes, brackets and any code point; numbers Python will not convert; nesting up to
100,000 levels), documents shaped like webhooks and commands with any value in any
field, the same text as raw UTF-8 (so surrogates arrive as invalid bytes), and raw bytes.
Every error answer must be the one error shape, ``{"error": "..."}``.

How it runs: the tests are ``async`` and ``@given``-decorated. pytest-asyncio knows
Hypothesis: it wraps the inner test so that each generated example runs to completion
on the test's event loop, which here is the session loop (``pyproject.toml``) that the
module-scoped service fixture was started in, so the service serves while each example
awaits its answer. No threads, no second loop.

Hypothesis keeps nothing in the work tree: no example database (``database=None``), and
its caches (it reads constants out of the project's modules while pytest collects) go to
the system's temporary directory, set when this module is imported, before that.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "incidentd-hypothesis")

T = TypeVar("T", bound=Callable[..., Any])
TOKEN = "fuzz-token"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
WEBHOOK = "/api/v1/alerts/alertmanager"
REMEDIATION_ID = "rem-" + "a" * 20
INCIDENT_COMMANDS = ["ack", "resolve", "assign"]
REMEDIATION_PATHS = [
    "/api/v1/remediation/pause",
    "/api/v1/remediation/resume",
    f"/api/v1/remediation/actions/{REMEDIATION_ID}/approve",
    f"/api/v1/remediation/actions/{REMEDIATION_ID}/deny",
    "/api/v1/remediation/actions/rem-unknown/approve",
]

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@dataclass(frozen=True)
class Raw:
    """JSON text emitted as is: numbers that ``json.dumps`` cannot print."""

    text: str


@dataclass(frozen=True)
class Deep:
    """``depth`` arrays or objects around ``inner``, emitted without recursion."""

    depth: int
    kind: str
    inner: Any


# Any code point, NUL and lone surrogates included, and more often the troublemakers.
CHARS = st.one_of(
    st.integers(0, 0x10FFFF).map(chr),
    st.sampled_from(
        ["\x00", "\ud800", "\udfff", "\ud83d", "\ude00", '"', "\\", "[", "{", "\u2028", "\ufeff"]
    ),
)
# Plain text twice as often, so that many strings are fine and the body gets further.
PLAIN = st.text(st.integers(0x20, 0xD7FF).map(chr), max_size=30)
TEXT = st.one_of(PLAIN, PLAIN, st.text(CHARS, max_size=30))
NUMBERS = st.one_of(
    st.integers(),
    st.floats(),  # NaN and infinities come out as Python's NaN / Infinity literals
    st.builds(
        lambda sign, digits, exponent: Raw(f"{sign}{'7' * digits}{exponent}"),
        st.sampled_from(["", "-"]),
        st.integers(1, 6000),
        st.sampled_from(["", ".5", "e999999", "E-999999", ".0e+400"]),
    ),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)
# Around the service's limit (64), Python's recursion limit (1,000) and far beyond.
DEPTHS = st.one_of(st.sampled_from([63, 64, 65, 1000, 5000, 100_000]), st.integers(1, 3000))
DEEP = st.builds(Deep, DEPTHS, st.sampled_from(["[", "{"]), VALUES)
ANY = st.one_of(VALUES, DEEP)

# Plausible documents (each string may still hold any code point), of which one field may
# then be replaced by anything: a body that is wrong in one place gets as far as it can.
TIMES = st.sampled_from(
    [
        "2026-11-26T10:00:00Z",
        "2026-11-26T10:00:00",
        "2026-11-26T10:00:00+14:00",
        "0001-01-01T00:00:00Z",  # Go's zero time: no end
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-23:59",
    ]
)
LABEL_NAMES = st.one_of(
    st.sampled_from(["namespace", "severity", "team", "pod", "alertname", "_", "a" * 257]), TEXT
)
LABELS = st.dictionaries(LABEL_NAMES, TEXT, max_size=5).map(lambda labels: {"alertname": "Fuzz", **labels})
ALERTS = st.fixed_dictionaries(
    {"labels": LABELS},
    optional={
        "status": st.sampled_from(["firing", "resolved"]),
        "annotations": st.dictionaries(TEXT, TEXT, max_size=4),
        "startsAt": TIMES,
        "endsAt": TIMES,
        "generatorURL": TEXT,
        "fingerprint": st.one_of(st.just("0123456789abcdef"), TEXT),
    },
)
WEBHOOKS = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "status": st.sampled_from(["firing", "resolved"]),
        "alerts": st.lists(ALERTS, max_size=3),
    },
    optional={
        "groupKey": TEXT,
        "truncatedAlerts": NUMBERS,
        "receiver": TEXT,
        "groupLabels": LABELS,
        "commonLabels": LABELS,
        "commonAnnotations": st.dictionaries(TEXT, TEXT, max_size=3),
        "externalURL": TEXT,
    },
)
COMMANDS = st.fixed_dictionaries(
    {},
    optional={
        "command": st.sampled_from(["ack", "resolve", "assign", "approve", "deny"]),
        "by": TEXT,
        "note": TEXT,
        "role": st.sampled_from(["IC", "Communications", "Technical Lead"]),
        "who": TEXT,
        "reason": TEXT,
        "target": st.one_of(st.just("deployment/shop/api"), TEXT),
        "remediation_id": st.one_of(st.just(REMEDIATION_ID), TEXT),
    },
)


def places(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``doc``: where a value can be replaced."""
    found: list[tuple[Any, Any]] = []
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in children:
        found.append((doc, key))
        found.extend(places(value))
    return found


@st.composite
def one_field_replaced(draw: st.DrawFn, docs: st.SearchStrategy[Any]) -> Any:
    doc = draw(docs)
    where = places(doc)
    replace: bool = draw(st.booleans())
    if where and replace:
        container, key = draw(st.sampled_from(where))
        container[key] = draw(ANY)
    return doc


def dump(value: Any, ascii_only: bool) -> str:
    """JSON text of ``value``. ``ascii_only=False`` leaves surrogates unescaped, so that
    encoding the text (``surrogatepass``) gives bytes that are not UTF-8."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Deep):
        inner = dump(value.inner, ascii_only)
        if value.kind == "[":
            return "[" * value.depth + inner + "]" * value.depth
        return '{"a":' * value.depth + inner + "}" * value.depth
    if isinstance(value, list):
        return "[" + ",".join(dump(v, ascii_only) for v in value) + "]"
    if isinstance(value, dict):
        items = (json.dumps(k, ensure_ascii=ascii_only) + ":" + dump(v, ascii_only) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    return json.dumps(value, ensure_ascii=ascii_only)


# Bodies every run tries whatever Hypothesis draws: one of each kind of trouble.
KNOWN_BAD = [
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"by": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b'{"by": ' + b"7" * 5000 + b"}",
    b'{"by": "\\ud800", "note": "\\udfff"}',
    b'{"by": "\xed\xa0\x80"}',
    b'{"by": "a\\u0000b", "command": "\\u0000"}',
    b"\xff\xfe{\x00}\x00",
]


def known_bad(**others: list[Any]) -> Callable[[T], T]:
    """``KNOWN_BAD`` as explicit examples; each other argument takes its ``others`` in turn."""

    def add(test: T) -> T:
        for i, raw in enumerate(KNOWN_BAD):
            test = example(raw=raw, **{name: values[i % len(values)] for name, values in others.items()})(
                test
            )
        return test

    return add


def bodies(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    as_json = st.builds(
        lambda value, ascii_only: dump(value, ascii_only).encode("utf-8", "surrogatepass"),
        st.one_of(one_field_replaced(shaped), one_field_replaced(shaped), ANY),
        # Mostly escaped text (surrogates as \\ud800); else raw, where they are bytes that are not UTF-8.
        st.sampled_from([True, True, True, False]),
    )
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=2048))


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    settings = test_settings(kafka, tmp_path_factory.mktemp("fuzz"), webhook_token=TOKEN)
    async with run_service(settings) as running:
        yield running


@pytest.fixture(scope="module")
async def incident(svc: RunningService) -> str:
    """An incident the command bodies can act on, so that accepted ones reach the store."""
    assert (
        await svc.post_webhook(body(webhook(alert("FuzzTarget", namespace="fuzz"))), **AUTH)
    ).status_code == 202

    def opened() -> list[dict[str, Any]]:
        return [
            e
            for e in svc.events.of_type("incident.opened")
            if e["data"]["group_labels"].get("alertname") == "FuzzTarget"
        ]

    await svc.events.wait_for(lambda _: bool(opened()))
    return str(opened()[0]["data"]["id"])


async def answer_is_not_5xx(svc: RunningService, path: str, raw: bytes) -> None:
    resp = await svc.client.post(f"{svc.url}{path}", content=raw, headers=AUTH)
    if path == WEBHOOK and resp.status_code == 503:
        # The one 5xx the webhook may give: Kafka did not acknowledge (the local broker will).
        assert resp.json()["error"].startswith("Kafka did not acknowledge"), resp.text
        return
    assert resp.status_code < 500, (resp.status_code, resp.text[:500], raw[:500])
    answer = resp.json()
    if resp.status_code >= 400:
        assert isinstance(answer["error"], str), answer


@FUZZ
@known_bad()
@example(raw=b'{"version": "4", "status": "firing", "alerts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
@given(raw=bodies(WEBHOOKS))
async def test_webhook_never_answers_5xx(svc: RunningService, raw: bytes) -> None:
    await answer_is_not_5xx(svc, WEBHOOK, raw)


@FUZZ
@known_bad(command=INCIDENT_COMMANDS, known=[True, False])
@given(command=st.sampled_from(INCIDENT_COMMANDS), known=st.booleans(), raw=bodies(COMMANDS))
async def test_incident_commands_never_answer_5xx(
    svc: RunningService, incident: str, command: str, known: bool, raw: bytes
) -> None:
    inc = incident if known else "inc-unknown"
    await answer_is_not_5xx(svc, f"/api/v1/incidents/{inc}/{command}", raw)


@FUZZ
@known_bad(path=REMEDIATION_PATHS)
@given(path=st.sampled_from(REMEDIATION_PATHS), raw=bodies(COMMANDS))
async def test_remediation_commands_never_answer_5xx(svc: RunningService, path: str, raw: bytes) -> None:
    await answer_is_not_5xx(svc, path, raw)
