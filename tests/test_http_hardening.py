"""Bad input gets a clear 4xx in the one error shape, never a 500 (issue #9, item 6).

Against the real service over HTTP and the real broker: nesting depth on the webhook
and on every command endpoint, the limits on one alert, NUL characters, a command body
that names another command, the router's own 404/405, and the Kafka paths (a deeply
nested record is dead-lettered with its reason, on ``alerts`` and on
``incidents.commands``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.ingest.payloads import (
    MAX_ANNOTATION_VALUE_CHARS,
    MAX_ANNOTATIONS,
    MAX_JSON_DEPTH,
    MAX_LABEL_VALUE_CHARS,
    MAX_LABELS,
    MAX_NAME_CHARS,
)
from tests.support.kafka import TopicReader, produce
from tests.support.payloads import alert, body, webhook
from tests.support.service import RunningService, run_service, test_settings

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
REMEDIATION_ID = "rem-" + "0" * 20
# Every command endpoint (each decodes a JSON body; the ids need not exist).
COMMAND_PATHS = [
    "/api/v1/incidents/inc-none/ack",
    "/api/v1/incidents/inc-none/resolve",
    "/api/v1/incidents/inc-none/assign",
    "/api/v1/remediation/pause",
    "/api/v1/remediation/resume",
    f"/api/v1/remediation/actions/{REMEDIATION_ID}/approve",
    f"/api/v1/remediation/actions/{REMEDIATION_ID}/deny",
]
DEEP = 100_000
# Deep enough to exhaust Python's recursion limit, small enough for the 64 KiB command limit.
COMMAND_DEEP = 10_000


@pytest.fixture(scope="module")
async def svc(kafka: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    settings = test_settings(kafka, tmp_path_factory.mktemp("hardening"), webhook_token=TOKEN)
    async with run_service(settings) as running:
        yield running


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def nested_in_webhook(depth: int) -> bytes:
    """A valid webhook whose ignored field ``nested`` makes the body ``depth`` deep."""
    doc = body(webhook(alert("DeepButFine", namespace="hardening")))
    # The body is one level; the extra field brings the rest.
    extra = b'{"a":' * (depth - 2) + b"{}" + b"}" * (depth - 2)
    return doc[:1] + b'"nested":' + extra + b"," + doc[1:]


def nested_in_alert(depth: int) -> bytes:
    """A valid webhook whose alert's ignored field ``nested`` makes the body ``depth`` deep."""
    a = alert("DeepButFine", namespace="hardening")
    # Body, alerts, alert: three levels; the extra field brings the rest.
    a["nested"] = json.loads(b'{"a":' * (depth - 4) + b"{}" + b"}" * (depth - 4))
    return body(webhook(a))


def nested_in_common_annotations(depth: int) -> bytes:
    """A valid webhook whose commonAnnotations (unused) make the body ``depth`` deep."""
    doc = webhook(alert("DeepButFine", namespace="hardening"))
    # Body, commonAnnotations: two levels.
    doc["commonAnnotations"] = {"a": json.loads(b"[" * (depth - 2) + b"]" * (depth - 2))}
    return body(doc)


def assert_error(resp: httpx.Response, status: int, needle: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    answer: dict[str, Any] = resp.json()
    assert isinstance(answer["error"], str)
    assert needle in answer["error"] + json.dumps(answer.get("details", [])), answer
    return answer


async def open_incident(svc: RunningService, name: str) -> str:
    assert (
        await svc.post_webhook(body(webhook(alert(name, namespace="hardening"))), **AUTH)
    ).status_code == 202

    def opened() -> list[dict[str, Any]]:
        return [
            e for e in svc.events.of_type("incident.opened") if e["data"]["group_labels"]["alertname"] == name
        ]

    await svc.events.wait_for(lambda _: bool(opened()))
    return str(opened()[0]["data"]["id"])


# 1. Nesting depth


@pytest.mark.parametrize(
    "raw",
    [
        arrays(DEEP),
        objects(DEEP),
        b'{"version": "4", "status": "firing", "alerts": ' + arrays(DEEP) + b"}",
        nested_in_webhook(MAX_JSON_DEPTH + 1),
        nested_in_alert(MAX_JSON_DEPTH + 1),
        nested_in_common_annotations(MAX_JSON_DEPTH + 1),
    ],
    ids=["arrays", "objects", "alerts", "one-over", "one-over-in-an-alert", "one-over-in-annotations"],
)
async def test_deeply_nested_webhook_is_400(svc: RunningService, raw: bytes) -> None:
    assert_error(await svc.post_webhook(raw, **AUTH), 400, f"nested deeper than {MAX_JSON_DEPTH} levels")


@pytest.mark.parametrize("nested", [nested_in_webhook, nested_in_alert, nested_in_common_annotations])
async def test_nesting_at_the_limit_is_accepted(svc: RunningService, nested: Callable[[int], bytes]) -> None:
    raw = nested(MAX_JSON_DEPTH)
    assert json.loads(raw)  # a sanity check of the helper: valid JSON
    resp = await svc.post_webhook(raw, **AUTH)
    assert resp.status_code == 202, resp.text


async def test_brackets_inside_strings_do_not_count(svc: RunningService) -> None:
    a = alert("Brackets", namespace="hardening")
    # Escaped quotes and backslashes next to the brackets: the depth check must still see
    # where each string ends.
    a["annotations"] = {"a": "[" * 1000, "b": '\\"' + "{" * 1000, "c": "x\\", "d": "]" * 1000 + "\\"}
    resp = await svc.post_webhook(body(webhook(a)), **AUTH)
    assert resp.status_code == 202, resp.text


def test_nested_in_webhook_has_the_depth_it_says() -> None:
    def depth(value: Any) -> int:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        return 1 + max((depth(c) for c in children), default=0) if isinstance(value, dict | list) else 0

    for nested in (nested_in_webhook, nested_in_alert, nested_in_common_annotations):
        assert depth(json.loads(nested(MAX_JSON_DEPTH))) == MAX_JSON_DEPTH
        assert depth(json.loads(nested(MAX_JSON_DEPTH + 1))) == MAX_JSON_DEPTH + 1


@pytest.mark.parametrize("path", COMMAND_PATHS)
@pytest.mark.parametrize("raw", [arrays(COMMAND_DEEP), objects(COMMAND_DEEP)], ids=["arrays", "objects"])
async def test_deeply_nested_command_body_is_400(svc: RunningService, path: str, raw: bytes) -> None:
    resp = await svc.client.post(f"{svc.url}{path}", content=raw, headers=AUTH)
    assert_error(resp, 400, f"nested deeper than {MAX_JSON_DEPTH} levels")


@pytest.mark.parametrize("path", COMMAND_PATHS)
async def test_command_body_with_nul_or_lone_surrogate_is_422(svc: RunningService, path: str) -> None:
    for raw, needle in [(b'{"by": "a\\u0000b"}', "NUL"), (b'{"by": "a\\ud800"}', "lone surrogate")]:
        resp = await svc.client.post(f"{svc.url}{path}", content=raw, headers=AUTH)
        answer = assert_error(resp, 422, needle)
        assert answer["details"][0]["loc"] == "by"


# 2. Limits on one alert


def with_alert(**changes: Any) -> bytes:
    a = alert("Limits", namespace="hardening")
    for key, value in changes.items():
        a[key] = {**a[key], **value}
    return body(webhook(a))


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (with_alert(labels={f"l{i}": "v" for i in range(MAX_LABELS)}), f"at most {MAX_LABELS} labels"),
        (
            with_alert(annotations={f"a{i}": "v" for i in range(MAX_ANNOTATIONS + 1)}),
            f"at most {MAX_ANNOTATIONS} annotations",
        ),
        (with_alert(labels={"n" * (MAX_NAME_CHARS + 1): "v"}), f"at most {MAX_NAME_CHARS} characters"),
        (with_alert(annotations={"n" * (MAX_NAME_CHARS + 1): "v"}), f"at most {MAX_NAME_CHARS} characters"),
        (
            with_alert(labels={"pod": "v" * (MAX_LABEL_VALUE_CHARS + 1)}),
            f"at most {MAX_LABEL_VALUE_CHARS} characters",
        ),
        (
            with_alert(annotations={"description": "v" * (MAX_ANNOTATION_VALUE_CHARS + 1)}),
            f"at most {MAX_ANNOTATION_VALUE_CHARS} characters",
        ),
    ],
    ids=["labels", "annotations", "label-name", "annotation-name", "label-value", "annotation-value"],
)
async def test_alert_over_a_limit_is_422_naming_it(svc: RunningService, raw: bytes, needle: str) -> None:
    assert_error(await svc.post_webhook(raw, **AUTH), 422, needle)


async def test_alert_at_every_limit_is_accepted(svc: RunningService) -> None:
    raw = with_alert(
        labels={
            **{f"l{i}": "v" for i in range(MAX_LABELS - 3)},  # alertname, namespace and the long one
            "n" * MAX_NAME_CHARS: "v" * MAX_LABEL_VALUE_CHARS,
        },
        annotations={f"a{i}": "v" * (MAX_ANNOTATION_VALUE_CHARS if i == 0 else 1) for i in range(99)},
    )
    assert len(json.loads(raw)["alerts"][0]["labels"]) == MAX_LABELS
    assert len(json.loads(raw)["alerts"][0]["annotations"]) == MAX_ANNOTATIONS  # and "summary"
    resp = await svc.post_webhook(raw, **AUTH)
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"labels": {"pod": "a\x00b"}}, "NUL"),
        ({"labels": {"a\x00b": "v"}}, "labels.a\x00b.[key]"),  # not a label name at all
        ({"annotations": {"a\x00b": "v"}}, "NUL"),
        ({"annotations": {"summary": "a\x00b"}}, "NUL"),
        ({"generatorURL": "http://x/\x00"}, "NUL"),
    ],
    ids=["label-value", "label-name", "annotation-name", "annotation-value", "generator-url"],
)
async def test_nul_characters_are_422(svc: RunningService, changes: dict[str, Any], needle: str) -> None:
    a = alert("Nul", namespace="hardening")
    for key, value in changes.items():
        a[key] = {**a[key], **value} if isinstance(value, dict) else value
    assert_error(await svc.post_webhook(body(webhook(a)), **AUTH), 422, needle)


@pytest.mark.parametrize(
    ("raw", "status", "needle"),
    [
        # Python refuses to convert integers over 4,300 digits: that used to be a 500.
        (body(webhook(alert("Big")))[:-1] + b',"truncatedAlerts":' + b"9" * 5000 + b"}", 422, "4300 digits"),
        # A lone surrogate outside labels and annotations, which the webhook forwards to Kafka.
        (body({**webhook(alert("Surrogate")), "receiver": "r\ud800"}), 422, "receiver: not valid Unicode"),
        # UTF-8 bytes that encode a surrogate are not UTF-8.
        (body(webhook(alert("Cesu")))[:-1] + b',"receiver":"\xed\xa0\x80"}', 400, "not valid JSON"),
    ],
    ids=["huge-integer", "lone-surrogate", "encoded-surrogate"],
)
async def test_json_python_cannot_carry_is_4xx(
    svc: RunningService, raw: bytes, status: int, needle: str
) -> None:
    assert_error(await svc.post_webhook(raw, **AUTH), status, needle)


# 3. The command a body names


@pytest.mark.parametrize(
    ("endpoint", "sent"),
    [("ack", "resolve"), ("ack", "frobnicate"), ("resolve", "ack"), ("assign", "ack"), ("ack", 1)],
)
async def test_body_naming_another_command_is_422(svc: RunningService, endpoint: str, sent: object) -> None:
    inc = await open_incident(svc, f"Mismatch-{endpoint}-{sent}")
    base = f"{svc.url}/api/v1/incidents/{inc}"
    doc: dict[str, Any] = {"command": sent, "by": "mallory"}
    if endpoint == "assign":
        doc.update(role="IC", who="carol")
    answer = assert_error(await svc.client.post(f"{base}/{endpoint}", json=doc, headers=AUTH), 422, endpoint)
    assert answer["details"][0]["loc"] == "command"
    snapshot = (await svc.client.get(base, headers=AUTH)).json()["incident"]
    assert (snapshot["status"], snapshot["acknowledged_by"], snapshot["roles"]) == ("open", None, {})


async def test_body_naming_its_own_command_is_taken(svc: RunningService) -> None:
    inc = await open_incident(svc, "Matching")
    base = f"{svc.url}/api/v1/incidents/{inc}"
    resp = await svc.client.post(f"{base}/ack", json={"command": "ack", "by": "alice"}, headers=AUTH)
    assert resp.status_code == 200 and resp.json()["incident"]["acknowledged_by"] == "alice"
    resp = await svc.client.post(
        f"{base}/assign", json={"command": "assign", "role": "IC", "who": "carol"}, headers=AUTH
    )
    assert resp.status_code == 200 and resp.json()["incident"]["roles"] == {"Incident Commander": "carol"}


@pytest.mark.parametrize("decision", ["approve", "deny"])
async def test_body_naming_another_remediation_is_422(svc: RunningService, decision: str) -> None:
    path = f"{svc.url}/api/v1/remediation/actions/{REMEDIATION_ID}/{decision}"
    other = {"remediation_id": "rem-" + "1" * 20}
    answer = assert_error(
        await svc.client.post(path, json=other, headers=AUTH), 422, "does not match the path"
    )
    assert answer["details"][0]["loc"] == "remediation_id"
    same = await svc.client.post(path, json={"remediation_id": REMEDIATION_ID}, headers=AUTH)
    assert_error(same, 404, REMEDIATION_ID)  # taken, and no such job


# 4. The router's own answers, without the token


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("POST", "/api/v1/nope"), ("GET", "/api/v1/incidents/x/y/z")]
)
async def test_unknown_path_is_a_json_404(svc: RunningService, method: str, path: str) -> None:
    resp = await svc.client.request(method, f"{svc.url}{path}")
    assert resp.json() == {"error": f"Not Found: {method} {path}"}
    assert_error(resp, 404, "Not Found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/v1/alerts/alertmanager", "POST"),
        ("PUT", "/api/v1/incidents/inc-1/ack", "POST"),
        ("PUT", "/api/v1/incidents", "GET, HEAD, POST"),
        ("DELETE", "/healthz", "GET, HEAD"),
    ],
)
async def test_wrong_method_is_a_json_405_with_allow(
    svc: RunningService, method: str, path: str, allow: str
) -> None:
    resp = await svc.client.request(method, f"{svc.url}{path}")
    assert_error(resp, 405, f"Method Not Allowed: {method} {path}")
    # Starlette joins a set: the order varies from run to run.
    assert set(resp.headers["allow"].split(", ")) == set(allow.split(", "))
    assert resp.json()["error"].endswith(f"(allowed: {resp.headers['allow']})")


async def test_a_bug_is_a_json_500_without_a_traceback(
    svc: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("a bug, with internals in its message")

    monkeypatch.setattr(svc.runtime.commands, "apply", broken)
    resp = await svc.client.post(f"{svc.url}/api/v1/incidents/inc-any/ack", json={}, headers=AUTH)
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal error"}


# The Kafka paths


async def test_deeply_nested_alert_record_is_dead_lettered_with_its_reason(
    kafka: str, svc: RunningService
) -> None:
    dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
    try:
        deep = {
            arrays(DEEP): f"nested deeper than {MAX_JSON_DEPTH} levels",
            b'{"alerts": ' + arrays(DEEP) + b"}": f"nested deeper than {MAX_JSON_DEPTH} levels",
            objects(DEEP): f"nested deeper than {MAX_JSON_DEPTH} levels",
        }
        good = body(webhook(alert("AfterTheDeepOnes", namespace="hardening")))
        await produce(kafka, svc.settings.kafka_alerts_topic, [*deep, good], key=b"one-partition")
        await dlq.wait_for(lambda recs: sum(r.value in deep for r in recs) == len(deep))
        for rec in dlq.records:
            if rec.value in deep:
                reason = dict(rec.headers)["incidentd-dlq-reason"].decode()
                # Refused at once, not after the pipeline's retries of a crash.
                assert reason.startswith("JSON nested deeper"), reason
                assert deep[rec.value] in reason
        await svc.events.wait_for(
            lambda _: any(
                e["data"]["group_labels"]["alertname"] == "AfterTheDeepOnes"
                for e in svc.events.of_type("incident.opened")
            )
        )
    finally:
        await dlq.stop()


async def test_deeply_nested_command_record_is_dead_lettered(kafka: str, svc: RunningService) -> None:
    # The commands consumer decodes with pydantic, whose parser stops at 200 levels with a
    # ValidationError: dead-lettered as an invalid command, the consumer goes on.
    inc = await open_incident(svc, "CommandAfterDeep")
    dlq = await TopicReader(kafka, svc.settings.kafka_dlq_topic).start()
    try:
        topic = svc.settings.kafka_commands_topic
        deep = [
            arrays(DEEP),
            b'{"incident_id": "' + inc.encode() + b'", "command": ' + objects(DEEP) + b"}",
        ]
        good = json.dumps({"incident_id": inc, "command": {"command": "ack", "by": "bob"}}).encode()
        await produce(kafka, topic, [*deep, good], key=b"one-partition")

        def from_commands(recs: list[Any]) -> list[Any]:
            return [r for r in recs if dict(r.headers)["incidentd-dlq-topic"].decode() == topic]

        await dlq.wait_for(lambda recs: len(from_commands(recs)) >= len(deep))
        assert sorted(r.value for r in from_commands(dlq.records)) == sorted(deep)
        for rec in from_commands(dlq.records):
            reason = dict(rec.headers)["incidentd-dlq-reason"].decode()
            assert reason.startswith("invalid command: ") and "recursion limit exceeded" in reason, reason
        await svc.events.wait_for(
            lambda _: any(e["subject"] == inc for e in svc.events.of_type("incident.acknowledged"))
        )
    finally:
        await dlq.stop()
