"""Assertions shared by the integration tests."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from service.emit.schema import SCHEMA_PATH
from service.runtime import Runtime

_VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def assert_valid_event(event: dict[str, Any], key: bytes | None = None) -> None:
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert event["subject"] == event["data"]["id"]
    if key is not None:
        assert key.decode() == event["data"]["id"]
    errors = sorted(_VALIDATOR.iter_errors(event["data"]), key=str)
    assert not errors, f"{event['type']} data violates the schema: {errors[0].message}"


def metric(runtime: Runtime, name: str, **labels: str) -> float:
    value = runtime.metrics.registry.get_sample_value(name, labels or None)
    return float(value or 0.0)
