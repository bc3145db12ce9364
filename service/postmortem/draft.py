"""The postmortem draft, in the runbook's template ("Postmortem Template"), built from what
incidentd recorded: the incident as it is now, its timeline (one line per event: alerts,
severity changes, pages, escalations, acknowledgements, what people set, [UPDATE]s,
remediation audit), its page jobs and remediation jobs.

A pure function of those: no I/O, no clock. The outbox keeps no event after it is
published, so the timeline's one-line summaries are what there is of each event; what
only a person knows (users affected in numbers, revenue, lessons) is left as a marked
placeholder to fill in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from service.models import Incident
from service.roles import INCIDENT_COMMANDER
from service.ruleset.models import RuleSet
from service.store.outbox import TimelineItem
from service.store.pages import PageView
from service.store.remediations import RemediationJob

FILL_IN = "_(to fill in)_"


def render(
    inc: Incident,
    timeline: Sequence[TimelineItem],
    pages: Sequence[PageView],
    remediations: Sequence[RemediationJob],
    rules: RuleSet | None = None,
) -> str:
    """The postmortem draft of ``inc`` as markdown."""
    sections = [
        _header(inc, rules),
        _summary(inc, rules),
        _timeline(inc, timeline),
        _root_cause(inc),
        _impact(inc, pages, remediations, rules),
        _action_items(inc),
        _lessons(),
    ]
    return "\n\n".join(sections) + "\n"


def postmortem_due_at(inc: Incident, rules: RuleSet | None) -> datetime | None:
    sev = rules.severities.get(inc.severity) if rules is not None else None
    if sev is None or sev.postmortem_due is None or inc.resolved_at is None:
        return None
    return inc.resolved_at + sev.postmortem_due


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def _hhmm(at: datetime, day: date) -> str:
    """HH:MM, with the date in front when it is not the incident's first day."""
    at = _utc(at)
    return at.strftime("%H:%M") if at.date() == day else at.strftime("%Y-%m-%d %H:%M")


def _stamp(at: datetime) -> str:
    return _utc(at).strftime("%Y-%m-%d %H:%M UTC")


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _cell(text: str) -> str:
    """Safe in a markdown table cell: one line, no column breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def _header(inc: Incident, rules: RuleSet | None) -> str:
    if inc.resolved_at is not None:
        duration = (
            f"{_minutes(inc.resolved_at - inc.opened_at)} minutes "
            f"({_stamp(inc.opened_at)} to {_stamp(inc.resolved_at)})"
        )
    else:
        duration = f"ongoing (opened {_stamp(inc.opened_at)})"
    ic = inc.roles.get(INCIDENT_COMMANDER)
    lines = [
        f"## Incident: {inc.title}",
        f"**Date:** {_utc(inc.opened_at).date().isoformat()}",
        f"**Duration:** {duration}",
        f"**Severity:** {inc.severity}",
        f"**IC:** {ic if ic else '(not assigned)'}",
        f"**Postmortem:** {_postmortem_status(inc, rules)}",
        "",
        f"_Draft from incidentd's record of incident {inc.id}; the placeholders are for people to fill in._",
    ]
    return "\n".join(lines)


def _postmortem_status(inc: Incident, rules: RuleSet | None) -> str:
    done = inc.postmortem_done
    if done is not None:
        at = done.get("at") or "?"
        url = f" ({done['url']})" if done.get("url") else ""
        return f"done by {done.get('by')} at {at}{url}"
    due = postmortem_due_at(inc, rules)
    if due is not None:
        return f"due by {_stamp(due)}"
    return "not marked done"


def _summary(inc: Incident, rules: RuleSet | None) -> str:
    sev = rules.severities.get(inc.severity) if rules is not None else None
    what = f"{inc.severity} ({sev.description})" if sev is not None else inc.severity
    if inc.declared_by:
        cause = f"declared by {inc.declared_by}"
    else:
        names = sorted({a.alertname for a in inc.alerts.values()})
        cause = f"opened by alert {', '.join(names)}" if names else "opened by an alert"
    sentences = [f"{what} incident {inc.id}, {cause} at {_stamp(inc.opened_at)}."]
    if inc.impact:
        sentences.append(f"Impact: {inc.impact.rstrip('.')}.")
    if inc.acknowledged_at is not None:
        after = _minutes(inc.acknowledged_at - inc.opened_at)
        sentences.append(
            f"Acknowledged by {inc.acknowledged_by or 'unknown'} at {_stamp(inc.acknowledged_at)}, "
            f"{after} minutes after it opened."
        )
    else:
        sentences.append("Nobody acknowledged it.")
    if inc.opening > 1:
        sentences.append(f"It reopened {inc.opening - 1} time(s).")
    if inc.root_cause:
        sentences.append(f"Root cause: {inc.root_cause.rstrip('.')}.")
    if inc.resolved_at is not None:
        took = _minutes(inc.resolved_at - inc.opened_at)
        sentences.append(f"Resolved at {_stamp(inc.resolved_at)} after {took} minutes.")
    else:
        sentences.append(f"Still open (status: {inc.phase.value}).")
    return "### Summary\n" + " ".join(sentences)


def _timeline(inc: Incident, timeline: Sequence[TimelineItem]) -> str:
    day = _utc(inc.opened_at).date()
    rows = ["### Timeline", "| Time | Event |", "|------|-------|"]
    for t in timeline:
        rows.append(f"| {_hhmm(t.at, day)} | {_cell(f'{t.type}: {t.summary}')} |")
    if not timeline:
        rows.append("| | _(no events recorded)_ |")
    return "\n".join(rows)


def _root_cause(inc: Incident) -> str:
    if inc.root_cause:
        body = inc.root_cause
    else:
        body = f"{FILL_IN} (not recorded: no one set a root cause on the incident)"
    return f"### Root Cause\n{body}"


def _sla(inc: Incident, rules: RuleSet | None) -> str:
    sev = rules.severities.get(inc.severity) if rules is not None else None
    limit = f"{inc.severity} response time {_minutes(sev.response_time)} min, " if sev is not None else ""
    due = f"{limit}due {_stamp(inc.response_due_at)}"
    met = inc.response_met
    if met is None:
        return f"undecided (not acknowledged yet; {due})"
    if inc.acknowledged_at is not None:
        answered = f"acknowledged {_stamp(inc.acknowledged_at)}"
    else:
        answered = f"never acknowledged, resolved {_stamp(inc.resolved_at or inc.response_due_at)}"
    return f"{'no' if met else 'yes'}: response time {'met' if met else 'missed'} ({answered}; {due})"


def _impact(
    inc: Incident,
    pages: Sequence[PageView],
    remediations: Sequence[RemediationJob],
    rules: RuleSet | None,
) -> str:
    users = f"{FILL_IN} (recorded impact: {inc.impact})" if inc.impact else FILL_IN
    lines = [
        "### Impact",
        f"- Users affected: {users}",
        f"- Revenue impact: {FILL_IN} (if applicable)",
        f"- SLA impact: {_sla(inc, rules)}",
        f"- Alerts: {_alerts(inc)}",
        f"- Pages: {_pages(pages)}",
        f"- Escalations: {_escalations(inc)}",
        f"- Remediation: {_remediations(remediations)}",
    ]
    return "\n".join(lines)


def _alerts(inc: Incident) -> str:
    if not inc.alerts:
        return "none (declared by hand)"
    names = Counter(a.alertname for a in inc.alerts.values())
    firing = len(inc.firing)
    listed = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(names.items()))
    return f"{len(inc.alerts)} ({listed}); {firing} still firing"


def _pages(pages: Sequence[PageView]) -> str:
    triggers = [p for p in pages if p.action == "trigger"]
    if not triggers:
        return "none"
    status = Counter(p.status for p in triggers)
    targets = list(dict.fromkeys(p.target for p in triggers))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
    return f"{len(triggers)} trigger(s) ({counts}) for {', '.join(targets)}"


def _escalations(inc: Incident) -> str:
    if not inc.escalations:
        return "none"
    day = _utc(inc.opened_at).date()
    fired = sorted(inc.escalations.items(), key=lambda kv: kv[1])
    return ", ".join(
        f"{key.partition(':')[2]} at {_hhmm(datetime.fromisoformat(at), day)}" for key, at in fired
    )


def _remediations(jobs: Sequence[RemediationJob]) -> str:
    if not jobs:
        return "none"
    parts = []
    for j in jobs:
        target = j.target.key if j.target is not None else j.target_key
        why = f", {j.guardrail}: {j.reason}" if j.guardrail else (f": {j.reason}" if j.reason else "")
        parts.append(f"{j.action} {target} ({j.mode}, {j.status}{why})")
    return "; ".join(parts)


def _action_items(inc: Incident) -> str:
    rows = ["### Action Items", "| Item | Owner | Due Date |", "|------|-------|----------|"]
    for a in inc.action_items:
        owner = f"@{a['owner']}" if a.get("owner") else "_(unassigned)_"
        rows.append(f"| {_cell(a['item'] or '')} | {_cell(owner)} | {a.get('due') or '_(none)_'} |")
    if not inc.action_items:
        rows.append(f"| {FILL_IN} | | |")
    return "\n".join(rows)


def _lessons() -> str:
    return "\n".join(
        [
            "### Lessons Learned",
            f"- What went well: {FILL_IN}",
            f"- What could improve: {FILL_IN}",
        ]
    )
