"""Go/Prometheus style durations (``30m``, ``2h``, ``1h30m``), as Alertmanager writes them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    text = text.strip()
    pos, seconds = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        seconds += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {text!r}, expected e.g. 30s, 15m, 2h, 1h30m")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    total = int(value.total_seconds())
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out += f"{total // size}{unit}"
            total %= size
    return out or "0s"


def _coerce(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"duration needs a unit, e.g. '{value}s' or '{value}m'")
    return value


Duration = Annotated[timedelta, BeforeValidator(_coerce), PlainSerializer(format_duration, return_type=str)]
