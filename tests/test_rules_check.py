import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.ruleset import RulesError, load_rules


@pytest.fixture
def broken(tmp_path: Path, rules_dir: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(rules_dir, target)
    return target


def _problems(path: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(path)
    return [str(p) for p in info.value.problems]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_shipped_rules_are_valid(rules_dir: Path) -> None:
    load_rules(rules_dir)


def test_invalid_regex_is_reported_with_file_path_and_line(broken: Path) -> None:
    _edit(broken / "classify.yaml", 'alertname=~"DebateEngineFailure|AuthBroken"', 'alertname=~"(Auth"')
    [problem] = _problems(broken)
    assert problem.startswith(f"{broken / 'classify.yaml'}:9:16: rules[1].matchers[0]: ")
    assert "invalid regex" in problem


def test_unknown_severity_is_reported(broken: Path) -> None:
    _edit(broken / "classify.yaml", "severity: SEV-3\n", "severity: SEV-7\n")
    [problem] = _problems(broken)
    assert "classify.yaml:14:5: rules[2].severity: " in problem
    assert "unknown severity 'SEV-7'" in problem


def test_bad_duration_and_bad_severity_name_are_both_reported(broken: Path) -> None:
    _edit(broken / "severities.yaml", "response_time: 15m", "response_time: 15 minutes")
    _edit(broken / "grouping.yaml", "reopen_window: 30m", "reopen_window: 30")
    problems = _problems(broken)
    assert any(
        "severities.yaml:6:5: severities[0].response_time: " in p and "invalid duration" in p
        for p in problems
    )
    assert any("grouping.yaml:7:1: reopen_window: " in p and "needs a unit" in p for p in problems)


def test_yaml_syntax_error_names_line_and_column(broken: Path) -> None:
    (broken / "grouping.yaml").write_text("group_by: [alertname\nreopen_window: 30m\n")
    [problem] = _problems(broken)
    assert problem.startswith(f"{broken / 'grouping.yaml'}:2:14: ")
    assert "invalid YAML" in problem


def test_unknown_key_missing_file_and_template_error(broken: Path) -> None:
    _edit(broken / "grouping.yaml", "group_by:", "group_bye: [x]\ngroup_by:")
    (broken / "severities.yaml").unlink()
    (broken / "templates" / "incident.md.j2").write_text("[INCIDENT] {{ incident.severity \n")
    problems = _problems(broken)
    assert any("grouping.yaml:3:1: group_bye: Extra inputs are not permitted" in p for p in problems)
    assert f"{broken / 'severities.yaml'}:1:1: file is missing" in problems
    assert any("incident.md.j2:1:1: " in p for p in problems)


def test_unknown_fallback_pager_is_reported(broken: Path) -> None:
    _edit(broken / "contacts.yaml", "roles:\n", "fallback: pagerdooty\nroles:\n")
    _edit(
        broken / "contacts.yaml",
        "DevOps: {opsgenie: {team: devops}}",
        "DevOps: {opsgenie: {team: devops}, fallback: sms}",
    )
    problems = _problems(broken)
    assert len(problems) == 2
    assert problems[0].startswith(f"{broken / 'contacts.yaml'}:24:1: fallback: ")
    assert "unknown pager 'pagerdooty'; one of console, jsm, opsgenie, pagerduty, slack" in problems[0]
    assert problems[1].startswith(f"{broken / 'contacts.yaml'}:35:38: roles.DevOps.fallback: ")
    assert "unknown pager 'sms'" in problems[1]


def test_known_fallback_pagers_load(broken: Path) -> None:
    _edit(broken / "contacts.yaml", "roles:\n", "fallback: slack\nroles:\n")
    _edit(
        broken / "contacts.yaml",
        "DevOps: {opsgenie: {team: devops}}",
        "DevOps: {opsgenie: {team: devops}, fallback: pagerduty}",
    )
    contacts = load_rules(broken).contacts
    assert contacts.fallbacks_for(["DevOps", "Legal"]) == ["pagerduty", "slack"]
    assert contacts.fallback_pagers() == {"pagerduty", "slack"}


def test_cli_rules_check_exit_codes_and_format(broken: Path, rules_dir: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "service", "rules", "check", str(rules_dir)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok (4 severities" in ok.stdout

    _edit(broken / "classify.yaml", "default: SEV-3", "default: SEV-9")
    bad = subprocess.run(
        [sys.executable, "-m", "service", "rules", "check", str(broken)], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert f"{broken / 'classify.yaml'}:33:1: default: " in bad.stderr
    assert "Traceback" not in bad.stderr


def test_run_refuses_to_start_on_broken_rules_without_traceback(broken: Path, tmp_path: Path) -> None:
    _edit(broken / "classify.yaml", "default: SEV-3", "default: SEV-9")
    proc = subprocess.run(
        [sys.executable, "-m", "service", "run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"INCIDENTD_RULES_DIR": str(broken), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 1
    assert "rules are invalid, not starting" in proc.stderr
    assert "classify.yaml:33:1: default: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_escalation_until_is_checked(broken: Path) -> None:
    _edit(broken / "escalation.yaml", "    until: resolved\n", "    until: forever\n")
    _edit(
        broken / "escalation.yaml",
        "matchers: ['data_breach=~\"true|suspected\"']",
        "matchers: ['data_breach=~\"true|suspected\"']\n    until: acknowledged",
    )
    problems = _problems(broken)
    assert any(
        "escalation.yaml:16:5: rules[0].until: " in p and "'acknowledged' or 'resolved'" in p
        for p in problems
    )
    assert any(
        "escalation.yaml:21:5: rules[1]: " in p and "until applies to open_for and response_share" in p
        for p in problems
    )


def test_roles_in_the_matrix_take_the_runbook_spelling(broken: Path) -> None:
    _edit(broken / "escalation.yaml", "response_overdue: [Engineering Lead]", "response_overdue: [IC]")
    assert load_rules(broken).escalation.response_overdue == ["Incident Commander"]


def test_an_unknown_approver_role_is_reported(broken: Path) -> None:
    _edit(broken / "remediation.yaml", "approvers: [Incident Commander]", "approvers: [Incident Comander]")
    [problem] = _problems(broken)
    assert "remediation.yaml:39:19: policies[0].approval.approvers[0]: " in problem
    assert "unknown role 'Incident Comander'" in problem


def test_rules_check_reports_every_kind_of_problem_in_one_run(broken: Path) -> None:
    """YAML syntax, schema, bad regex, unknown severity and unknown roles (in a file whose
    other rule does not validate), each at its line:column, in one run of the CLI."""
    (broken / "grouping.yaml").write_text("group_by: [alertname\nreopen_window: 30m\n")
    _edit(broken / "classify.yaml", 'alertname=~"DebateEngineFailure|AuthBroken"', 'alertname=~"(Auth)\\\\1"')
    _edit(broken / "classify.yaml", "severity: SEV-3\n", "severity: SEV-7\n")
    _edit(broken / "escalation.yaml", "first_page: [DevOps]", "first_page: [DevOpz]")
    _edit(broken / "escalation.yaml", "open_for: 30m", "open_for: 30 minutes")
    _edit(broken / "escalation.yaml", "roles: [Security, Legal]", "roles: [Security, Legall]")
    (broken / "templates" / "close.md.j2").write_text("ok\n{% if x %}\n")
    run = subprocess.run(
        [sys.executable, "-m", "service", "rules", "check", str(broken)], capture_output=True, text=True
    )
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert lines[-1] == f"7 problem(s) in {broken}"
    c, e = broken / "classify.yaml", broken / "escalation.yaml"
    assert [line.split(": ", 2)[:2] for line in lines[:-1]] == [
        [f"{c}:9:16", "rules[1].matchers[0]"],
        [f"{c}:14:5", "rules[2].severity"],
        [f"{e}:4:14", "first_page[0]"],
        [f"{e}:15:5", "rules[0].open_for"],
        [f"{e}:23:23", "rules[1].roles[1]"],
        [f"{broken / 'grouping.yaml'}:2:14", "invalid YAML"],
        [
            f"{broken / 'templates' / 'close.md.j2'}:2:1",
            "Unexpected end of template. Jinja was looking for the following tags",
        ],
    ]
    assert "invalid escape sequence: \\1" in lines[0]
    assert "unknown severity 'SEV-7'" in lines[1]
    assert "unknown role 'DevOpz'" in lines[2] and "unknown role 'Legall'" in lines[4]
    assert "invalid duration '30 minutes'" in lines[3]
    assert "Traceback" not in run.stderr


def test_references_are_checked_even_when_the_files_they_name_have_problems(broken: Path) -> None:
    """A bad duration in severities.yaml and a bad contact in contacts.yaml do not hide an
    unknown severity or role elsewhere, and do not make the ones they define unknown."""
    _edit(broken / "severities.yaml", "response_time: 15m", "response_time: 15 minutes")
    _edit(broken / "contacts.yaml", "DevOps: {opsgenie: {team: devops}}", "DevOps: {opsgenie: {}}")
    _edit(broken / "classify.yaml", "severity: SEV-3\n", "severity: SEV-7\n")
    _edit(broken / "escalation.yaml", "roles: [Security, Legal]", "roles: [Security, Legall]")
    problems = _problems(broken)
    assert [p.split(": ", 2)[1] for p in problems] == [
        "rules[2].severity",
        "roles.DevOps.opsgenie",
        "rules[1].roles[1]",
        "severities[0].response_time",
    ], problems
    assert "unknown severity 'SEV-7'" in problems[0] and "unknown role 'Legall'" in problems[2]


def test_a_file_that_is_not_utf8_is_a_located_problem_not_a_traceback(broken: Path) -> None:
    (broken / "grouping.yaml").write_bytes(b"group_by: [alertname]\nreopen_window: 30m \xff\n")
    (broken / "templates" / "close.md.j2").write_bytes(b"\xfe")
    assert _problems(broken) == [
        f"{broken / 'grouping.yaml'}:2:20: not UTF-8 text: byte 0xff",
        f"{broken / 'templates' / 'close.md.j2'}:1:1: not UTF-8 text: byte 0xfe",
    ]
