"""Alertmanager's label fingerprint, bit for bit, so ours and theirs agree."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from service.jsonfast import dumps_text

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = 0xFFFFFFFFFFFFFFFF
_SEPARATOR = 0xFF
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def fingerprint(labels: Mapping[str, str]) -> str:
    """FNV-1a 64 over ``name 0xFF value 0xFF`` for labels sorted by name."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for chunk in (name.encode(), labels[name].encode()):
            for byte in chunk:
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ _SEPARATOR) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def valid_fingerprint(value: str) -> bool:
    return bool(_HEX16.match(value))


def group_key(labels: Mapping[str, str], group_by: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The opaque key of the group an alert belongs to, and the group's labels.

    Only ever compared for equality, never parsed.
    """
    if list(group_by) == ["..."]:
        chosen = dict(sorted(labels.items()))
    else:
        # An empty label is an absent label, as in Prometheus.
        chosen = {name: labels[name] for name in sorted(group_by) if labels.get(name)}
    return dumps_text(chosen), chosen
