"""Compact JSON through orjson on the hot paths (incident rows, events, Kafka records).

orjson writes the same compact, non-ASCII-escaped JSON the standard library writes with
``separators=(",", ":"), ensure_ascii=False`` (byte for byte but for a float's exponent,
``1e-6`` for ``1e-06``, the same number), about ten times faster; what it refuses
(an integer wider than 64 bits, from a producer's field or a person's note) the standard
library still writes, so nothing that encoded before fails now.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_text(value: Any) -> str:
    return dumps(value).decode()


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # What orjson will not read but the standard library will (an integer wider than
        # 64 bits, NaN): a row written by an earlier version must still load.
        return json.loads(text)
