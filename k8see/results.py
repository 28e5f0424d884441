"""Typed stage results: what each stage adds to a ``Run``, read and written one way.

On the wire a ``Run`` keeps its results as JSON (``Run.results: dict[str, dict]``), because a
message crosses a task boundary and may be forged: anyone who reaches a queue can write any
result (docs/security.md). In code, a stage reads another stage's result only through its model
here, and writes its own only through ``write``:

- ``BuildResult.of(run)`` parses ``run.results["build"]``; a missing result is an empty model,
  a malformed one (a string where a list belongs, a result that is not an object) is refused
  with a ``PolicyError`` naming the field, never a ``KeyError`` or ``TypeError`` deep in a
  stage. ``BuildResult.maybe(run)`` is ``None`` when the stage never ran.
- ``BuildResult(...).write(run)`` returns the new ``Run``; the JSON holds exactly the fields the
  stage set (``exclude_unset``), so the wire, the environment record and ``k8see status --json``
  are what they were when results were plain dicts.

Parsing is no trust: a well-formed result is still only what the sender says. The stages that
act on one re-verify it from GitHub and the registry (``k8see.stages.provenance``). Fields are
optional with the defaults the stages used to apply, so results from older workers and partial
results still parse; unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from k8see.errors import PolicyError
from k8see.run import Run

__all__ = [
    "BuildResult",
    "CommandResult",
    "CommentResult",
    "DeployResult",
    "DestroyResult",
    "ScanResult",
    "StageResult",
    "UntagResult",
    "ValidateResult",
]

#: How many of a malformed result's problems the refusal names.
_SHOWN_ERRORS = 3


class StageResult(BaseModel):
    """One stage's result. Subclasses set ``stage``, the key in ``Run.results``."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    stage: ClassVar[str]

    @classmethod
    def of(cls, run: Run) -> Self:
        """The stage's result in ``run`` (empty if it has none).

        Raises:
            PolicyError: the result is malformed (a forged or foreign message).
        """
        return cls.maybe(run) or cls()

    @classmethod
    def maybe(cls, run: Run) -> Self | None:
        """The stage's result in ``run``, or None when the run carries none.

        Raises:
            PolicyError: the result is malformed (a forged or foreign message).
        """
        value = run.results.get(cls.stage)
        if value is None:
            return None
        return cls.parse(value)

    @classmethod
    def parse(cls, value: object) -> Self:
        """``value`` (a result as JSON) as this model.

        Raises:
            PolicyError: ``value`` is not an object, or a field has the wrong type.
        """
        if not isinstance(value, dict):
            raise _malformed(cls.stage, f"it is a {type(value).__name__}, not an object")
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in error['loc']) or '(result)'}: {error['msg']}"
                for error in exc.errors(include_input=False, include_url=False)
            ]
            shown = "; ".join(problems[:_SHOWN_ERRORS])
            more = f" (and {len(problems) - _SHOWN_ERRORS} more)" if len(problems) > 3 else ""
            raise _malformed(cls.stage, shown[:400] + more) from None

    def to_json(self) -> dict[str, Any]:
        """The result as it travels: the fields the stage set, JSON values only."""
        return self.model_dump(mode="json", exclude_unset=True)

    def write(self, run: Run) -> Run:
        """A new ``Run`` with this result recorded for its stage."""
        return run.with_result(self.stage, self.to_json())

    def with_fields(self, **changes: Any) -> Self:
        """A copy with ``changes`` (validated, and set: they travel)."""
        return type(self).parse({**self.to_json(), **changes})


def _malformed(stage: str, detail: str) -> PolicyError:
    return PolicyError(
        f"The run's {stage} result is malformed: {detail}.",
        hint="This message was not written by a k8see worker of this version; push again or "
        "comment /deploy-preview to start a new run.",
    )


class ValidateResult(StageResult):
    """Where the PR's environment lives and what its ``k8s-ee.yaml`` says.

    ``config`` is the validated ``RepoConfig`` as JSON (``RepoConfig.to_dict()``): on the
    wire only, for the capacity gate's demand and the comment. The stages that act on a
    config (build, deploy) load it again from their own checkout as a ``RepoConfig``.
    """

    stage: ClassVar[str] = "validate"

    config: dict[str, Any] = {}
    project_id: str | None = None
    namespace: str | None = None
    preview_url: str | None = None
    databases: list[str] = []
    trigger_mode: str | None = None
    config_path: str | None = None
    sha: str | None = None
    ref: str | None = None
    #: Whether the PR comes from a fork; absent when validate did not read the PR.
    fork: bool | None = None
    #: The GitHub Deployment validate started; the comment stage finishes it.
    deployment_id: int | None = None


class BuildResult(StageResult):
    """The image a build pushed (``image`` is ``<repository>@<digest>``)."""

    stage: ClassVar[str] = "build"

    image: str | None = None
    repository: str | None = None
    digest: str | None = None
    platforms: list[str] | None = None
    seconds: float | None = None
    tags: list[str] | None = None
    #: Every tag of the PR's builds so far, for deletion on close.
    pushed_tags: list[str] | None = None
    #: The trust scope whose build cache the build used (``integrations.buildstorage``).
    cache_scope: str | None = None
    cache_trusted: bool | None = None


class ScanResult(StageResult):
    """A scan summary (``ScanReport.to_dict()`` plus the policy), or ``skipped``."""

    stage: ClassVar[str] = "scan"

    skipped: bool | None = None
    image: str | None = None
    platforms: list[str] | None = None
    scanners: list[str] | None = None
    counts: dict[str, int] | None = None
    total: int | None = None
    top: list[dict[str, Any]] | None = None
    #: Per platform, the paths of its JSON report, SARIF and SBOM.
    reports: dict[str, dict[str, str]] | None = None
    seconds: float | None = None
    #: ``"scanned"``, or ``"not-scanned"`` with ``vulnerabilities_note``.
    vulnerabilities: str | None = None
    vulnerabilities_note: str | None = None
    vulnerability_db: dict[str, str] | None = None
    policy: str | None = None
    blocked: bool | None = None
    #: The SARIF upload: ``{"state": ..., "ids" | "error": ...}``.
    code_scanning: dict[str, Any] | None = None


class DeployResult(StageResult):
    """The release a deploy installed."""

    stage: ClassVar[str] = "deploy"

    namespace: str | None = None
    #: Empty when the config has no Ingress.
    preview_url: str | None = None
    ingress: bool = True
    release_revision: int | None = None
    seconds: float | None = None
    created: bool | None = None
    applied: list[str] | None = None
    recovered_release: str | None = None
    #: The API proxy's counts for helm's requests (``kubeproxy``).
    helm_api: dict[str, Any] | None = None
    image: str | None = None


class DestroyResult(StageResult):
    """What a destroy removed, kept or could not find."""

    stage: ClassVar[str] = "destroy"

    namespace: str | None = None
    namespaces: list[str] | None = None
    deleted: bool | None = None
    preserved: bool | None = None
    removed: list[str] | None = None
    #: Objects whose finalizers nobody removed, unblocked so the namespace could go.
    unblocked: list[str] | None = None
    skipped: list[str] | None = None
    preserve_until: str | None = None
    helm_api: dict[str, Any] | None = None
    seconds: float | None = None


class UntagResult(StageResult):
    """The PR's image tags deleted on close; ``skipped`` names why none were."""

    stage: ClassVar[str] = "untag"

    repository: str | None = None
    skipped: str | None = None
    deleted: list[str] | None = None
    failed: list[str] | None = None
    absent: list[str] | None = None
    #: Why each failed tag failed (no secrets).
    errors: dict[str, str] | None = None
    seconds: float | None = None


class CommentResult(StageResult):
    """The sticky comment's id."""

    stage: ClassVar[str] = "comment"

    comment_id: int | None = None


class CommandResult(StageResult):
    """An authorized PR command, and the task that carries it out (``forward``)."""

    stage: ClassVar[str] = "command"

    command: str | None = None
    args: list[str] | None = None
    permission: str | None = None
    forward: str | None = None
    #: The ``/help`` reply's comment id.
    reply_id: int | None = None
