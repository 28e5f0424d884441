"""Logging: formats (plain, full, json), the run context on every line, secret redaction.

``configure()`` is called once by the CLI. ``run_logger()`` binds repo, PR, generation, stage,
run id and task id, so every line of a stage says which run it belongs to. The redaction
filter replaces known secret values and token-shaped strings, in the message and in fields
passed with ``extra=``, before anything is written. JSON lines keep those fields, and their
time is UTC with milliseconds.

Lines the stage code does not write itself (Celery's "received" and "succeeded" lines, the
integrations' and libraries' lines) get the same context from ``RunContextFilter``: Celery's
``task_prerun`` signal binds the running task's run for the task's thread and ``task_postrun``
clears it. The "received" line is logged by the worker's main process before any task runs,
so the filter reads the run from the task's arguments as ``pipeline.describe`` wrote them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k8see.run import Run
    from k8see.settings import PlatformSettings

CONTEXT_FIELDS = ("run_id", "repo", "pr", "generation", "stage", "task_id")
#: Token shapes that must never reach a log: GitHub tokens, AWS keys, bearer headers, JWTs.
TOKEN_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}"
    r"|(?i:bearer|token)\s+[A-Za-z0-9._~+/=-]{12,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)"
)
REDACTED = "[redacted]"
#: What every LogRecord has; anything else on a record came from ``extra=`` (or a filter).
RECORD_ATTRIBUTES = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "taskName"}
)
#: Loggers whose DEBUG lines are whole API response bodies (a Secret's data included), so they
#: are held at INFO whatever the level: redaction cannot recognise base64-encoded secrets.
BODY_LOGGERS = ("kubernetes.client.rest",)
#: ``pipeline.describe(run)``, the arguments Celery logs: ``acme/shop#42 gen 3 abc1234 deploy
#: run <run id>`` (the short SHA is absent for a destroy).
DESCRIBED = re.compile(
    r"^(?P<repo>[^\s#]+)#(?P<pr>\d+) gen (?P<generation>\d+)(?: [0-9a-f]{7})? "
    r"(?P<action>[a-z-]+) run (?P<run_id>\S+)$"
)
_TASK_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "k8see_task_context", default=None
)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return TOKEN_PATTERNS.sub(REDACTED, text)


def secret_values(settings: PlatformSettings) -> list[str]:
    """The configured secret values, so they can be masked wherever they appear."""
    values = []
    for secret in (
        settings.github.token,
        settings.registry.password,
        *settings.api.webhook_secrets,
    ):
        if secret is not None:
            values.append(secret.get_secret_value())
    return [v for v in values if v]


def redactor(settings: PlatformSettings) -> Callable[[str], str]:
    secrets = secret_values(settings)
    return lambda text: redact_text(text, secrets)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller added to the record with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in RECORD_ATTRIBUTES}


class RedactingFilter(logging.Filter):
    """Masks secrets in the message and the ``extra`` fields of every record passing through."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        for name, value in extra_fields(record).items():
            if name not in CONTEXT_FIELDS:
                setattr(record, name, self._clean(value))
        return True

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return redact_text(value, self.secrets)
        if depth > 8:  # deeper structures are summarised by the formatter's str()
            return value
        if isinstance(value, dict):
            return {k: self._clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v, depth + 1) for v in value]
        return value


def task_context(*, task_id: str, name: str, args: Sequence[Any] | None) -> dict[str, Any]:
    """The log context of a k8see task: its stage and id, and the run its first argument is."""
    context: dict[str, Any] = {"stage": name.removeprefix("k8see."), "task_id": task_id}
    first = args[0] if args else None
    if isinstance(first, dict):
        for field in ("run_id", "repo", "pr", "generation"):
            if first.get(field) not in (None, ""):
                context[field] = first[field]
    return context


def _described(data: dict[str, Any]) -> dict[str, Any]:
    """The context of Celery's received line, from the task name and its ``argsrepr``."""
    context: dict[str, Any] = {"stage": str(data["name"]).removeprefix("k8see."),
                               "task_id": str(data.get("id") or "")}  # fmt: skip
    match = DESCRIBED.fullmatch(str(data.get("args") or ""))
    if match:
        context.update(run_id=match["run_id"], repo=match["repo"], pr=int(match["pr"]),
                       generation=int(match["generation"]))  # fmt: skip
    return context


class RunContextFilter(logging.Filter):
    """Stamps every record with the run the process is working on, when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _TASK_CONTEXT.get()
        data = getattr(record, "data", None)
        if (
            context is None
            and isinstance(data, dict)
            and str(data.get("name", "")).startswith("k8see.")
        ):
            context = _described(data)
        for name, value in (context or {}).items():
            if getattr(record, name, None) in (None, ""):
                setattr(record, name, value)
        return True


def _task_started(task_id: str = "", task: Any = None, args: Any = None, **_: Any) -> None:
    name = str(getattr(task, "name", "") or "")
    if name.startswith("k8see."):
        _TASK_CONTEXT.set(task_context(task_id=task_id, name=name, args=args))


def _task_ended(**_: Any) -> None:
    _TASK_CONTEXT.set(None)


def bind_task_signals() -> None:
    """Bind the running task's context from Celery's task_prerun/task_postrun signals."""
    from celery import signals

    signals.task_prerun.connect(_task_started, weak=False, dispatch_uid="k8see.logs.prerun")
    signals.task_postrun.connect(_task_ended, weak=False, dispatch_uid="k8see.logs.postrun")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, milliseconds), level, logger, message, the run
    context, every ``extra=`` field (never replacing those keys), then ``exc``/``stack``."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=UTC)
        data: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                data[name] = value
        for name, value in extra_fields(record).items():
            if name not in CONTEXT_FIELDS:
                data.setdefault(name, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str)


class ContextFormatter(logging.Formatter):
    """Plain text with the run context appended in brackets when present."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = " ".join(
            f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if getattr(record, n, None)
        )
        return f"{base} [{ctx}]" if ctx else base


def configure(*, fmt: str = "plain", level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "full":
        handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(ContextFormatter("%(levelname)s %(message)s"))
    handler.addFilter(RunContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    bind_task_signals()
    # Python warnings (Celery's SecurityWarning, deprecations) become lines of this format too.
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in BODY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def run_logger(run: Run, *, stage: str, task_id: str = "") -> logging.LoggerAdapter[logging.Logger]:
    """A logger that stamps every line with the run's context."""
    extra = {
        "run_id": run.run_id,
        "repo": run.repo,
        "pr": run.pr,
        "generation": run.generation,
        "stage": stage,
        "task_id": task_id,
    }
    return logging.LoggerAdapter(logging.getLogger(f"k8see.stages.{stage}"), extra)
