"""Kubernetes ``Status`` failures, raised inside the sandbox and written by the HTTP layer.

Messages and reasons copy the real API server's wording, because clients branch on
``reason`` and users read ``message``: ``configmaps "x" not found``, ``Operation cannot be
fulfilled on ...``, ``unable to create new content in namespace ... because it is being
terminated``.
"""

from __future__ import annotations

from typing import Any

from k8see.sandbox.kubeapi.resources import ResourceType


class ApiError(Exception):
    """A failure the sandbox answers with a ``Status`` body and an HTTP code."""

    def __init__(
        self,
        *,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rt: ResourceType, name: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        code=404,
        reason="NotFound",
        message=f'{rt.qualified} "{name}" not found',
        details=_details(rt, name),
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        code=409,
        reason="AlreadyExists",
        message=f'{rt.qualified} "{name}" already exists',
        details=_details(rt, name),
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        code=409,
        reason="Conflict",
        message=(
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again"
        ),
        details=_details(rt, name),
    )


def forbidden(rt: ResourceType, name: str, why: str, *, cause: str | None = None) -> ApiError:
    extra: dict[str, Any] = {}
    if cause:
        extra["causes"] = [{"reason": cause, "message": why, "field": "metadata.namespace"}]
    return ApiError(
        code=403,
        reason="Forbidden",
        message=f'{rt.qualified} "{name}" is forbidden: {why}',
        details=_details(rt, name, **extra),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; each cause is ``(field, reason, detail)`` with reason as in the API."""
    parts = [f"{fld}: {detail}" for fld, _, detail in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(
        code=422,
        reason="Invalid",
        message=f'{rt.qualified_kind} "{name}" is invalid: {joined}',
        details={
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [
                {"reason": reason, "message": detail, "field": fld}
                for fld, reason, detail in causes
            ],
        },
    )


def bad_request(message: str) -> ApiError:
    return ApiError(code=400, reason="BadRequest", message=message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(code=405, reason="MethodNotAllowed", message=message)


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(code=415, reason="UnsupportedMediaType", message=message)


def gone(message: str) -> ApiError:
    return ApiError(code=410, reason="Expired", message=message)


def plain_not_found() -> ApiError:
    return ApiError(
        code=404,
        reason="NotFound",
        message="the server could not find the requested resource",
        details={},
    )
