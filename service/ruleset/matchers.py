"""Alertmanager matcher strings: ``name="value"``, ``!=``, ``=~`` and ``!~``.

Regexes are RE2, anchored at both ends, and a missing label matches as the empty
string, exactly as in Alertmanager, so rules can be copied between the two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from service.ruleset.regex import Pattern, RegexError, compile_matcher_regex

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.S)
OPS = ("=", "!=", "=~", "!~")


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: Pattern | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(f'invalid matcher {text!r}, expected e.g. alertname="ApiDown"')
        name, op, raw = m.groups()
        value = _unquote(raw)
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = compile_matcher_regex(value)
            except RegexError as exc:
                raise ValueError(f"invalid regex {value!r} in matcher {text!r}: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual)
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def _unquote(raw: str) -> str:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise ValueError(f"unterminated quoted value {raw!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid quoted value {raw!r}: {exc.msg}") from None
        if not isinstance(value, str):
            raise ValueError(f"invalid quoted value {raw!r}")
        return value
    if any(c in raw for c in '"{},'):
        raise ValueError(f"unquoted value {raw!r} contains one of '\"{{}},'; quote it")
    return raw


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
