"""The environment record as stages read it: typed, and read-only.

The record lives in Redis (``k8see.state``) as JSON that only the platform writes: the task
layer, from each stage's ``record_changes``, and the client when it queues a run. A stage gets
it as ``ctx.record`` (the record as the stage started) and reads the fields it decides on as
attributes; the comment, which shows the whole record, reads ``as_dict()``. Fields the stages do
not read are kept as they are (``extra="allow"``), so nothing of the record is lost in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from k8see.errors import PlatformError


class EnvironmentRecord(BaseModel):
    """One PR's environment record (docs/architecture.md, "A run's path")."""

    model_config = ConfigDict(frozen=True, extra="allow")

    repo: str = ""
    pr: int = 0
    generation: int = 0
    run_id: str | None = None
    status: str | None = None
    stage: str | None = None
    sha: str | None = None
    ref: str | None = None
    namespace: str | None = None
    preview_url: str | None = None
    trigger_mode: str | None = None
    image: str | None = None
    digest: str | None = None
    #: Every tag the PR's builds pushed (newest last), for the untag stage on close.
    pushed_tags: list[str] = Field(default_factory=list)
    comment_id: int | None = None
    merged: bool | None = None
    error: dict[str, Any] | None = None
    previous_status: str | None = None
    previous_sha: str | None = None

    @field_validator("pushed_tags", mode="before")
    @classmethod
    def _no_tags(cls, value: Any) -> Any:
        """``null`` is what a build that reported no tags writes: no tags."""
        return [] if value is None else value

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> EnvironmentRecord:
        """The record from its JSON (``state.get``); an empty one for no record.

        Raises:
            PlatformError: a field has a type the platform never writes (a bug, or a record
                written by something else), named without its value.
        """
        try:
            return cls.model_validate(dict(raw or {}))
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:3])
            raise PlatformError(
                f"The environment record has a malformed field ({fields}).",
                hint="Records are written only by k8see's workers and client; look for another "
                "writer with the workers' Redis credential. Pushing again rewrites the record.",
            ) from None

    def as_dict(self) -> dict[str, Any]:
        """The record as stored: the fields it has, none added."""
        return self.model_dump(exclude_unset=True)
