"""Assertions shared by the integration tests."""

from __future__ import annotations

from typing import Any

import jsonschema

from service.emit.schema import DATASCHEMA_URI, EVENT_TYPES, json_schema
from service.runtime import Runtime

# Closed, as the models are: an event field the schema does not document fails here. (The
# published schema is open, for consumers; tests/test_event_contract.py validates with it.)
_VALIDATOR = jsonschema.Draft202012Validator(json_schema(closed=True))


def assert_valid_event(event: dict[str, Any], key: bytes | None = None) -> None:
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert event["dataschema"] == DATASCHEMA_URI
    assert ".".join(event["type"].split(".")[-2:]) in EVENT_TYPES, event["type"]
    assert event["subject"] == event["data"]["id"]
    if key is not None:
        assert key.decode() == event["data"]["id"]
    errors = sorted(_VALIDATOR.iter_errors(event["data"]), key=str)
    assert not errors, f"{event['type']} data violates the schema: {errors[0].message}"


def metric(runtime: Runtime, name: str, **labels: str) -> float:
    value = runtime.metrics.registry.get_sample_value(name, labels or None)
    return float(value or 0.0)
