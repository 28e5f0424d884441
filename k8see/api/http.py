"""Small HTTP helpers shared by the API's endpoints: bounded bodies and error answers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["error", "peer", "read_limited"]


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def error_body(message: str, hint: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "hint": hint}


def error(status: int, message: str, hint: str) -> JSONResponse:
    """An error answer; a 503 says when to retry."""
    headers = {"Retry-After": "10"} if status == 503 else None
    return JSONResponse(error_body(message, hint), status_code=status, headers=headers)


def peer(request: Request) -> str:
    return request.client.host if request.client else "?"
