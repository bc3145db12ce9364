"""Approve or deny a remediation that waits for a person (SEV-1 by default).

Over HTTP and on ``incidents.commands``, like acknowledgements. A decision is
stored on the job and wakes the worker; the same decision twice is a no-op, a
different one after the first is refused. No answer before the timeout = deny.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from service.clock import Clock
from service.models import Name
from service.store.remediations import Decision, RemediationStore

RemediationId = Annotated[str, StringConstraints(pattern=r"^rem-[0-9a-f]{20}$")]


class _Decide(BaseModel):
    model_config = ConfigDict(extra="forbid")
    remediation_id: RemediationId
    by: Name = "unknown"


class Approve(_Decide):
    command: Literal["approve"] = "approve"


class Deny(_Decide):
    command: Literal["deny"] = "deny"


class Approvals:
    def __init__(self, jobs: RemediationStore, clock: Clock, on_change: Callable[[], None]) -> None:
        self._jobs = jobs
        self._clock = clock
        self._on_change = on_change

    async def decide(self, command: Approve | Deny, incident_id: str | None = None) -> dict[str, object]:
        """Raises :class:`Decision` with the HTTP status for a decision that cannot apply."""
        job = await self._jobs.get(command.remediation_id)
        if job is None or (incident_id is not None and job["incident_id"] != incident_id):
            where = f" in incident {incident_id}" if incident_id else ""
            raise Decision(404, f"no remediation {command.remediation_id}{where}")
        decision = "approved" if command.command == "approve" else "denied"
        result = await self._jobs.decide(command.remediation_id, decision, command.by, self._clock.now())
        self._on_change()
        return result
