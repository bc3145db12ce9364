"""The runbook's role vocabulary, one spelling everywhere: API, contacts.yaml, templates.

The runbook names the roles "Incident Commander", "Communications" and "Technical
Lead", and contacts.yaml uses those names; the short forms people type ("IC", "Comms",
"TL") are accepted wherever a role is named and stored under the full name.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

INCIDENT_COMMANDER = "Incident Commander"
COMMUNICATIONS = "Communications"
TECHNICAL_LEAD = "Technical Lead"
# The roles an incident's people are assigned to (the runbook's checklist step 3).
ASSIGNABLE = (INCIDENT_COMMANDER, COMMUNICATIONS, TECHNICAL_LEAD)
ALIASES = {"IC": INCIDENT_COMMANDER, "Comms": COMMUNICATIONS, "TL": TECHNICAL_LEAD}


def canonical(role: str) -> str:
    """The runbook's name for ``role`` (an alias, any case of a runbook role)."""
    stripped = role.strip()
    if stripped in ALIASES:
        return ALIASES[stripped]
    for name in ASSIGNABLE:
        if stripped.casefold() == name.casefold():
            return name
    for alias, name in ALIASES.items():
        if stripped.casefold() == alias.casefold():
            return name
    return stripped


def _assignable(role: str) -> str:
    name = canonical(role)
    if name not in ASSIGNABLE:
        known = ", ".join(ASSIGNABLE)
        raise ValueError(f"role must be one of {known} (or IC, Comms, TL); got {role!r}")
    return name


# A role an incident's person holds: canonicalised, one of ASSIGNABLE.
AssignableRole = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_assignable)]
# Any role of the escalation matrix or contacts.yaml (checked against them by the handler).
AnyRole = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(canonical)]
