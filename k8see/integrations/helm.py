"""Helm 3, as k8see uses it: install or upgrade the app release, recover it, remove it.

Short commands (status, uninstall, template) go through pyhelm3, run with ``asyncio.run``
because workers are synchronous. ``upgrade_install`` runs the helm binary through
``process.run_tool`` instead, because it is the one long command and it must be
cancellable: pyhelm3 starts helm under ``/bin/sh -c``, and terminating the shell leaves helm
running. ``run_tool`` kills the whole process group, streams helm's output to the run log,
and lets the caller poll the cluster while helm waits (to fail fast on a crash loop and to
renew the per-PR lease).

Values are always handed to helm as a file or on stdin, never on the command line, and no
error message quotes them: they can carry the user's configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyhelm3 import Command
from pyhelm3 import errors as helm_errors

from k8see.errors import HelmError, Superseded, ToolMissing
from k8see.integrations.process import redact_text, run_tool

__all__ = [
    "STUCK_STATUSES",
    "Aborted",
    "ReleaseStatus",
    "recover_stuck",
    "status",
    "template",
    "uninstall",
    "upgrade_install",
]

T = TypeVar("T")
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
#: Release states left behind by an interrupted or failed helm run (docs/environments.md "3. The
#: app release" step 3).
STUCK_STATUSES = ("failed", "pending-install", "pending-upgrade", "pending-rollback")
#: Longest error message kept from helm's output.
MAX_MESSAGE_CHARS = 400
#: Extra wall time given to the helm process beyond its own ``--timeout``.
PROCESS_GRACE_SECONDS = 60
_ERROR_LINE = re.compile(r"^(Error|error):\s*(.*)$")


class Aborted(HelmError):
    """``on_tick`` asked to stop helm (the app is crash-looping, quota refused it, ...).

    Attributes:
        why: What ``on_tick`` returned.
    """

    reason = "helm-aborted"

    def __init__(self, message: str, *, why: str):
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class ReleaseStatus:
    """A release as ``helm status`` reports it."""

    name: str
    namespace: str
    revision: int
    status: str


def _helm() -> str:
    path = shutil.which("helm")
    if path is None:
        raise ToolMissing(
            "The tool 'helm' is not installed on this worker.",
            hint="Run `make bootstrap`: it puts helm into .tools/bin.",
        )
    return path


def _command(kubeconfig: str) -> Command:
    return Command(
        executable=_helm(),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        default_timeout="120s",
    )


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _short(text: str, secrets: Iterable[str] = ()) -> str:
    """The most telling line of helm's output: its ``Error:`` line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    at = [i for i, line in enumerate(lines) if _ERROR_LINE.match(line)]
    if at:
        line = lines[at[-1]].split(":", 1)[1].strip()
        if line.endswith(":"):  # a list follows, e.g. the schema violations
            details = [d.lstrip("- ") for d in lines[at[-1] + 1 :] if d.startswith("- ")]
            line = f"{line} {'; '.join(details)}" if details else line.rstrip(":")
    else:
        line = lines[-1] if lines else "no output"
    line = redact_text(line, secrets)
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 1] + "…"


def _secrets_of(values: Mapping[str, Any]) -> list[str]:
    """Strings from the values that must not be echoed: env values, long enough to matter."""
    env = values.get("env") or {}
    found = [str(v) for v in env.values() if len(str(v)) >= 4] if isinstance(env, dict) else []
    return sorted(found, key=len, reverse=True)


def status(*, release: str, namespace: str, kubeconfig: str) -> ReleaseStatus | None:
    """The release's current status, or None when it is not installed."""
    try:
        data = _run(_command(kubeconfig).status(release, namespace=namespace))
    except helm_errors.ReleaseNotFoundError:
        return None
    except helm_errors.Error as exc:
        raise HelmError(f"helm status {release} in {namespace} failed: {_short(str(exc))}") from exc
    info = data.get("info") or {}
    return ReleaseStatus(
        name=str(data.get("name", release)),
        namespace=str(data.get("namespace", namespace)),
        revision=int(data.get("version") or 0),
        status=str(info.get("status", "unknown")),
    )


def uninstall(
    *,
    release: str,
    namespace: str,
    kubeconfig: str,
    timeout_seconds: int = 120,
    log: Logger | None = None,
) -> bool:
    """Uninstall the release and wait for its objects to go. Not installed is done.

    Returns:
        True when a release was removed, False when there was none.
    """
    try:
        _run(
            _command(kubeconfig).uninstall(
                release, namespace=namespace, wait=True, timeout=f"{int(timeout_seconds)}s"
            )
        )
    except helm_errors.ReleaseNotFoundError:
        return False
    except helm_errors.Error as exc:
        text = str(exc)
        if "not found" in text.lower():
            return False
        raise HelmError(f"helm uninstall {release} in {namespace} failed: {_short(text)}") from exc
    if log is not None:
        log.info("uninstalled release %s in %s", release, namespace)
    return True


def recover_stuck(
    *,
    release: str,
    namespace: str,
    kubeconfig: str,
    timeout_seconds: int = 120,
    log: Logger | None = None,
) -> str:
    """Uninstall the release if a failed or interrupted run left it stuck.

    A release in ``failed`` or ``pending-*`` refuses the next upgrade ("another operation is
    in progress"), so it is removed first, as the reference does.

    Returns:
        The stuck status that was cleared, or "" when there was nothing to do.
    """
    current = status(release=release, namespace=namespace, kubeconfig=kubeconfig)
    if current is None or current.status not in STUCK_STATUSES:
        return ""
    if log is not None:
        log.warning(
            "release %s in %s is %s; uninstalling it first", release, namespace, current.status
        )
    uninstall(
        release=release,
        namespace=namespace,
        kubeconfig=kubeconfig,
        timeout_seconds=timeout_seconds,
        log=log,
    )
    return current.status


def upgrade_install(
    *,
    release: str,
    chart: str | Path,
    namespace: str,
    values: Mapping[str, Any],
    timeout_seconds: int,
    kubeconfig: str,
    log: Logger,
    on_tick: Callable[[], str | None] | None = None,
    tick_seconds: float = 2.0,
    on_line: Callable[[str], None] | None = None,
) -> ReleaseStatus:
    """``helm upgrade --install --atomic --wait`` of ``chart`` as ``release``.

    Args:
        on_tick: Called about every ``tick_seconds`` while helm runs. Returning a reason
            stops helm at once and raises ``Aborted`` with it; raising (e.g. ``Superseded``
            when the lease was lost) stops helm and propagates.
        on_line: Receives each line of helm's output (redacted).

    Raises:
        HelmError: helm failed (its ``Error:`` line, without values); ``Aborted`` when
            ``on_tick`` stopped it.
    """
    secrets = _secrets_of(values)
    abort: list[str] = []
    last_tick = [time.monotonic()]

    def should_stop() -> bool:
        if on_tick is None or time.monotonic() - last_tick[0] < tick_seconds:
            return False
        last_tick[0] = time.monotonic()
        why = on_tick()
        if why:
            abort.append(why)
            return True
        return False

    with tempfile.TemporaryDirectory(prefix="k8see-helm-") as tmp:
        values_file = Path(tmp) / "values.json"
        fd = os.open(values_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle)
        argv = [
            _helm(),
            "upgrade",
            release,
            str(chart),
            "--install",
            "--namespace",
            namespace,
            "--values",
            str(values_file),
            "--atomic",
            "--wait",
            "--timeout",
            f"{int(timeout_seconds)}s",
            "--history-max",
            "10",
        ]
        if kubeconfig:
            argv += ["--kubeconfig", kubeconfig]
        log.info(
            "helm upgrade --install %s in %s (timeout %ss)", release, namespace, timeout_seconds
        )
        try:
            result = run_tool(
                argv,
                timeout_seconds=timeout_seconds + PROCESS_GRACE_SECONDS,
                should_stop=should_stop,
                on_line=on_line,
                redact=secrets,
                timeout_error=HelmError,
            )
        except Superseded as exc:
            if abort:
                raise Aborted(f"helm was stopped: {abort[0]}", why=abort[0]) from exc
            raise
    if not result.ok:
        raise HelmError(
            f"helm upgrade --install {release} in {namespace} failed: "
            f"{_short(result.tail_text(50), secrets)}",
        )
    current = status(release=release, namespace=namespace, kubeconfig=kubeconfig)
    if current is None:
        raise HelmError(f"helm reported success but release {release} is not in {namespace}.")
    return current


def template(
    *, release: str, chart: str | Path, namespace: str, values: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The chart's manifests for ``values``, rendered offline (``k8see render``, tests)."""
    try:
        docs = _run(_command("").template(release, Path(chart), dict(values), namespace=namespace))
        return [doc for doc in docs if isinstance(doc, dict)]
    except helm_errors.Error as exc:
        message = _short(str(exc), _secrets_of(values))
        raise HelmError(f"The app chart does not render: {message}") from exc
