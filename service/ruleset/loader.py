"""Load and cross-check a rules directory, collecting every problem with its location.

Every problem of every file is reported in one run: a file whose items do not all
validate is checked further with those items left out (``LocatedYaml.without``), so an
unknown role is reported alongside a bad duration rather than after it is fixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from service.ruleset.errors import RuleProblem, RulesError
from service.ruleset.known import Known, role_names, severity_names
from service.ruleset.models import (
    PAGER_NAMES,
    ClassifyFile,
    ContactsFile,
    EscalationFile,
    GroupingFile,
    RuleSet,
    SeveritiesFile,
    Templates,
)
from service.ruleset.noise import NoiseFile
from service.ruleset.remediation import RemediationFile
from service.ruleset.templating import TemplateError, compile_template
from service.ruleset.triage import TriageFile
from service.ruleset.yamlpos import START, LocatedYaml, Position, format_path, load_located

M = TypeVar("M", bound=BaseModel)
YamlPath = tuple[str | int, ...]
# A problem's location inside its file: the YAML path (empty: the whole file) and position.
Where = tuple[str, Position]
WHOLE_FILE: Where = ("", START)

TEMPLATE_FILES = {"incident": "incident.md.j2", "close_note": "close.md.j2", "update": "update.md.j2"}


class _Collector:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[RuleProblem] = []

    def name(self, path: Path) -> str:
        return str(path)

    def add(self, path: Path, where: Where, problem: str) -> None:
        location, at = where
        self.problems.append(RuleProblem(self.name(path), at.line, at.column, location, problem))

    def load(
        self, filename: str, model: type[M], *, optional: bool = False, keep: frozenset[str] | None = None
    ) -> tuple[M | None, LocatedYaml | None]:
        """Load and validate ``filename``. When it does not validate, the model of what does
        (items with problems left out, except under the top-level keys in ``keep``) is
        returned for the cross-file checks; the problems are already reported. ``keep=None``
        (files whose items other files name: leaving one out would make every reference to
        it unknown) returns None instead."""
        path = self.root / filename
        if optional and not path.exists():
            return model(), None
        text = self.read(path, "file is missing")
        if text is None:
            return None, None
        try:
            doc = load_located(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = Position(mark.line + 1, mark.column + 1) if mark else START
            self.add(path, ("", at), f"invalid YAML: {exc.problem or exc}")
            return None, None
        except yaml.YAMLError as exc:
            self.add(path, WHOLE_FILE, f"invalid YAML: {exc}")
            return None, None
        if not isinstance(doc.data, dict):
            self.add(path, WHOLE_FILE, "expected a mapping")
            return None, None
        parsed, _ = self.validate(path, doc, model, doc.data, ())
        if parsed is not None or keep is None:
            return parsed, doc
        return _salvage(doc, model, keep)

    def validate(
        self, path: Path, doc: LocatedYaml, model: type[M], data: Any, at: tuple[str | int, ...]
    ) -> tuple[M | None, LocatedYaml]:
        """Validate ``data`` (found at ``at`` inside ``doc``), reporting problems located."""
        try:
            return model.model_validate(data), doc
        except ValidationError as exc:
            for err in exc.errors():
                loc = at + tuple(p for p in err["loc"] if not _is_pydantic_tag(p))
                self.add(path, self.where(doc, loc), _message(err))
            return None, doc

    def read(self, path: Path, missing: str) -> str | None:
        """The file's text, or None with the problem reported (``missing`` if it is)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.add(path, WHOLE_FILE, missing)
            return None
        except OSError as exc:
            self.add(path, WHOLE_FILE, f"cannot read: {exc.strerror}")
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line_start = data.rfind(b"\n", 0, exc.start) + 1
            at = Position(data.count(b"\n", 0, exc.start) + 1, exc.start - line_start + 1)
            self.add(path, ("", at), f"not UTF-8 text: byte 0x{data[exc.start]:02x}")
            return None

    @staticmethod
    def where(doc: LocatedYaml, loc: YamlPath) -> Where:
        return format_path(doc.original(loc)), doc.position_of(loc)


def _salvage(doc: LocatedYaml, model: type[M], keep: frozenset[str]) -> tuple[M | None, LocatedYaml]:
    """``model`` of ``doc`` less each list item or mapping entry (under a top-level key) that
    has a problem; None when a problem is in no such item, or under a key in ``keep``."""
    for _ in range(3):  # leaving an item out can leave its parent too short, once or twice
        try:
            return model.model_validate(doc.data), doc
        except ValidationError as exc:
            drop = {_item(tuple(p for p in e["loc"] if not _is_pydantic_tag(p))) for e in exc.errors()}
        if any(not p or str(p[0]) in keep for p in drop):
            return None, doc
        doc = doc.without(drop)
    return None, doc


def _item(loc: YamlPath) -> YamlPath:
    return loc[:2]


def _is_pydantic_tag(part: Any) -> bool:
    # Union members show up in locations as type names; they mean nothing to a rule author.
    return isinstance(part, str) and part.startswith("function-")


def _message(err: Any) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def load_rules(root: Path | str) -> RuleSet:
    """Load ``root``; raise :class:`RulesError` listing every problem found."""
    root = Path(root)
    c = _Collector(root)
    if not root.is_dir():
        raise RulesError([RuleProblem(str(root), 1, 1, "", "rules directory does not exist")])
    sev, sev_doc = c.load("severities.yaml", SeveritiesFile)
    cls, cls_doc = c.load("classify.yaml", ClassifyFile, keep=frozenset())
    grp, _ = c.load("grouping.yaml", GroupingFile)
    esc, esc_doc = c.load("escalation.yaml", EscalationFile, keep=frozenset())
    contacts, contacts_doc = c.load("contacts.yaml", ContactsFile)
    # Optional: a rules directory without it has no remediation at all.
    remediation, rem_doc = c.load("remediation.yaml", RemediationFile, optional=True, keep=frozenset())
    # Optional: a rules directory without it runs no triage probes.
    triage, _ = c.load("triage.yaml", TriageFile, optional=True)
    # Optional: a rules directory without it has no windows, inhibition, thresholds or heartbeats.
    # Maintenance windows name the time intervals: those are never left out.
    noise, noise_doc = c.load("noise.yaml", NoiseFile, optional=True, keep=frozenset({"time_intervals"}))
    templates = _load_templates(c, root / "templates")
    if contacts and contacts_doc:
        _check_fallbacks(c, (root / "contacts.yaml", contacts_doc), contacts)
    known = Known(role_names(contacts, contacts_doc), severity_names(sev, sev_doc))
    if known.severities is not None and cls and cls_doc:
        _check_severity_refs(c, root / "classify.yaml", cls_doc, cls, known.severities)
    if esc and esc_doc:
        _check_escalation_refs(c, (root / "escalation.yaml", esc_doc), esc, known)
    params: dict[str, Any] = {}
    if remediation and rem_doc:
        params = check_remediation(c, (root / "remediation.yaml", rem_doc), remediation, known)
    if noise and noise_doc:
        _check_noise_refs(c, (root / "noise.yaml", noise_doc), noise, known)
    if c.problems or not (
        sev and cls and grp and templates and esc and contacts and remediation and triage and noise
    ):
        # In file order, as a compiler prints them, whichever check found them.
        raise RulesError(sorted(c.problems, key=lambda p: (p.file, p.line, p.column)))
    return RuleSet(
        severities={s.name: s for s in sev.severities},
        classify=cls,
        grouping=grp,
        templates=templates,
        escalation=esc,
        contacts=contacts,
        remediation=remediation,
        remediation_params=params,
        triage=triage,
        noise=noise,
    )


def check_remediation(
    c: _Collector, source: tuple[Path, LocatedYaml], rem: RemediationFile, known: Known
) -> dict[str, Any]:
    """Actions exist, their parameters validate against the action's own model, and every
    role, severity and target label makes sense for the action."""
    path, doc = source
    # Imported here: the actions bring in the Kubernetes client, which only this check needs.
    from service.remediate.actions.registry import ACTIONS

    for i, role in enumerate(rem.page_roles):
        if known.role_unknown(role):
            c.add(
                path,
                c.where(doc, ("page_roles", i)),
                f"unknown role {role!r}; contacts.yaml defines {known.roles_text()}",
            )
    _check_approvers(c, source, rem, known)
    params: dict[str, Any] = {}
    for i, policy in enumerate(rem.policies):
        at: tuple[str | int, ...] = ("policies", i)
        action = ACTIONS.get(policy.action)
        if action is None:
            c.add(
                path,
                c.where(doc, (*at, "action")),
                f"unknown action {policy.action!r}; one of {', '.join(ACTIONS)}",
            )
            continue
        parsed, _ = c.validate(path, doc, action.params_model, policy.params, (*at, "params"))
        if parsed is not None:
            params[policy.name] = parsed
        named: list[tuple[tuple[str | int, ...], str]] = [
            (("severities", j), n) for j, n in enumerate(policy.severities)
        ]
        if policy.approval:
            named += [(("approval", "severities", j), n) for j, n in enumerate(policy.approval.severities)]
        for where, name in named:
            if known.severity_unknown(name):
                c.add(path, c.where(doc, (*at, *where)), f"unknown severity {name!r}")
        fields = {"node"} if action.target_kind == "node" else {"namespace", "deployment", "pod"}
        for field in policy.target_labels:
            if field not in fields:
                c.add(
                    path,
                    c.where(doc, (*at, "target_labels", field)),
                    f"{policy.action} targets {'/'.join(sorted(fields))}, not {field}",
                )
        if policy.preconditions.changed_within is not None and action.target_kind != "deployment":
            c.add(
                path,
                c.where(doc, (*at, "preconditions", "changed_within")),
                f"only for deployment actions, not {policy.action}",
            )
    return params


def _check_approvers(
    c: _Collector, source: tuple[Path, LocatedYaml], rem: RemediationFile, known: Known
) -> None:
    """Approval pages go to roles contacts.yaml knows (a typo would page nobody)."""
    path, doc = source
    for i, policy in enumerate(rem.policies):
        for j, role in enumerate(policy.approval.approvers if policy.approval else []):
            if known.role_unknown(role):
                where = c.where(doc, ("policies", i, "approval", "approvers", j))
                c.add(path, where, f"unknown role {role!r}; contacts.yaml defines {known.roles_text()}")


def _check_fallbacks(c: _Collector, source: tuple[Path, LocatedYaml], contacts: ContactsFile) -> None:
    """Every ``fallback`` names a pager incidentd has (a typo would only show when a page fails)."""
    path, doc = source
    named: list[tuple[tuple[str | int, ...], str | None]] = [(("fallback",), contacts.fallback)]
    named += [(("roles", role, "fallback"), contact.fallback) for role, contact in contacts.roles.items()]
    for loc, name in named:
        if name is not None and name not in PAGER_NAMES:
            c.add(path, c.where(doc, loc), f"unknown pager {name!r}; one of {', '.join(PAGER_NAMES)}")


def _check_escalation_refs(
    c: _Collector, source: tuple[Path, LocatedYaml], esc: EscalationFile, known: Known
) -> None:
    """Every role must be in contacts.yaml, every severity in severities.yaml."""
    path, doc = source

    def role(loc: tuple[str | int, ...], name: str) -> None:
        if known.role_unknown(name):
            where = c.where(doc, loc)
            c.add(path, where, f"unknown role {name!r}; contacts.yaml defines {known.roles_text()}")

    for i, name in enumerate(esc.first_page):
        role(("first_page", i), name)
    for i, name in enumerate(esc.response_overdue):
        role(("response_overdue", i), name)
    for i, rule in enumerate(esc.rules):
        for j, name in enumerate(rule.roles):
            role(("rules", i, "roles", j), name)
        for j, name in enumerate(rule.severities):
            if known.severity_unknown(name):
                c.add(path, c.where(doc, ("rules", i, "severities", j)), f"unknown severity {name!r}")


def _check_severity_refs(
    c: _Collector, path: Path, doc: LocatedYaml, cls: ClassifyFile, known: set[str]
) -> None:
    def check(loc: tuple[str | int, ...], name: str) -> None:
        if name not in known:
            c.add(
                path,
                c.where(doc, loc),
                f"unknown severity {name!r}; severities.yaml defines {', '.join(sorted(known))}",
            )

    for i, rule in enumerate(cls.rules):
        check(("rules", i, "severity"), rule.severity)
    for label_value, name in cls.fallback.map.items():
        check(("fallback", "map", label_value), name)
    check(("default",), cls.default)


def _check_noise_refs(
    c: _Collector, source: tuple[Path, LocatedYaml], noise: NoiseFile, known: Known
) -> None:
    """Windows name defined time intervals; heartbeats open incidents of known severities."""
    path, doc = source
    intervals = {t.name for t in noise.time_intervals}
    for i, window in enumerate(noise.maintenance):
        for j, name in enumerate(window.time_intervals):
            if name not in intervals:
                defined = ", ".join(sorted(intervals)) or "none"
                where = c.where(doc, ("maintenance", i, "time_intervals", j))
                c.add(path, where, f"unknown time interval {name!r}; time_intervals defines {defined}")
    known_severities = ", ".join(sorted(known.severities or ()))
    for i, beat in enumerate(noise.heartbeats):
        if known.severity_unknown(beat.severity):
            where = c.where(doc, ("heartbeats", i, "severity"))
            c.add(
                path,
                where,
                f"unknown severity {beat.severity!r}; severities.yaml defines {known_severities}",
            )


def _load_templates(c: _Collector, folder: Path) -> Templates | None:
    compiled: dict[str, Any] = {}
    for key, filename in TEMPLATE_FILES.items():
        path = folder / filename
        text = c.read(path, "template file is missing")
        if text is None:
            continue
        try:
            compiled[key] = compile_template(text)
        except TemplateError as exc:
            c.add(path, ("", Position(exc.line, 1)), exc.message)
    if len(compiled) != len(TEMPLATE_FILES):
        return None
    return Templates(**compiled)
