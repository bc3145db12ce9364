"""Compact JSON through orjson on the hot paths (incident rows, events, Kafka records).

orjson writes the same compact, non-ASCII-escaped JSON the standard library writes with
``separators=(",", ":"), ensure_ascii=False`` (byte for byte but for a float's exponent,
``1e-6`` for ``1e-06``, the same number), about ten times faster; what it refuses
(an integer wider than 64 bits, from a producer's field or a person's note) the standard
library still writes, so nothing that encoded before fails now.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

import orjson

from service.clock import iso


def dumps(value: Any) -> bytes:
    """``value`` as JSON; a dataclass as its fields in order, a time as :func:`iso` writes it
    (an incident's alert states go to its row so, without a dict built per alert)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_as_orjson).encode()


def _as_orjson(value: Any) -> Any:
    """What orjson writes by itself and the standard library does not."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_text(value: Any) -> str:
    return dumps(value).decode()


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # What orjson will not read but the standard library will (an integer wider than
        # 64 bits, NaN): a row written by an earlier version must still load.
        return json.loads(text)
