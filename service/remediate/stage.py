"""The remediate stage: which firing alerts ask for which action on which target.

Runs on the alerts that changed an incident in this batch (duplicates never reach
it), resolves each policy's target from the alert's labels, and stores one job per
(incident opening, policy, target) with the batch. Acting is the worker's job; a
target that cannot be resolved is refused here, with a ``remediation.skipped``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from service.batch import Batch, EventIntent, RemediationRequest
from service.models import Incident, IncidentStatus, RemediationInputs, Target
from service.remediate.actions.registry import ACTIONS
from service.remediate.audit import part, remediation_id
from service.remediate.target import Refused, resolve_target
from service.ruleset.models import RuleSet
from service.ruleset.remediation import Mode, Policy, strictest

# incident.unsuppressed: a held incident's alerts ask once its hold lifts.
ALERT_EVENTS = ("incident.opened", "incident.reopened", "incident.updated", "incident.unsuppressed")
Key = tuple[str, int, str, str]  # (incident id, opening, policy, target key)


class KnownJobs(Protocol):
    async def existing_keys(self, incident_ids: Iterable[str]) -> set[Key]: ...


class RemediateStage:
    def __init__(self, rules: RuleSet, jobs: KnownJobs, global_mode: Mode) -> None:
        self._rules = rules.remediation
        self._params = rules.remediation_params
        self._jobs = jobs
        self._global_mode = strictest(global_mode, self._rules.mode)
        # "off" switches a policy (or all of them) off: nothing is planned, nothing emitted.
        self._policies = [p for p in self._rules.policies if strictest(self._global_mode, p.mode) != "off"]

    async def __call__(self, batch: Batch) -> Batch:
        if not self._policies:
            return batch
        asked: list[tuple[Incident, dict[str, Any], Policy]] = []
        for event in batch.events:
            if event.type not in ALERT_EVENTS:
                continue
            inc = batch.changed.get(event.incident["id"])
            if inc is None or inc.status is IncidentStatus.RESOLVED or inc.hold is not None:
                continue
            for alert in event.extra.get("alerts", []):
                if alert["status"] == "firing":
                    asked.extend((inc, alert, p) for p in self._matching(inc, alert["labels"]))
        if not asked:
            return batch
        known = await self._jobs.existing_keys({inc.id for inc, _, _ in asked})
        for inc, alert, policy in asked:
            self._plan_one(batch, inc, alert, policy, known)
        return batch

    def _matching(self, inc: Incident, labels: dict[str, str]) -> list[Policy]:
        return [
            p
            for p in self._policies
            if (not p.severities or inc.severity in p.severities)
            and all(m.matches(labels) for m in p.matchers)
        ]

    def _plan_one(
        self, batch: Batch, inc: Incident, alert: dict[str, Any], policy: Policy, known: set[Key]
    ) -> None:
        action = ACTIONS[policy.action]
        mode = strictest(self._global_mode, policy.mode)
        labels = alert["labels"]
        refused: Refused | None = None
        target: Target | None = None
        try:
            target = resolve_target(
                action.target_kind, policy, labels, self._rules.allowlist, with_pod=action.uses_pod_label
            )
            key = target.key
        except Refused as exc:
            # Refusals are per alert: each one that asked is on the record once.
            refused, key = exc, f"refused/{alert['fingerprint']}"
        unique = (inc.id, inc.opening, policy.name, key)
        if unique in known:
            return
        known.add(unique)
        used = sorted({policy.label_for(f) for f in ("namespace", "deployment", "pod", "node")} & set(labels))
        request = RemediationRequest(
            id=remediation_id(*unique),
            incident_id=inc.id,
            opening=inc.opening,
            fingerprint=alert["fingerprint"],
            policy=policy.name,
            action=policy.action,
            target_key=key,
            target=target,
            inputs=RemediationInputs(
                alert=alert["fingerprint"],
                labels={name: labels[name] for name in used},
                params=self._params[policy.name].model_dump(),
                severity=inc.severity,
            ),
            mode=mode,
            refused=(refused.guardrail, refused.reason) if refused else None,
        )
        if refused is not None:
            extra = part(request, guardrail=refused.guardrail, reason=refused.reason)
            batch.events.append(EventIntent("remediation.skipped", inc.snapshot(), {"remediation": extra}))
        batch.remediations.append(request)
