"""Bytes -> normalised :class:`Alert` objects, or a precise reason why not."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from pydantic import TypeAdapter, ValidationError

from service.clock import iso
from service.correlate.fingerprint import fingerprint, valid_fingerprint
from service.ingest.payloads import (
    MAX_JSON_DEPTH,
    AlertIn,
    LeanAlertIn,
    LeanWebhookIn,
    PostableAlertIn,
    WebhookIn,
    encodes,
)
from service.jsonfast import loads
from service.models import Alert, AlertStatus

_STATUS = {s.value: s for s in AlertStatus}
# Alertmanager writes "no end" as Go's zero time.
_GO_ZERO_YEAR = 1
_LOC_PART_CHARS = 64
# A pushed alert without endsAt stays firing this long unless it is pushed again:
# Alertmanager's `resolve_timeout` default, so a pusher written against Alertmanager
# (re-sending within that time) sees the same behaviour here. Prometheus always sends
# endsAt, so this only matters for other pushers.
RESOLVE_TIMEOUT = timedelta(minutes=5)

# Structure only: brackets and the quotes that delimit strings.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
# Text is decoded strictly, so only a \uD800-\uDFFF escape can put a lone surrogate in
# a decoded string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# The alerts' own time type (``payloads._AlertTimes``), for the sealed records' times.
_DATETIME: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)


class PayloadError(Exception):
    """A payload we will never be able to process; ``kind`` picks the HTTP status."""

    def __init__(self, kind: str, reason: str, details: list[dict[str, Any]] | None = None):
        super().__init__(reason)
        self.kind = kind  # "malformed" (400) or "invalid" (422)
        self.reason = reason
        self.details = details or []


def nesting_depth(utf8: bytes) -> int:
    """How deep the arrays and objects of UTF-8 JSON nest, without decoding it.

    A few passes at C speed, cheaper than ``json.loads``; brackets inside strings do not
    count. For text that is not JSON the answer may be wrong, which is harmless: the
    decoder refuses that text anyway (and its RecursionError is caught).
    """
    # Escaped backslashes pair up left to right, as in a JSON string; then escaped quotes
    # go, and every quote left opens or closes a string.
    structure = utf8.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    outside_strings = b"".join(structure.split(b'"')[::2])
    return max(accumulate(map(_STEP.__getitem__, outside_strings)), default=0)


def too_deep(utf8: bytes) -> bool:
    """Nested deeper than ``MAX_JSON_DEPTH``? Fewer brackets cannot nest deeper."""
    return utf8.count(b"[") + utf8.count(b"{") > MAX_JSON_DEPTH and nesting_depth(utf8) > MAX_JSON_DEPTH


def load_json(raw: bytes) -> Any:
    """Any JSON value from ``raw``, or :class:`PayloadError`: malformed (not JSON, nested
    deeper than ``MAX_JSON_DEPTH``) or invalid (lone surrogates, numbers too long)."""
    try:
        encoding = json.detect_encoding(raw)
        # Strict: bytes that encode surrogates are refused here, not decoded into text.
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise PayloadError("malformed", f"body is not valid JSON: {exc}") from None
    utf8 = raw if encoding.startswith("utf-8") else text.encode()
    # Before decoding, which recurses once per level.
    if too_deep(utf8):
        raise PayloadError("malformed", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError("malformed", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # A safety net for a stack already deep; the depth check above is the bound.
        raise PayloadError("malformed", "JSON nested too deeply to decode") from None
    except ValueError as exc:
        # Valid JSON that Python will not convert: an integer of more than 4,300 digits.
        raise PayloadError("invalid", f"body cannot be decoded: {exc}") from None
    if _SURROGATE_ESCAPE.search(text):
        where = find_text(doc, lambda text: not encodes(text))
        if where is not None:
            msg = "not valid Unicode (lone surrogate)"
            raise PayloadError("invalid", f"{where}: {msg}", [{"loc": where, "msg": msg}])
    return doc


def find_text(doc: Any, bad: Callable[[str], bool], loc: str = "") -> str | None:
    """Where (``alerts.0.labels.team``) the first key or string in ``doc`` is ``bad``, or
    None. Recursive, so only for documents :func:`load_json` accepted (depth-bounded)."""
    if isinstance(doc, str):
        return (loc or "(body)") if bad(doc) else None
    children: Iterable[tuple[Any, Any]] = ()
    if isinstance(doc, dict):
        children = doc.items()
    elif isinstance(doc, list):
        children = enumerate(doc)
    for key, value in children:
        if isinstance(key, str) and bad(key):
            # ASCII-escaped: the bad key must not make the answer's own text bad.
            return f"{loc}.{key!a}" if loc else ascii(key)
        found = find_text(value, bad, f"{loc}.{key}" if loc else str(key))
        if found is not None:
            return found
    return None


def decode(raw: bytes) -> dict[str, Any]:
    doc = load_json(raw)
    if not isinstance(doc, dict):
        raise PayloadError("invalid", "expected a JSON object")
    return doc


def parse_document(doc: dict[str, Any], now: datetime) -> list[Alert]:
    """A webhook (has ``alerts``) or a single alert, validated and normalised."""
    try:
        if "alerts" in doc or "version" in doc:
            webhook = WebhookIn.model_validate(doc)
            return [normalise(a, now) for a in webhook.alerts]
        return [normalise(AlertIn.model_validate(doc), now)]
    except ValidationError as exc:
        details = _details(exc)
        raise PayloadError("invalid", f"payload does not validate: {_summary(details)}", details) from None


def _details(exc: ValidationError, *within: str | int) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(_loc_part(p) for p in (*within, *e["loc"])), "msg": e["msg"]} for e in exc.errors()
    ]


def _summary(details: list[dict[str, Any]]) -> str:
    return "; ".join(f"{d['loc'] or '(body)'}: {d['msg']}" for d in details[:5])


def _loc_part(part: str | int) -> str:
    # A label name over its limit is a loc part too; the answer need not repeat all of it.
    text = str(part)
    return text if len(text) <= _LOC_PART_CHARS else f"{text[:_LOC_PART_CHARS]}..."


@dataclass(frozen=True, slots=True)
class Pushed:
    """A ``POST /api/v2/alerts`` body, decided on receipt.

    ``doc`` is a webhook (v4) of the valid alerts, each with its status, times and
    fingerprint written out, so the consumer's :func:`parse` gives back exactly ``alerts``
    (``ends_at`` included). ``refused`` names the invalid alerts, if any.
    """

    doc: dict[str, Any]
    alerts: list[Alert]
    refused: PayloadError | None


def parse_pushed(body: Any, now: datetime) -> Pushed:
    """Alertmanager's ``postAlertsHandler`` semantics: no startsAt is now (or endsAt, if
    given); no endsAt is now + :data:`RESOLVE_TIMEOUT`; an alert whose endsAt is not after
    ``now`` is resolved. As there, every valid alert is taken even when others are not, so
    one bad alert does not drop the rest of a Prometheus batch (Prometheus never retries a
    4xx, it only re-sends firing alerts later)."""
    if not isinstance(body, list):
        raise PayloadError("invalid", "expected a JSON array of alerts (Alertmanager API v2 postableAlerts)")
    alerts: list[Alert] = []
    details: list[dict[str, Any]] = []
    for i, item in enumerate(body):
        try:
            alert = _decide(PostableAlertIn.model_validate(item), now)
        except ValidationError as exc:
            details += _details(exc, i)
            continue
        except ValueError as exc:
            details.append({"loc": f"{i}.endsAt", "msg": str(exc)})
            continue
        alerts.append(alert)
    refused = None
    if details:
        bad = len(body) - len(alerts)
        refused = PayloadError(
            "invalid",
            f"{bad} of {len(body)} alerts refused, the other {len(alerts)} accepted: {_summary(details)}",
            details,
        )
    firing = any(a.status is AlertStatus.FIRING for a in alerts)
    doc = {
        "version": "4",
        "status": "firing" if firing else "resolved",
        "alerts": [_webhook_alert(a) for a in alerts],
    }
    return Pushed(doc, alerts, refused)


def _decide(a: PostableAlertIn, now: datetime) -> Alert:
    ends_at = _utc(a.ends_at)
    starts_at = _utc(a.starts_at) or ends_at or now
    if ends_at is None:
        ends_at = now + RESOLVE_TIMEOUT
    if ends_at < starts_at:
        raise ValueError(f"endsAt ({iso(ends_at)}) is before startsAt ({iso(starts_at)})")
    return Alert(
        fingerprint=fingerprint(a.labels),
        status=AlertStatus.RESOLVED if ends_at <= now else AlertStatus.FIRING,
        labels=a.labels,
        annotations=a.annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=a.generator_url,
        received_at=now,
        starts_at_given=_utc(a.starts_at) is not None,
    )


def _webhook_alert(a: Alert) -> dict[str, Any]:
    assert a.ends_at is not None  # every pushed alert has one, decided on receipt
    out = {
        "status": a.status.value,
        "labels": a.labels,
        "annotations": a.annotations,
        "endsAt": iso(a.ends_at),
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
    }
    if a.starts_at_given:
        # Without it the consumer takes its own time, and a re-send is the same episode.
        out["startsAt"] = iso(a.starts_at)
    return out


def parse_webhook(raw: bytes, now: datetime) -> list[Alert] | None:
    """A webhook's alerts, or None when ``raw`` is not a webhook that validates (the slow
    path, :func:`decode` and :func:`parse_document`, then gives the precise reason)."""
    hook = validated_webhook(raw)
    return None if hook is None else [normalise(a, now) for a in hook.alerts]


def validated_webhook(raw: bytes) -> LeanWebhookIn | None:
    """``raw`` as a webhook, validated; None when it is not one that validates.

    Hot path: pydantic parses and validates the JSON in one pass, half the cost of
    json.loads + model_validate, and with :class:`LeanWebhookIn` no check calls Python
    but the alertname's, once per body. Its parser does not recurse in Python and stops at
    200 levels, and what validates keeps nothing deeper than labels. None answers exactly
    what :class:`WebhookIn` refuses (its validators give the reason, on the slow path).
    """
    if b'"alerts"' not in raw:
        return None
    try:
        # pydantic's parser refuses a raw control character and a lone surrogate escape in
        # a string, so a NUL can only come as the escape \u0000: without one, every string
        # of the document is storable. With one, WebhookIn's validators look (rare).
        if b"\\u0000" in raw:
            WebhookIn.model_validate_json(raw)
        hook = LeanWebhookIn.model_validate_json(raw)
    except ValidationError:
        return None
    return hook if all(a.labels.get("alertname") for a in hook.alerts) else None


def parse(raw: bytes, now: datetime) -> list[Alert]:
    # No depth check on a record: one nested deeper only in ignored fields is taken.
    alerts = parse_webhook(raw, now)
    return alerts if alerts is not None else parse_document(decode(raw), now)


def normalise(a: AlertIn | LeanAlertIn, now: datetime) -> Alert:
    times = _utc(a.starts_at), _utc(a.ends_at)
    return _alert(a.status, *times, a.fingerprint, a.labels, a.annotations, a.generator_url, now)


def read_sealed(raw: bytes, now: datetime) -> list[Alert]:
    """The alerts of a webhook the intake validated before it sealed it (``seal.py``), as
    :func:`parse` gives them, without validating it again: orjson's parse, and each
    distinct time text parsed once by pydantic's own datetime parser.

    Raises ValueError, TypeError or KeyError when ``raw`` does not read as a webhook; the
    caller then takes it through :func:`parse`, which says what is wrong with it.
    """
    return [
        _alert(
            a.get("status"),
            _time(a.get("startsAt")),
            _time(a.get("endsAt")),
            a.get("fingerprint", ""),
            a["labels"],
            a.get("annotations", {}),
            a.get("generatorURL", ""),
            now,
        )
        for a in loads(raw)["alerts"]
    ]


# An alert's fields as its two readers have them (normalise, read_sealed): one place
# decides its status, fingerprint and start from them.
def _alert(  # noqa: PLR0913
    status_text: str | None,
    given: datetime | None,
    ends_at: datetime | None,
    fp: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    generator_url: str,
    now: datetime,
) -> Alert:
    if status_text is not None:
        status = _STATUS[status_text]
    else:
        # A single alert without status follows Alertmanager's own rule: ended means resolved.
        status = AlertStatus.RESOLVED if ends_at and ends_at <= now else AlertStatus.FIRING
    return Alert(
        fingerprint=fp if valid_fingerprint(fp) else fingerprint(labels),
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=given or now,
        ends_at=ends_at,
        generator_url=generator_url,
        received_at=now,
        starts_at_given=given is not None,
    )


# Untyped: values that compare equal (1 and 1.0 epoch seconds) are the same time to pydantic;
# true, equal to 1, is refused by the webhook and so never sealed.
@functools.lru_cache(maxsize=4096)
def _time(value: object) -> datetime | None:
    """A sealed alert's time as pydantic read it for the intake. A storm's alerts share a
    few time texts: each is parsed once."""
    return _utc(_DATETIME.validate_python(value))


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.year == _GO_ZERO_YEAR:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
