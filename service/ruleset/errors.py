from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleProblem:
    file: str
    location: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.location}: {self.problem}"


class RulesError(Exception):
    """Every problem found in a rules directory, not just the first one."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
