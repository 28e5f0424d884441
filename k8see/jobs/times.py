"""The timestamps the jobs read and write: ISO-8601 ``...Z`` strings, as k8see and the reference
write them on namespaces (``k8s-ee/preserve-until``, ``last-updated``) and records
(``updated_at``)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso", "parse_time"]


def iso(ts: float) -> str:
    """``ts`` (Unix time) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> float | None:
    """Unix time of an ISO-8601 ``...Z`` string (one without a zone is UTC); None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
