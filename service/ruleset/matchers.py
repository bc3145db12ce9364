"""Alertmanager matcher strings: ``name="value"``, ``!=``, ``=~`` and ``!~``.

Regexes are RE2, anchored at both ends, and a missing label matches as the empty
string, exactly as in Alertmanager, so rules can be copied between the two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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


T = TypeVar("T")

# Distinct label projections a RuleMatch remembers; past this it starts again (a storm's
# alerts share a few projections, so the bound is reached only by label values that vary).
RULE_MATCH_MEMO = 4096


class RuleMatch(Generic[T]):
    """Which of ``rules`` match a label set (all of a rule's matchers do), remembered by the
    values of the labels the matchers name: only those can change the answer, and a storm's
    thousands of alerts differ mostly in labels no rule reads (``instance``, ``pod``)."""

    def __init__(self, rules: Sequence[tuple[Sequence[Matcher], T]]) -> None:
        self._rules = [(tuple(ms), item) for ms, item in rules]
        self._names = tuple(sorted({m.name for ms, _ in self._rules for m in ms}))
        self._memo: dict[tuple[str, ...], tuple[T, ...]] = {}

    def all(self, labels: Mapping[str, str]) -> tuple[T, ...]:
        """The matching rules' items, in the rules' order."""
        # A missing label matches as the empty string (see Matcher.matches).
        key = tuple(labels.get(n, "") for n in self._names)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= RULE_MATCH_MEMO:
                self._memo.clear()
            found = tuple(item for ms, item in self._rules if matches_all(ms, labels))
            self._memo[key] = found
        return found

    def all_over(self, labels: Mapping[str, str], under: Mapping[str, str]) -> tuple[T, ...]:
        """:meth:`all` of ``under`` overlaid with ``labels`` (an alert's annotations and
        labels), merged only when the answer is not remembered: once per alert otherwise."""
        key = tuple([labels[n] if n in labels else under.get(n, "") for n in self._names])
        found = self._memo.get(key)
        return found if found is not None else self.all({**under, **labels})

    def first(self, labels: Mapping[str, str]) -> T | None:
        found = self.all(labels)
        return found[0] if found else None
