"""What every rules model shares: strictness, matcher fields, duplicate checks."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from service.ruleset.matchers import Matcher

SEVERITY_NAME = re.compile(r"^SEV-[1-9]$")


def _matcher(value: object) -> object:
    if isinstance(value, str):
        return Matcher.parse(value)
    return value


MatcherField = Annotated[Matcher, BeforeValidator(_matcher), PlainSerializer(str, return_type=str)]


def reject_duplicates(names: list[str], problem: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{problem}: {', '.join(dupes)}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
