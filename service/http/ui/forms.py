"""Form posts -> the same command models the API validates (nothing is checked twice
differently: a form is one more way to build an ``Ack``, an ``Assign``...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from service.escalate.commands import (
    Ack,
    AddActionItem,
    AddNote,
    Assign,
    Escalate,
    IncidentCommand,
    PostmortemDone,
    PostUpdate,
    Resolve,
    SetSeverity,
    SetStatus,
)
from service.http.bodies import BodyTooLarge, read_limited

MAX_FORM_BYTES = 64 * 1024
M = TypeVar("M", bound=BaseModel)

# The form name after /ui/incidents/{id}/ -> the command model and the form fields it takes.
INCIDENT_FORMS: dict[str, tuple[type[IncidentCommand], tuple[str, ...]]] = {
    "ack": (Ack, ()),
    "resolve": (Resolve, ("note",)),
    "assign": (Assign, ("role", "who")),
    "status": (SetStatus, ("phase", "root_cause", "eta")),
    "note": (AddNote, ("text",)),
    "update": (PostUpdate, ("text",)),
    "severity": (SetSeverity, ("severity", "reason")),
    "escalate": (Escalate, ("roles", "reason")),
    "action_item": (AddActionItem, ("item", "owner", "due")),
    "postmortem": (PostmortemDone, ("url",)),
}


class FormError(Exception):
    """A form the page answers with ``status`` and ``message`` (never a traceback)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Form:
    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str) -> str:
        """The first value, stripped ("" when absent)."""
        return (self._fields.get(name) or [""])[0].strip()

    def values(self, name: str) -> list[str]:
        """Every value of a repeated field, each split at commas, blanks dropped."""
        return [part.strip() for v in self._fields.get(name, []) for part in v.split(",") if part.strip()]


async def read_form(request: Request) -> Form:
    """An ``application/x-www-form-urlencoded`` body (what the board's forms send)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError(415, "expected a form (application/x-www-form-urlencoded)")
    try:
        raw = await read_limited(request, MAX_FORM_BYTES)
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=100)
    except BodyTooLarge:
        raise FormError(413, f"form larger than {MAX_FORM_BYTES} bytes") from None
    except ClientDisconnect:
        raise FormError(400, "client disconnected before the form was read") from None
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "the form is not valid UTF-8 form encoding") from None
    if any("\x00" in v for vs in fields.values() for v in vs):
        # Commands end up in the store, and PostgreSQL text cannot hold NUL.
        raise FormError(422, "a field contains a NUL character")
    return Form(fields)


def describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors())


def build(model: type[M], values: dict[str, object]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FormError(422, describe(exc)) from None


def incident_command(action: str, form: Form, who: str) -> IncidentCommand:
    """The command a form on an incident's page asks for, signed by the session's name."""
    if action not in INCIDENT_FORMS:
        raise FormError(404, f"no such form: {action}")
    model, names = INCIDENT_FORMS[action]
    values: dict[str, object] = {"by": who}
    for name in names:
        value: str | Sequence[str] = form.values(name) if name == "roles" else form.get(name)
        if value:  # an empty field is an absent one (the model's default)
            values[name] = value
    return build(model, values)
