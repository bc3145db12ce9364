"""A follow-up ticket in Jira when an incident is resolved (Jira REST API v2, httpx).

Jira acts on the close only (``close_only``: the page worker sends it the close of an
opening even though no trigger went to Jira). One ticket per incident opening: the issue
carries the label ``incidentd-<digest>`` (the opening's idempotency key), and before
creating, a JQL search for that label returns the ticket a previous attempt created, so a
retry after a lost answer never opens a second one.

Create: ``POST /rest/api/2/issue`` with ``fields``: ``project.key``, ``issuetype.name``,
``summary``, ``description`` (plain text: v2 takes a string, v3 wants ADF) and ``labels``.

An action item added after the resolve (the usual flow: the postmortem names them) reaches
the ticket as a comment (``POST /rest/api/2/issue/{key}/comment``), once: the comment ends
with the item's own idempotency key, and before posting, the issue's comments are read for
it (``GET .../comment``), so a retry after a lost answer never comments twice. An item the
description already lists (the ticket was filed after it was added) gets no comment; with no
ticket yet (its create still retrying), the comment waits and tries again.
Search: ``GET /rest/api/2/search/jql`` (Jira Cloud; the older ``/rest/api/2/search`` is
gone there), falling back to ``/rest/api/2/search`` on a 404 (Jira Data Center).
Auth: basic, the account's email and an API token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx

from service.batch import ACTION_ITEM
from service.config import Settings
from service.models import PageAction
from service.notify.base import PageError, PageRequest, idempotency_key
from service.notify.http import call, json_object, refused
from service.roles import INCIDENT_COMMANDER
from service.ruleset.durations import format_duration

SUMMARY_LIMIT = 255  # Jira's limit on the summary field
SEARCH_PATHS = ("/rest/api/2/search/jql", "/rest/api/2/search")


class JiraNotifier:
    name = "jira"
    comms = False
    # Acts on the close of an opening only; the page worker sends it no trigger or ack.
    close_only = True

    def __init__(
        self,
        url: str,
        auth: tuple[str, str],
        project: str,
        issue_type: str = "Task",
        timeout: float = 10.0,
    ) -> None:
        """``auth``: the account's email and API token (basic auth)."""
        email, api_token = auth
        for what, value in (("URL", url), ("email", email), ("API token", api_token), ("project", project)):
            if not value.strip():
                raise ValueError(f"pager 'jira' needs a non-empty {what}")
        self._url = url.rstrip("/")
        self._project = project.strip()
        self._issue_type = issue_type.strip() or "Task"
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, auth=httpx.BasicAuth(email.strip(), api_token.strip())
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> JiraNotifier:
        missing = [
            variable
            for variable, value in (
                ("INCIDENTD_JIRA_URL", settings.jira_url),
                ("INCIDENTD_JIRA_EMAIL", settings.jira_email),
                ("INCIDENTD_JIRA_API_TOKEN or INCIDENTD_JIRA_API_TOKEN_FILE", settings.jira_api_token),
                ("INCIDENTD_JIRA_PROJECT", settings.jira_project),
            )
            if value is None
        ]
        if missing:
            raise ValueError(f"pager 'jira' needs {', '.join(missing)}")
        assert settings.jira_api_token is not None  # for mypy: checked above
        return cls(
            settings.jira_url or "",
            (settings.jira_email or "", settings.jira_api_token.get_secret_value()),
            settings.jira_project or "",
            settings.jira_issue_type,
            settings.jira_timeout_seconds,
        )

    # How long a retry after a failed create waits at least: Jira Cloud's search sees a new
    # issue within seconds, so a create that happened despite a lost answer is found first.
    create_retry_seconds = 30.0

    async def send(self, request: PageRequest) -> str | None:
        if request.action is PageAction.UPDATE and request.target.startswith(ACTION_ITEM):
            return await self._comment(request)
        if request.action is not PageAction.CLOSE or request.target != "first":
            return None  # one ticket per opening, when it is resolved
        label = label_for(request.idempotency_key)
        existing = await self._find(label)
        if existing is not None:
            return str(existing.get("key") or existing.get("id"))
        try:
            resp = await self._call("POST", "/rest/api/2/issue", json={"fields": self.fields(request)})
        except PageError as exc:
            if exc.retryable and self.create_retry_seconds > 0:
                # The issue may exist though its answer was lost, and Jira Cloud's search is
                # eventually consistent: the retry waits until the search would see it.
                exc.retry_after = max(exc.retry_after or 0.0, self.create_retry_seconds)
            raise
        body = json_object(resp)
        return str(body.get("key") or body.get("id") or "")

    def fields(self, request: PageRequest) -> dict[str, Any]:
        inc = request.incident
        summary = f"[INCIDENT] {inc['severity']}: {inc['title']} ({inc['id']})"
        return {
            "project": {"key": self._project},
            "issuetype": {"name": self._issue_type},
            "summary": summary[:SUMMARY_LIMIT],
            "description": describe(inc),
            "labels": ["incidentd", label_for(request.idempotency_key)],
        }

    async def _comment(self, request: PageRequest) -> str:
        """The action item as a comment on the opening's ticket, once; the issue's key."""
        ticket = label_for(idempotency_key(request.incident_id, request.opening))
        issue = await self._find(ticket, "summary,description")
        if issue is None:
            # Filed at the resolve, by a job of its own that may still be retrying.
            reason = f"no Jira issue labelled {ticket} yet to add the action item to"
            raise PageError(reason, retryable=True, retry_after=self.create_retry_seconds or None)
        key = str(issue.get("key") or issue.get("id"))
        line = item_line(_action_item(request))
        fields = issue.get("fields")
        description = fields.get("description") if isinstance(fields, dict) else None
        if isinstance(description, str) and line in description.splitlines():
            return key  # filed after the item was added: the description lists it
        marker = f"({request.idempotency_key})"
        path = f"/rest/api/2/issue/{quote(key, safe='')}/comment"
        listed = json_object(await self._call("GET", path, params={"maxResults": "1000"})).get("comments")
        if any(isinstance(c, dict) and marker in str(c.get("body")) for c in listed or []):
            return key  # a previous attempt commented, though its answer was lost
        body = f"Action item added after the incident was resolved:\n{line}\n\n{marker}"
        await self._call("POST", path, json={"body": body})
        return key

    async def _find(self, label: str, fields: str = "summary") -> dict[str, Any] | None:
        """The issue that carries ``label`` (key, id and ``fields``), if one was created."""
        params = {"jql": f'labels = "{label}"', "fields": fields, "maxResults": "1"}
        for path in SEARCH_PATHS:
            resp = await self._call("GET", path, params=params, missing_ok=path != SEARCH_PATHS[-1])
            if resp.status_code == 404:
                continue
            issues = json_object(resp).get("issues")
            if isinstance(issues, list) and issues and isinstance(issues[0], dict):
                return issues[0]
            return None
        return None

    async def _call(self, method: str, path: str, *, missing_ok: bool = False, **kw: Any) -> httpx.Response:
        resp = await call(self._client, "jira", method, self._url + path, **kw)
        if resp.is_success or (missing_ok and resp.status_code == 404):
            return resp
        body = json_object(resp)
        messages = body.get("errorMessages")
        errors = body.get("errors")
        detail = "; ".join(str(m) for m in messages) if isinstance(messages, list) else ""
        if isinstance(errors, dict) and errors:
            detail = "; ".join([detail, *(f"{k}: {v}" for k, v in errors.items())]).strip("; ")
        raise refused("jira", resp, detail, f" to {method} {path}")

    async def aclose(self) -> None:
        await self._client.aclose()


def label_for(key: str) -> str:
    """The ticket's own label: the opening's idempotency key (``incidentd-<digest>``)."""
    return key if key.startswith("incidentd-") else f"incidentd-{key}"


def describe(inc: dict[str, Any]) -> str:
    """The incident summary and its action items, as the ticket's description."""
    lines = [
        f"Incident {inc['id']}: {inc['title']}",
        "",
        f"Severity: {inc['severity']}",
        f"Opened: {inc.get('opened_at')}",
        f"Resolved: {inc.get('resolved_at') or 'not yet'}",
        f"Duration: {_duration(inc)}",
    ]
    met = inc.get("response_met")
    if met is not None:
        lines.append(f"Response time: {'met' if met else 'missed'}")
    if inc.get("impact"):
        lines.append(f"Impact: {inc['impact']}")
    lines.append(f"Root cause: {inc.get('root_cause') or 'not recorded'}")
    roles = inc.get("roles") or {}
    lines.append(f"Incident Commander: {roles.get(INCIDENT_COMMANDER) or 'not assigned'}")
    items = inc.get("action_items") or []
    lines += ["", "Action items:"]
    if not items:
        lines.append("- none recorded")
    lines += [item_line(item) for item in items]
    return "\n".join(lines)


def item_line(item: object) -> str:
    """One action item as the ticket lists it: ``- item (owner: x, due: y)``."""
    if not isinstance(item, dict):
        return f"- {item}"
    extra = ", ".join(f"{k}: {item[k]}" for k in ("owner", "due") if item.get(k))
    return f"- {item.get('item', '')}" + (f" ({extra})" if extra else "")


def _action_item(request: PageRequest) -> object:
    """The request's action item (its target names the n-th), or its message's item line."""
    items = request.incident.get("action_items") or []
    n = request.target.removeprefix(ACTION_ITEM)
    if n.isdigit() and 0 < int(n) <= len(items):
        return items[int(n) - 1]
    return request.description.removeprefix("- ") or request.message


def _duration(inc: dict[str, Any]) -> str:
    seconds = inc.get("duration_seconds")
    return format_duration(timedelta(seconds=seconds)) if seconds is not None else "unknown"
