"""The one way incidentd compiles a matcher regex: RE2, anchored as Alertmanager anchors it.

Alertmanager is written in Go, whose ``regexp`` package is RE2: no backreferences, no
lookaround, but ``\\pL``, ``[[:alpha:]]`` and ``\\Q...\\E``. Python's ``re`` disagrees both ways
(it takes ``(a)\\1`` and refuses ``\\pL``), and its ``$`` also matches before a final newline,
so a rule could pass ``rules check`` here and be refused when copied into Alertmanager, or
match differently. Every matcher, silence, inhibition and noise rule compiles through here.
"""

from __future__ import annotations

import re2
from re2 import _re2

# google-re2's public ``fullmatch`` builds match objects and maps byte offsets back to
# characters: 7 us a call, against 1.2 us for the binding's own ``Match`` used here (every
# alert meets every classify, noise, escalation and silence matcher). The binding is the
# package's private module: pyproject pins the major version.
_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_NO_MATCH = (-1, -1)


def _options() -> re2.Options:
    options = re2.Options()
    # RE2 logs every refused pattern to stderr through absl; the refusal is reported as
    # an error of ours instead (a rules check would otherwise print each problem twice).
    options.log_errors = False
    # A matcher only asks "does it match": no submatches to track.
    options.never_capture = True
    return options


_OPTIONS = _options()


class RegexError(ValueError):
    """A regex RE2 (and so Alertmanager) refuses; the message is RE2's reason."""


class Pattern:
    """A compiled matcher regex; ``fullmatch`` is all a matcher needs."""

    __slots__ = ("_re",)

    def __init__(self, text: str) -> None:
        self._re = _re2.RE2(text.encode(), _OPTIONS)
        if not self._re.ok():
            raise RegexError(self._re.error().decode(errors="replace"))

    def fullmatch(self, text: str) -> bool:
        # surrogatepass: a lone surrogate (refused at ingest anyway) must not raise here.
        data = text.encode("utf-8", "surrogatepass")
        return bool(self._re.Match(_BOTH, data, 0, len(data))[0] != _NO_MATCH)


def compile_matcher_regex(value: str) -> Pattern:
    """Compile ``value`` as Alertmanager does: ``^(?:value)$`` in RE2 syntax."""
    # The value alone first: an error then quotes the text the user wrote, not our wrapper.
    Pattern(value)
    return Pattern(f"^(?:{value})$")
