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
    if _every_label(group_by):
        chosen = dict(sorted(labels.items()))
    else:
        # An empty label is an absent label, as in Prometheus.
        chosen = {name: labels[name] for name in sorted(group_by) if labels.get(name)}
    return dumps_text(chosen), chosen


def group_keys(many: Sequence[Mapping[str, str]], group_by: Sequence[str]) -> list[str]:
    """:func:`group_key`'s key for each label set; those that agree on the group-by labels
    (a webhook's alerts, one group as Alertmanager sends it) share one computation."""
    return [key for key, _ in groups_of(many, group_by)]


def groups_of(many: Sequence[Mapping[str, str]], group_by: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """:func:`group_key` for each label set, computed once for those that agree on the
    group-by labels (which then share the group's labels: read only)."""
    if _every_label(group_by):
        return [group_key(labels, group_by) for labels in many]
    seen: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
    out = []
    for labels in many:
        # What the key depends on: the group-by values, an empty one counting as absent.
        values = tuple(labels.get(name, "") for name in group_by)
        group = seen.get(values)
        if group is None:
            group = seen[values] = group_key(labels, group_by)
        out.append(group)
    return out


def _every_label(group_by: Sequence[str]) -> bool:
    return list(group_by) == ["..."]
