"""Why a deploy failed, in words the PR author can act on: the pods' state, read while helm waits.

Not a stage: the deploy stage (``k8see.stages.deploy``) watches the app's pods during
``helm upgrade --install`` and calls ``fail_fast_reason`` on each look, so a hopeless rollout
(a crash loop, an image that cannot be pulled) stops helm at once instead of after the Helm
timeout; when helm fails, ``deploy_failure`` turns helm's error and the pods' last state into a
``DeployFailed`` with the reason, the last log lines and the next step (or gives back the
platform's own error). Pure functions of the diagnostics ``integrations.health`` collects.
"""

from __future__ import annotations

import re
from typing import Any

from k8see import names
from k8see.errors import DeployFailed, HelmError, Where
from k8see.manifests.quota import DATABASES

__all__ = ["FAIL_FAST_REASONS", "deploy_failure", "fail_fast_reason", "logs_hint"]

#: Waiting reasons that stop helm early; the others (ContainerCreating, ...) pass in time.
FAIL_FAST_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "FailedCreate",
)
LOG_LINES_IN_HINT = 10


#: What the kubelet says while its own ConfigMap/Secret cache for the pod has not synced yet
#: (a busy node or API server); it retries by itself, so this is no missing object.
KUBELET_CACHE_NOT_SYNCED = ("failed to sync configmap cache", "failed to sync secret cache")


def fail_fast_reason(diagnostics: dict[str, Any]) -> str | None:
    """The waiting reason that makes the rollout hopeless, or None while it may still pass.

    A CreateContainerConfigError passes while the Secret is one a database operator has yet
    to write, or while the kubelet's cache has not caught up, and a quota refusal while pods
    of an earlier rollout terminate: all fix themselves.
    """
    reason = str(diagnostics.get("reason") or "")
    if reason == "FailedCreate" and diagnostics.get("terminating"):
        # A quota refusal while an earlier rollout's pods terminate (two pushes in quick
        # succession): their limits still count until their grace period ends, and the
        # ReplicaSet controller retries the creation by itself once they are gone.
        return None
    if reason == "CreateContainerConfigError":
        message = str(diagnostics.get("message") or "")
        if _database_secret_pending(message) or any(
            text in message for text in KUBELET_CACHE_NOT_SYNCED
        ):
            return None
    return reason if reason in FAIL_FAST_REASONS else None


def _database_secret_pending(message: str) -> bool:
    """The missing Secret is one a database operator creates (app-postgresql-app, ...)."""
    return any(f'"{names.RELEASE_NAME}-{db}' in message for db in DATABASES)


def logs_hint(diagnostics: dict[str, Any]) -> str:
    lines = [str(line) for line in diagnostics.get("logs") or []][-LOG_LINES_IN_HINT:]
    return ("\nLast log lines:\n" + "\n".join(f"    {line}" for line in lines)) if lines else ""


def deploy_failure(
    exc: HelmError,
    diagnostics: dict[str, Any],
    *,
    values: dict[str, Any],
    timeout: int,
    config_file: str,
) -> Exception:
    """The user-facing error for a failed install, or the platform error when it is ours."""
    reason = str(diagnostics.get("reason") or "")
    detail = str(diagnostics.get("message") or "")
    port = values["app"]["port"]
    image = values["image"]
    ref = f"{image['repository']}@{image['digest']}" if image.get("digest") else image["repository"]
    if reason == "CrashLoopBackOff":
        return DeployFailed(
            "The app container keeps crashing (CrashLoopBackOff).",
            hint=f"Check that the image starts with a read-only root filesystem as a non-root "
            f"user (UID 1001) and listens on port {port}; add writableDirs for paths it writes."
            + logs_hint(diagnostics),
        )
    if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
        return DeployFailed(
            f"The image {ref} cannot be pulled ({reason}).",
            hint="Check that the build pushed it and that the cluster's pull secret for the "
            "registry is valid." + (f" Kubelet said: {detail}" if detail else ""),
        )
    if reason == "CreateContainerConfigError":
        return DeployFailed(
            f"The app container cannot be configured: {detail or reason}.",
            hint=f"An envFrom secret or ConfigMap named in {config_file} probably does not "
            "exist in the namespace.",
            where=Where(file=config_file, field="envFrom"),
        )
    message = exc.message.lower()
    if "specifications of the schema" in message:
        # helm up to 3.17 (xeipuuv): "config: Additional property x is not allowed";
        # 3.18 on (santhosh-tekuri): "at '/config': additional properties 'x' not allowed".
        found = re.search(
            r"(?:[\w.]+: )?[A-Z][^:;]*(?:is not allowed|is required|must be [^;]+)"
            r"|at '[^']*': [^;]+",
            exc.message,
        )
        return DeployFailed(
            f"{config_file} sets a value the app chart does not accept"
            + (f": {found.group(0)}." if found else "."),
            hint=f"Check the options under databases in {config_file} against "
            "docs/environments.md (each database's options are listed there).",
            where=Where(file=config_file, field="databases"),
        )
    if reason == "FailedCreate" or "exceeded quota" in message or "exceeded quota" in detail:
        return DeployFailed(
            f"Kubernetes refused to create the app's pods: {detail or exc.message}",
            hint="The namespace quota is too small for what the app requests; lower resources "
            f"in {config_file} or ask the platform admin to raise the limits.",
            where=Where(file=config_file, field="resources"),
        )
    if "timed out" in message or "deadline exceeded" in message:
        path = values["app"]["healthPath"]
        state = f" (last pod state: {reason})" if reason else ""
        probe = _probe_said(str(diagnostics.get("probe") or ""), path)
        return DeployFailed(
            f"The app did not become ready within {timeout} s{state}{probe}.",
            hint=f"Its startup and readiness probes GET {path} on port {port}; make it answer "
            f"2xx once the app is up, or point app.healthPath in {config_file} at a path "
            "that does." + logs_hint(diagnostics),
            where=Where(file=config_file, field="app.healthPath"),
        )
    return exc


def _probe_said(event: str, path: str) -> str:
    """The kubelet's probe failure as the end of a sentence: what ``GET path`` answered."""
    if not event:
        return ""
    kind = event.split(" probe failed", 1)[0].lower() if " probe failed" in event else "a"
    answered = re.search(r"statuscode: (\d{3})", event)
    if answered:
        return f": its {kind} probe GET {path} answered HTTP {answered.group(1)}"
    return f": its {kind} probe GET {path} failed ({event.rpartition(': ')[2][:120]})"
