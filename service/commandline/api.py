"""A client of the incident API for ``incidentd incidents``: typed rows in, one error type out.

The server's JSON is kept byte for byte for ``--json`` (a script gets what the API says,
fields added later included); the table reads the typed rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from service.commandline.exits import Exit

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Incident(BaseModel):
    """The snapshot fields a person reads; the others stay in ``--json``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    title: str
    severity: str
    status: str
    phase: str
    opened_at: str
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    resolved_at: str | None = None
    roles: dict[str, str] = {}
    impact: str | None = None
    response_due_at: str | None = None


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    at: str
    type: str
    summary: str


class Page(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    integration: str
    action: str
    status: str
    attempts: int
    last_error: str | None = None


class Detail(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    incident: Incident
    timeline: list[TimelineEntry] = []
    pages: list[Page] = []


class _List(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    incidents: list[Incident]


class _One(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    incident: Incident


class ApiError(Exception):
    """One line for the person, and the exit code it means."""

    def __init__(self, message: str, code: Exit) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    value: T
    body: str  # the server's JSON, for --json


class IncidentApi:
    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self._url = url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self._url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def list(self, filters: Mapping[str, str]) -> Answer[list[Incident]]:
        answer = self._call("GET", "/api/v1/incidents", params=dict(filters))
        return Answer(_parse(_List, answer).incidents, answer.text)

    def show(self, incident_id: str) -> Answer[Detail]:
        answer = self._call("GET", f"/api/v1/incidents/{_segment(incident_id)}")
        return Answer(_parse(Detail, answer), answer.text)

    def command(self, incident_id: str, command: str, body: Mapping[str, str]) -> Answer[Incident]:
        path = f"/api/v1/incidents/{_segment(incident_id)}/{command}"
        answer = self._call("POST", path, json=dict(body))
        return Answer(_parse(_One, answer).incident, answer.text)

    def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: object = None
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, params=params, json=json)
        except httpx.TimeoutException:
            raise ApiError(f"{self._url} did not answer in time", Exit.UNREACHABLE) from None
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self._url}: {_reason(exc)}", Exit.UNREACHABLE) from None
        if response.is_success:
            return response
        code = Exit.UNAUTHORIZED if response.status_code == 401 else Exit.PROBLEMS
        hint = " (set --token or INCIDENTD_WEBHOOK_TOKEN)" if response.status_code == 401 else ""
        raise ApiError(f"{response.status_code} from {method} {path}: {_error_text(response)}{hint}", code)


def _segment(incident_id: str) -> str:
    # An id is one path segment: "a/b" or ".." must not reach another route.
    return quote(incident_id, safe="")


def _parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise ApiError(
            f"unexpected answer from {response.request.url}: {response.text[:200]}", Exit.PROBLEMS
        ) from None


def _error_text(response: httpx.Response) -> str:
    try:
        doc = json.loads(response.content)
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return response.text[:200]
    details = doc.get("details")
    parts = [_detail(d) for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    return str(doc["error"]) + "".join(f"; {p}" for p in parts)


def _detail(detail: dict[str, object]) -> str:
    # The API sends "loc" as "role" or "roles.IC"; lists too, from other validators.
    loc = detail.get("loc")
    where = ".".join(str(p) for p in loc) if isinstance(loc, list) else str(loc or "")
    return f"{where}: {detail.get('msg')}" if where else str(detail.get("msg"))


def _reason(exc: httpx.TransportError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or (str(cause) if cause else "") or exc.__class__.__name__
    return text.splitlines()[0]
