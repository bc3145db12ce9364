"""The one way incidentd compiles a matcher regex: RE2, anchored as Alertmanager anchors it.

Alertmanager is written in Go, whose ``regexp`` package is RE2: no backreferences, no
lookaround, but ``\\pL``, ``[[:alpha:]]`` and ``\\Q...\\E``. Python's ``re`` disagrees both ways
(it takes ``(a)\\1`` and refuses ``\\pL``), and its ``$`` also matches before a final newline,
so a rule could pass ``rules check`` here and be refused when copied into Alertmanager, or
match differently. Every matcher, silence, inhibition and noise rule compiles through here.
"""

from __future__ import annotations

from typing import Protocol, cast, runtime_checkable

import re2

# RE2 logs every refused pattern to stderr through absl; the refusal is reported as an
# error of ours instead (a rules check would otherwise print each problem twice).
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


class RegexError(ValueError):
    """A regex RE2 (and so Alertmanager) refuses; the message is RE2's reason."""


@runtime_checkable
class Pattern(Protocol):
    def fullmatch(self, text: str) -> object | None: ...


def compile_matcher_regex(value: str) -> Pattern:
    """Compile ``value`` as Alertmanager does: ``^(?:value)$`` in RE2 syntax."""
    # The value alone first: an error then quotes the text the user wrote, not our wrapper.
    _compile(value)
    return _compile(f"^(?:{value})$")


def _compile(text: str) -> Pattern:
    try:
        return cast(Pattern, re2.compile(text, _OPTIONS))
    except re2.error as exc:
        raise RegexError(_reason(exc)) from None


def _reason(exc: Exception) -> str:
    # google-re2 raises ``error(b"missing ): (")``: RE2's own words, as bytes.
    parts = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in exc.args]
    return ": ".join(parts) or "invalid regex"
