"""One error shape for every answer, and what every command endpoint does with a body.

Every error is ``{"error": message}``, with ``details`` (``[{"loc", "msg"}]``) when a
body did not validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from service.ingest.parse import PayloadError, find_text, load_json

MAX_COMMAND_BYTES = 64 * 1024
M = TypeVar("M", bound=BaseModel)


def error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to be over ``limit`` (declared or streamed),
    so a huge body is never held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request) -> dict[str, Any] | Response:
    """The body as a JSON object (empty body = {}), or the error response to send."""
    try:
        raw = await read_limited(request, MAX_COMMAND_BYTES)
    except BodyTooLarge:
        return error(413, f"body larger than {MAX_COMMAND_BYTES} bytes")
    except ClientDisconnect:
        return error(400, "client disconnected before the body was read")
    if not raw.strip():
        return {}
    try:
        body = load_json(raw)
    except PayloadError as exc:
        status = 400 if exc.kind == "malformed" else 422
        if exc.details:
            return error(status, exc.reason, details=exc.details)
        return error(status, exc.reason)
    if not isinstance(body, dict):
        return error(422, "expected a JSON object")
    # Commands end up in the store, and PostgreSQL text cannot hold NUL.
    where = find_text(body, lambda text: "\x00" in text)
    if where is not None:
        msg = "contains a NUL character (\\u0000)"
        return error(422, f"{where}: {msg}", details=[{"loc": where, "msg": msg}])
    return body


def invalid(exc: ValidationError, skip: int = 0) -> JSONResponse:
    details = [{"loc": ".".join(str(p) for p in e["loc"][skip:]), "msg": e["msg"]} for e in exc.errors()]
    return error(422, "invalid command", details=details)


async def command(request: Request, model: type[M], *, skip: int = 0, **fields: Any) -> M | Response:
    """The request as a ``model``: its JSON body plus ``fields`` (taken from the path), or
    the error to send. The body may repeat a field of the path but not contradict it."""
    body = await json_object(request)
    if isinstance(body, Response):
        return body
    clashes = [
        {"loc": name, "msg": f"does not match the path ({value!r})"}
        for name, value in fields.items()
        if name in body and body[name] != value
    ]
    if clashes:
        return error(422, "invalid command", details=clashes)
    try:
        return model.model_validate({**body, **fields})
    except ValidationError as exc:
        return invalid(exc, skip)
