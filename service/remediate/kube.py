"""The Kubernetes API as the actions see it: JSON dicts in and out, one error type,
and writes that always go through a server-side dry run first.

kubernetes-asyncio's generated methods do the HTTP; we take the raw response so that
errors carry the API server's own Status message and objects stay plain JSON
(camelCase, exactly what a patch must send back).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.config import Settings

if TYPE_CHECKING:
    from kubernetes_asyncio import client

# kubernetes-asyncio is imported where it is used: a third of the start-up's imports, and a
# service without an API server never needs it.

log = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API call that failed: ``status`` is the HTTP status (0: never reached the server)."""

    def __init__(self, status: int, message: str, *, dry_run: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.dry_run = dry_run

    def __str__(self) -> str:
        where = "dry run" if self.dry_run else "API"
        return f"{where} answered {self.status}: {self.message}" if self.status else self.message


class Kube:
    """One API client; ``write`` pairs every change with a ``dryRun=All`` call before it."""

    def __init__(self, api: client.ApiClient, timeout: float = 10.0) -> None:
        from kubernetes_asyncio import client

        self._api = api
        self._timeout = timeout
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    async def close(self) -> None:
        await self._api.close()

    async def read(self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        return await _call(method, args, kwargs, self._timeout, dry_run=False)

    async def merge_patch(
        self,
        method: Callable[..., Awaitable[Any]],
        *args: Any,
        read: dict[str, Any],
        changes: dict[str, Any],
        dry_run: bool,
    ) -> Any:
        """A JSON merge patch carrying the ``resourceVersion`` of ``read``: the server
        refuses it (409) if the object changed since we read it."""
        body = {
            **changes,
            "metadata": {
                **changes.get("metadata", {}),
                "resourceVersion": read["metadata"]["resourceVersion"],
            },
        }
        return await self.write(method, *args, body, dry_run=dry_run, _content_type=MERGE_PATCH)

    async def write(
        self, method: Callable[..., Awaitable[Any]], *args: Any, dry_run: bool, **kwargs: Any
    ) -> Any:
        """``dry_run``: only the server-side dry run. Otherwise the dry run, then, if it
        passed, the same call for real (a failed dry run raises and nothing changes)."""
        result = await _call(method, args, {**kwargs, "dry_run": "All"}, self._timeout, dry_run=True)
        if dry_run:
            return result
        return await _call(method, args, kwargs, self._timeout, dry_run=False)


async def _call(
    method: Callable[..., Awaitable[Any]], args: Any, kwargs: dict[str, Any], timeout: float, *, dry_run: bool
) -> Any:
    import aiohttp
    from kubernetes_asyncio import client

    try:
        resp = await method(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
        raw = await resp.read()
    except client.ApiException as exc:  # raised before a response, e.g. bad arguments
        raise KubeError(exc.status or 0, str(exc.reason), dry_run=dry_run) from None
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        reason = f"Kubernetes API unreachable: {exc.__class__.__name__}: {exc}"
        raise KubeError(0, reason, dry_run=dry_run) from None
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"message": raw[:200].decode(errors="replace")}
    if not 200 <= resp.status <= 299:
        message = body.get("message") if isinstance(body, dict) else None
        raise KubeError(resp.status, str(message or resp.reason), dry_run=dry_run)
    return body


def from_url(url: str, token: str | None, ca_file: Path | None = None, timeout: float = 10.0) -> Kube:
    """A client for an API server at ``url``, sending ``Authorization: Bearer <token>``."""
    from kubernetes_asyncio import client

    cfg = client.Configuration()
    cfg.host = url.rstrip("/")
    if token:
        # The key kubernetes-asyncio's auth_settings() reads for the Authorization header.
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
    if ca_file:
        cfg.ssl_ca_cert = str(ca_file)
    return Kube(client.ApiClient(cfg), timeout)


def configured(settings: Settings) -> bool:
    """Is there an API server to talk to? Without one remediation is off."""
    return bool(
        settings.kube_api_url
        or os.environ.get("KUBERNETES_SERVICE_HOST")
        or (settings.kube_config and settings.kube_config.exists())
    )


async def connect(settings: Settings) -> Kube | None:
    """The API client from settings: an explicit URL, in-cluster, or a kubeconfig; None
    if none is configured (remediation then refuses every action, loudly)."""
    if settings.kube_api_url:
        token = settings.kube_token.get_secret_value() if settings.kube_token else None
        return from_url(settings.kube_api_url, token, settings.kube_ca_file, settings.kube_timeout_seconds)
    if not configured(settings):
        return None
    from kubernetes_asyncio import client, config

    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        assert settings.kube_config is not None  # configured(): a kubeconfig that exists
        await config.load_kube_config(config_file=str(settings.kube_config), client_configuration=cfg)
    return Kube(client.ApiClient(cfg), settings.kube_timeout_seconds)
