"""remediation.yaml: which alerts may trigger which Kubernetes action, on which targets,
under which guardrails. Action parameters are validated by each action's own model
(``service.remediate.actions``) when the rules load."""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from service.roles import INCIDENT_COMMANDER, canonical
from service.ruleset.base import MatcherField, Strict, reject_duplicates
from service.ruleset.durations import Duration

# Lowest first: a policy can only lower the global mode, never raise it.
Mode = Literal["off", "dry-run", "enforce"]
TargetField = Literal["namespace", "deployment", "pod", "node"]


class ModeRank(IntEnum):
    off = 0
    dry_run = 1
    enforce = 2


def mode_rank(mode: Mode) -> ModeRank:
    return ModeRank[mode.replace("-", "_")]


def strictest(*modes: Mode) -> Mode:
    return min(modes, key=mode_rank)


# Kubernetes object names (DNS-1123 subdomain) and glob patterns over them.
_GLOB = re.compile(r"^[a-z0-9*?]([-a-z0-9.*?]*[a-z0-9*?])?$")


def _check_globs(values: list[str]) -> list[str]:
    for v in values:
        if not _GLOB.match(v) or len(v) > 253:
            raise ValueError(f"{v!r} is not a Kubernetes name or a glob over names (a-z, 0-9, -, ., *, ?)")
    return values


class Allowlist(Strict):
    """Where automation may act. Empty means nowhere: a target outside it is refused."""

    # namespace -> deployment names or globs ("*" = every deployment in that namespace)
    namespaces: dict[str, list[str]] = {}
    nodes: list[str] = []

    @field_validator("namespaces")
    @classmethod
    def _names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for ns, workloads in value.items():
            _check_globs([ns])
            if "*" in ns or "?" in ns:
                raise ValueError(f"namespace {ns!r}: give namespaces by name, not as a glob")
            if not workloads:
                raise ValueError(f"namespace {ns!r}: list the deployments allowed, or '*' for all")
            _check_globs(workloads)
        return value

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: list[str]) -> list[str]:
        return _check_globs(value)

    def allows_workload(self, namespace: str, name: str) -> bool:
        patterns = self.namespaces.get(namespace, [])
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def allows_node(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.nodes)


class RateLimit(Strict):
    max: int = Field(ge=1)
    per: Duration


# A role of contacts.yaml, under the runbook's spelling ("IC" is Incident Commander).
RoleName = Annotated[str, AfterValidator(canonical)]


class Approval(Strict):
    """Incidents of these severities wait for a person's approve/deny; silence denies.
    The ``approvers`` (roles in contacts.yaml) are paged with the request."""

    severities: list[str] = Field(min_length=1)
    timeout: Duration = timedelta(minutes=10)
    approvers: list[RoleName] = Field(default=[INCIDENT_COMMANDER], min_length=1)


class Verify(Strict):
    timeout: Duration = timedelta(minutes=10)
    # Recovery means the symptom is gone, not only that Kubernetes did what it was told.
    alert_resolved: bool = True


class Preconditions(Strict):
    # Act only if the workload's current revision rolled out this recently (the
    # runbook's "if recent change caused issue").
    changed_within: Duration | None = None


class Policy(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    action: str
    matchers: list[MatcherField] = Field(min_length=1)
    severities: list[str] = []
    mode: Mode = "dry-run"
    # Target field -> the alert label that names it. Labels only: annotations and
    # free text never choose what automation touches.
    target_labels: dict[TargetField, str] = {}
    params: dict[str, Any] = {}
    preconditions: Preconditions = Preconditions()
    cooldown: Duration | None = None
    rate_limit: RateLimit | None = None
    approval: Approval | None = None
    verify: Verify = Verify()

    def label_for(self, field: TargetField) -> str:
        return self.target_labels.get(field, field)


class RemediationFile(Strict):
    # Ceiling for every policy; INCIDENTD_REMEDIATION_MODE can lower it further.
    mode: Mode = "dry-run"
    cooldown: Duration = timedelta(minutes=30)
    budget_per_hour: int = Field(default=10, ge=0)
    # Who is paged when an action does not bring recovery (roles in contacts.yaml).
    page_roles: list[str] = Field(default=["DevOps"], min_length=1)
    allowlist: Allowlist = Allowlist()
    policies: list[Policy] = []

    @model_validator(mode="after")
    def _unique(self) -> RemediationFile:
        reject_duplicates([p.name for p in self.policies], "policy name used twice")
        return self

    def cooldown_for(self, policy: Policy) -> timedelta:
        return policy.cooldown if policy.cooldown is not None else self.cooldown
