"""The ``remediation`` part of remediation.* events: what was asked, planned, dry-run,
done and verified, and the guardrail that stopped it."""

from __future__ import annotations

import hashlib
from typing import Any


def remediation_id(incident_id: str, opening: int, policy: str, target_key: str) -> str:
    """Stable per (incident opening, policy, target): a redelivered alert names the same job."""
    digest = hashlib.sha256(f"{incident_id}/{opening}/{policy}/{target_key}".encode()).hexdigest()
    return f"rem-{digest[:20]}"


def part(
    *,
    id: str,
    policy: str,
    action: str,
    mode: str,
    target: dict[str, Any] | None,
    inputs: dict[str, Any],
    **outcome: Any,
) -> dict[str, Any]:
    """``outcome``: any of plan, dry_run, result, verification, guardrail, reason, approval."""
    return {
        "id": id,
        "policy": policy,
        "action": action,
        "mode": mode,
        "target": target,
        "inputs": inputs,
        **{k: v for k, v in outcome.items() if v is not None},
    }
