"""The ``remediation`` part of remediation.* events: what was asked, planned, dry-run,
done and verified, and the guardrail that stopped it."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from service.models import RemediationInputs, Target


def remediation_id(incident_id: str, opening: int, policy: str, target_key: str) -> str:
    """Stable per (incident opening, policy, target): a redelivered alert names the same job."""
    digest = hashlib.sha256(f"{incident_id}/{opening}/{policy}/{target_key}".encode()).hexdigest()
    return f"rem-{digest[:20]}"


class Job(Protocol):
    """A job as planned (the stage's request) or as stored (the worker's job)."""

    @property
    def id(self) -> str: ...
    @property
    def policy(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def target(self) -> Target | None: ...
    @property
    def inputs(self) -> RemediationInputs: ...


def part(job: Job, **outcome: Any) -> dict[str, Any]:
    """``outcome``: any of plan, dry_run, result, verification, guardrail, reason,
    failure, approval; those that are None are left out."""
    return {
        "id": job.id,
        "policy": job.policy,
        "action": job.action,
        "mode": job.mode,
        "target": job.target.to_json() if job.target else None,
        "inputs": job.inputs.to_json(),
        **{k: v for k, v in outcome.items() if v is not None},
    }
