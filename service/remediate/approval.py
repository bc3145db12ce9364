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
from service.errors import Conflict, NotFound
from service.models import Name
from service.store.remediations import ApprovalDecision, JobStatus, RemediationJob, RemediationJobs
from service.store.store import Store

RemediationId = Annotated[str, StringConstraints(pattern=r"^rem-[0-9a-f]{20}$")]


class _Decide(BaseModel):
    model_config = ConfigDict(extra="forbid")
    remediation_id: RemediationId
    by: Name = "unknown"


class Approve(_Decide):
    command: Literal["approve"] = "approve"


class Deny(_Decide):
    command: Literal["deny"] = "deny"


class UnknownRemediation(NotFound):
    pass


class Approvals:
    def __init__(self, store: Store, clock: Clock, on_change: Callable[[], None]) -> None:
        self._store = store
        self._jobs: RemediationJobs = store.remediations
        self._clock = clock
        self._on_change = on_change

    async def decide(self, command: Approve | Deny, incident_id: str | None = None) -> RemediationJob:
        """The same decision again is a no-op; raises :class:`UnknownRemediation`, or
        :class:`Conflict` for a job not waiting for a decision (or decided otherwise)."""
        rid = command.remediation_id
        decision = ApprovalDecision.APPROVED if command.command == "approve" else ApprovalDecision.DENIED
        now = self._clock.now()
        async with self._store.db.write() as conn:
            job = await self._jobs.get(rid, conn)
            if job is None or (incident_id is not None and job.incident_id != incident_id):
                where = f" in incident {incident_id}" if incident_id else ""
                raise UnknownRemediation(f"no remediation {rid}{where}")
            decided = await self._jobs.decide(conn, rid, decision, command.by, now)
            job = await self._jobs.get(rid, conn)
        assert job is not None
        if not decided and job.decision is not decision:
            raise Conflict(f"remediation {rid} {_state(job)}; it is not waiting for approval")
        self._on_change()
        return job


def _state(job: RemediationJob) -> str:
    if job.decision:
        return f"already {job.decision} by {job.decided_by}"
    if job.status is JobStatus.AWAITING_APPROVAL:
        return "was not answered before its approval timeout (denied)"
    return f"is {job.status}"
