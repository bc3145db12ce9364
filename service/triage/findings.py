"""What a probe found: one typed row, plain values only, never a secret."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Userinfo in a URL (scheme://user:password@host): dropped wherever a URL is shown.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
SUMMARY_MAX = 160


@dataclass(frozen=True, slots=True)
class Finding:
    probe: str
    ok: bool
    summary: str  # one line
    target: str = ""  # what was probed, as people read it (no secret)
    details: dict[str, Any] = field(default_factory=dict)
    took_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "ok": self.ok,
            "summary": self.summary,
            "target": self.target,
            "details": self.details,
            "took_ms": self.took_ms,
        }


def one_line(text: str, limit: int = SUMMARY_MAX) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without URL credentials and without any of ``secrets``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _USERINFO.sub(r"\g<scheme>***@", text)


def summarize(findings: Iterable[Finding]) -> str:
    """The short summary the [UPDATE] carries: the failures first, then what was fine."""
    rows = list(findings)
    if not rows:
        return "Triage: no probes ran"
    bad = [f for f in rows if not f.ok]
    head = f"Triage: {len(bad)} of {len(rows)} checks failed" if bad else f"Triage: all {len(rows)} checks ok"
    lines = [head] + [
        f"- {'FAIL' if not f.ok else 'ok'} {f.probe}: {f.summary}" for f in bad + [f for f in rows if f.ok]
    ]
    return "\n".join(lines)
