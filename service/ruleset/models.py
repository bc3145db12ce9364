"""Pydantic models for every rules file; validation here is what ``rules check`` reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from service.roles import canonical
from service.ruleset.base import SEVERITY_NAME, MatcherField, Strict, reject_duplicates
from service.ruleset.durations import Duration
from service.ruleset.noise import NoiseFile
from service.ruleset.remediation import RemediationFile
from service.ruleset.templating import TemplateField
from service.ruleset.triage import TriageFile

# A role as the matrix names it, under the runbook's spelling ("IC" is Incident Commander).
AnyRoleName = Annotated[str, AfterValidator(canonical)]


class Severity(Strict):
    name: str = Field(pattern=SEVERITY_NAME.pattern)
    description: str
    response_time: Duration
    follow_up: Duration | None = None
    # The runbook's "Schedule postmortem within 48 hours": after the incident resolves, the
    # Incident Commander is paged until the postmortem is marked done (None: no reminder).
    postmortem_due: Duration | None = None
    opsgenie_priority: str = Field(pattern=r"^P[1-5]$")
    # Opens a public incident on the status page (the `statuspage` pager) when one opens.
    status_page: bool = False
    # Its alerts skip the queue: the webhook sends them to the urgent topic, consumed apart
    # from the backlog of everything else (INCIDENTD_KAFKA_URGENT_TOPIC).
    urgent: bool = False
    examples: list[str] = []

    @property
    def rank(self) -> int:
        """1 for SEV-1: lower is more severe."""
        return int(self.name.split("-")[1])


class SeveritiesFile(Strict):
    severities: list[Severity] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SeveritiesFile:
        reject_duplicates([s.name for s in self.severities], "severity defined twice")
        return self


class ClassifyRule(Strict):
    name: str = Field(min_length=1)
    matchers: list[MatcherField] = Field(min_length=1)
    severity: str = Field(pattern=SEVERITY_NAME.pattern)
    title: TemplateField | None = None
    impact: TemplateField | None = None


class Fallback(Strict):
    label: str = "severity"
    map: dict[str, str] = {}


class ClassifyFile(Strict):
    rules: list[ClassifyRule] = []
    fallback: Fallback = Fallback()
    default: str = Field(pattern=SEVERITY_NAME.pattern)
    default_title: TemplateField | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> ClassifyFile:
        reject_duplicates([r.name for r in self.rules], "rule name used twice")
        return self


class GroupingFile(Strict):
    group_by: list[str] = Field(min_length=1)
    reopen_window: Duration = timedelta(minutes=30)

    @property
    def group_by_all(self) -> bool:
        # Alertmanager's '...' means "every label": one incident per distinct alert.
        return self.group_by == ["..."]


class EscalationRule(Strict):
    """One row of the matrix: exactly one trigger (open_for, matchers or response_share).

    ``until`` says what stops a timed rule: ``resolved`` (the runbook's "SEV-1 > 30 min"
    means unresolved, acknowledged or not; the default for ``open_for``) or
    ``acknowledged`` (the default for ``response_share``, a rule about the response).
    """

    # A page target (and ``backup:<name>``): the page table holds 128 characters.
    name: str = Field(min_length=1, max_length=100)
    roles: list[AnyRoleName] = Field(min_length=1)
    severities: list[str] = []
    open_for: Duration | None = None
    matchers: list[MatcherField] = []
    response_share: float | None = Field(default=None, gt=0, lt=1)
    until: Literal["acknowledged", "resolved"] | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> EscalationRule:
        triggers = [self.open_for is not None, bool(self.matchers), self.response_share is not None]
        if sum(triggers) != 1:
            raise ValueError("give exactly one of open_for, matchers or response_share")
        if self.matchers and self.until is not None:
            raise ValueError("until applies to open_for and response_share rules, not to matchers")
        return self

    @property
    def kind(self) -> str:
        if self.open_for is not None:
            return "time"
        return "condition" if self.matchers else "sla"

    @property
    def stops_on(self) -> str:
        """What ends this rule's wait: ``acknowledged`` or ``resolved``."""
        if self.until is not None:
            return self.until
        return "resolved" if self.open_for is not None else "acknowledged"


class EscalationFile(Strict):
    first_page: list[AnyRoleName] = Field(min_length=1)
    response_overdue: list[AnyRoleName] = []
    rules: list[EscalationRule] = []

    @model_validator(mode="after")
    def _unique_names(self) -> EscalationFile:
        reject_duplicates([r.name for r in self.rules], "rule name used twice")
        return self


class OpsgenieContact(Strict):
    team: str | None = None
    user: str | None = None
    escalation: str | None = None
    schedule: str | None = None

    @model_validator(mode="after")
    def _one(self) -> OpsgenieContact:
        if sum(v is not None for v in (self.team, self.user, self.escalation, self.schedule)) != 1:
            raise ValueError("give exactly one of team, user, escalation or schedule")
        return self

    def responder(self) -> dict[str, str]:
        for kind in ("team", "user", "escalation", "schedule"):
            value = getattr(self, kind)
            if value is not None:
                return {"type": kind, ("username" if kind == "user" else "name"): value}
        raise AssertionError("validated to have one")


class PagerDutyContact(Strict):
    routing_key: str = Field(min_length=1)


class SlackContact(Strict):
    mention: str = Field(min_length=1)


# The pager names of INCIDENTD_PAGERS, which contacts.yaml's ``fallback`` may name. Kept here,
# not read from notify/registry.py: the rules must load without the pager clients (notify
# imports the ruleset, never the other way round); the registry refuses to import if the two
# ever disagree.
PAGER_NAMES = ("console", "jsm", "opsgenie", "pagerduty", "slack")
# The follow-ups of INCIDENTD_PAGERS (a Jira ticket, a Statuspage incident): they reach no
# one, so contacts.yaml may not name them as a fallback.
FOLLOW_UP_NAMES = ("jira", "statuspage")

# One pager's contact for a role or a person.
PagerContact = OpsgenieContact | PagerDutyContact | SlackContact


class Reach(Strict):
    """How to reach someone on each pager that routes to people (console reaches everyone)."""

    opsgenie: OpsgenieContact | None = None
    # Jira Service Management Ops: Opsgenie's responders; without one, the opsgenie contact
    # (teams, users and schedules keep their names when Opsgenie moves to JSM).
    jsm: OpsgenieContact | None = None
    pagerduty: PagerDutyContact | None = None
    slack: SlackContact | None = None

    def on(self, pager: str) -> PagerContact | None:
        """The contact for ``pager``; None for a pager with none (or no contact model)."""
        value = getattr(self, pager, None) if pager in Reach.model_fields else None
        if pager == "jsm" and value is None:
            value = self.opsgenie
        return value if isinstance(value, OpsgenieContact | PagerDutyContact | SlackContact) else None


class Contact(Reach):
    # The pager a trigger for this role fails over to while its own pager keeps failing.
    fallback: str | None = None
    # Who is paged when a page to this role goes unacknowledged for ``backup_after``.
    backup: Reach | None = None
    backup_after: Duration | None = None

    @model_validator(mode="after")
    def _backup_after_needs_backup(self) -> Contact:
        if self.backup_after is not None and self.backup is None:
            raise ValueError("backup_after without a backup contact")
        return self


def _canonical_roles(value: object) -> object:
    """Role keys under the runbook's names (``IC:`` is Incident Commander); two keys for
    one role are refused."""
    if not isinstance(value, dict):
        return value
    out: dict[str, object] = {}
    spelt: dict[str, object] = {}
    for key, contact in value.items():
        name = canonical(key) if isinstance(key, str) else key
        if name in out:
            raise ValueError(f"role {name!r} listed twice, as {spelt[name]!r} and {key!r}")
        out[name], spelt[name] = contact, key
    return out


class ContactsFile(Strict):
    roles: Annotated[dict[str, Contact], BeforeValidator(_canonical_roles)] = Field(min_length=1)
    # The fallback pager of every role that names none of its own.
    fallback: str | None = None
    # How long a page waits for an acknowledgement before a role's backup is paged, for
    # every role with a backup that sets no ``backup_after`` of its own.
    backup_after: Duration = timedelta(minutes=10)
    # Person name -> how to reach them: a role's holder is paged when assigned.
    people: dict[str, Reach] = {}

    def fallbacks_for(self, roles: Sequence[str]) -> list[str]:
        """The pagers a page for ``roles`` fails over to: each role's own, else the global
        one (also for a page with no roles, or a role contacts.yaml does not list)."""
        if not roles:
            return [self.fallback] if self.fallback is not None else []
        found: list[str] = []
        for role in roles:
            contact = self.roles.get(role)
            name = contact.fallback if contact is not None and contact.fallback else self.fallback
            if name is not None and name not in found:
                found.append(name)
        return found

    def fallback_pagers(self) -> set[str]:
        """Every pager named as a fallback: the notifiers to build for failover."""
        named = {c.fallback for c in self.roles.values()} | {self.fallback}
        return {name for name in named if name is not None}

    def backup(self, role: str, pager: str) -> PagerContact | None:
        """The role's backup contact on ``pager``, if it has one."""
        contact = self.roles.get(role)
        return contact.backup.on(pager) if contact is not None and contact.backup is not None else None

    def backup_after_for(self, role: str) -> timedelta:
        contact = self.roles.get(role)
        own = contact.backup_after if contact is not None else None
        return own if own is not None else self.backup_after

    def person(self, name: str) -> Reach | None:
        """A person's contacts by name (exactly as listed, else ignoring case)."""
        found = self.people.get(name)
        if found is not None:
            return found
        folded = name.strip().casefold()
        return next((r for n, r in self.people.items() if n.casefold() == folded), None)


class Templates(Strict):
    incident: TemplateField
    close_note: TemplateField
    update: TemplateField


class RuleSet(Strict):
    """The validated, ready-to-use rules of one directory."""

    severities: dict[str, Severity]
    classify: ClassifyFile
    grouping: GroupingFile
    templates: Templates
    escalation: EscalationFile
    contacts: ContactsFile
    remediation: RemediationFile = RemediationFile()
    # Policy name -> its action's validated parameters (the action's own pydantic model).
    remediation_params: dict[str, Any] = {}
    # triage.yaml (optional): the probes run when an incident opens.
    triage: TriageFile = TriageFile()
    # noise.yaml (optional): maintenance windows, inhibition, flapping, thresholds, heartbeats.
    noise: NoiseFile = NoiseFile()

    def severity(self, name: str) -> Severity:
        return self.severities[name]
