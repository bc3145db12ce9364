"""What the HTTP pagers (PagerDuty, Jira, Statuspage) share: one call that turns a transport
failure or a non-2xx answer into a :class:`PageError` saying whether a retry can help."""

from __future__ import annotations

from typing import Any

import httpx

from service.notify.base import PageError, parse_retry_after, retryable_status


async def call(client: httpx.AsyncClient, pager: str, method: str, url: str, **kw: Any) -> httpx.Response:
    """The answer, 2xx or not; a timeout or an unreachable server is a retryable PageError."""
    try:
        return await client.request(method, url, **kw)
    except httpx.TimeoutException as exc:
        raise PageError(f"{pager} timed out: {exc.__class__.__name__}", retryable=True) from None
    except httpx.HTTPError as exc:
        raise PageError(f"{pager} unreachable: {exc.__class__.__name__}: {exc}", retryable=True) from None


def refused(pager: str, resp: httpx.Response, detail: str, what: str = "") -> PageError:
    """A non-2xx answer: retryable for 408, 429 and 5xx, with the server's Retry-After."""
    reason = f"{pager} answered HTTP {resp.status_code}{what}: {(detail or resp.text)[:300]}"
    retry_after = parse_retry_after(resp.headers.get("retry-after"))
    return PageError(reason, retryable=retryable_status(resp.status_code), retry_after=retry_after)


def json_object(resp: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or {} when it has none."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
