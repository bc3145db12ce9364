"""What the rules files define that other files name: the severities of severities.yaml and
the roles of contacts.yaml, taken as written when their own file has a problem, so a bad
duration there does not hide (or cause) an "unknown severity" elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from service.roles import canonical
from service.ruleset.models import ContactsFile, SeveritiesFile
from service.ruleset.yamlpos import LocatedYaml


def severity_names(sev: SeveritiesFile | None, doc: LocatedYaml | None) -> set[str] | None:
    """The severities other files may name: as written, when severities.yaml has a problem
    (a severity with a bad duration still exists for the files that name it)."""
    if sev:
        return {s.name for s in sev.severities}
    items = doc.data.get("severities") if doc and isinstance(doc.data, dict) else None
    if not isinstance(items, list):
        return None
    return {i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)} or None


def role_names(contacts: ContactsFile | None, doc: LocatedYaml | None) -> set[str] | None:
    """The roles other files may name: as written (in the runbook's spelling), when
    contacts.yaml has a problem."""
    if contacts:
        return set(contacts.roles)
    roles = doc.data.get("roles") if doc and isinstance(doc.data, dict) else None
    if not isinstance(roles, dict):
        return None
    return {canonical(k) for k in roles if isinstance(k, str)} or None


@dataclass(frozen=True, slots=True)
class Known:
    """What other files may refer to: the roles of contacts.yaml, the severities."""

    roles: set[str] | None  # None: contacts.yaml did not load, so roles go unchecked
    severities: set[str] | None  # None: severities.yaml did not load

    def role_unknown(self, name: str) -> bool:
        return self.roles is not None and name not in self.roles

    def roles_text(self) -> str:
        return ", ".join(sorted(self.roles or ()))

    def severity_unknown(self, name: str) -> bool:
        return self.severities is not None and name not in self.severities
