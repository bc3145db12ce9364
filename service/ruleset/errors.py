from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleProblem:
    """One problem, printed ``file:line:column: location: problem`` as compilers print
    theirs, so editors jump to it and CI annotates the line. ``location`` is the path inside
    the YAML document (``rules[1].matchers[0]``), empty for a problem with the whole file."""

    file: str
    line: int
    column: int
    location: str
    problem: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.problem}"


class RulesError(Exception):
    """Every problem found in a rules directory, not just the first one."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
