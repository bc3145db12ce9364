"""One error shape for every answer, and what every command endpoint does with a body.

Every error is ``{"error": message}``, with ``details`` (``[{"loc", "msg"}]``) when a
body did not validate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_COMMAND_BYTES = 64 * 1024
M = TypeVar("M", bound=BaseModel)


def error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def json_object(request: Request) -> dict[str, Any] | Response:
    """The body as a JSON object (empty body = {}), or the error response to send."""
    raw = await request.body()
    if len(raw) > MAX_COMMAND_BYTES:
        return error(413, f"body larger than {MAX_COMMAND_BYTES} bytes")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(400, f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(422, "expected a JSON object")
    return body


def invalid(exc: ValidationError, skip: int = 0) -> JSONResponse:
    details = [{"loc": ".".join(str(p) for p in e["loc"][skip:]), "msg": e["msg"]} for e in exc.errors()]
    return error(422, "invalid command", details=details)


async def command(request: Request, model: type[M], *, skip: int = 0, **fields: Any) -> M | Response:
    """The request as a ``model`` (its JSON body plus ``fields``), or the error to send."""
    body = await json_object(request)
    if isinstance(body, Response):
        return body
    try:
        return model.model_validate({**body, **fields})
    except ValidationError as exc:
        return invalid(exc, skip)
