"""Pull-secret refresh: rewrite the registry pull secret in every k8see-managed namespace.

The ``k8see.pull_secret_refresh`` beat job (``jobs.tasks`` registers it and holds its lock).
Why a job: ECR's login lives about 12 hours, and a pod that restarts after its secret's token
expired cannot pull its image; the secret written is the deploy stage's own
(``manifests.release.pull_secret_manifest``), so both always agree.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from kubernetes import client as k8s

from k8see import metrics, names
from k8see.errors import KubeError
from k8see.integrations import kube, kubeapi, registry_access
from k8see.integrations.registry_access import RegistryCredentials
from k8see.manifests.release import pull_secret_manifest, pull_secret_name
from k8see.settings import PlatformSettings

__all__ = ["pull_secret_credentials", "run_pull_secret_refresh"]

log = logging.getLogger(__name__)


def pull_secret_credentials(settings: PlatformSettings) -> RegistryCredentials | None:
    """The login the environments' pull secret must carry now, or None (no secret needed).

    ``registry_access.registry_credentials``, the login the build and deploy stages use too
    (ECR's 12-hour token from the API, or ``registry.username``/``registry.password``), when
    there is one.

    Raises:
        RegistryError: the ECR API refused or could not be reached.
    """
    creds = registry_access.registry_credentials(settings)
    return creds if creds.needed else None


def _with_credentials(settings: PlatformSettings, creds: RegistryCredentials) -> PlatformSettings:
    """Settings whose registry login is ``creds``, for the deploy stage's secret builder."""
    return registry_access.with_login(settings, username=creds.username, password=creds.password)


def run_pull_secret_refresh(
    *,
    settings: PlatformSettings,
    client: redis.Redis,
    now: float | None = None,
    credentials: RegistryCredentials | None = None,
) -> dict[str, Any]:
    """Rewrite the registry pull secret in every active k8see-managed environment.

    A pod that restarts after its secret's token expired cannot pull its image
    (``imagePullPolicy: Always``); the reference never refreshed ECR's 12-hour tokens, so
    preserved environments broke (a gap of the reference). Namespaces not managed by k8see are never
    touched, and terminating ones are left to finish. The secret is the one the deploy stage
    writes (``manifests.release.pull_secret_manifest``), so both always agree.

    Returns:
        The report: secret name, refreshed/skipped/failed namespaces and the expiry written.
    """
    now = time.time() if now is None else now
    creds = credentials or pull_secret_credentials(settings)
    if creds is None:
        return {"skipped": "the registry needs no pull secret (no username/password)"}
    effective = _with_credentials(settings, creds)
    secret_name = pull_secret_name(effective)
    refreshed: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    api = kube.make_api(settings)
    try:
        found = kubeapi.call(
            k8s.CoreV1Api(api).list_namespace,
            label_selector=f"{names.LABEL_TYPE}=ephemeral",
            what="list ephemeral namespaces",
        )
        for ns in found.items or []:
            name = str(ns.metadata.name)
            labels = dict(ns.metadata.labels or {})
            phase = str(getattr(ns.status, "phase", "") or "Active")
            pr_text = labels.get(names.LABEL_PR, "")
            if labels.get(names.LABEL_MANAGED_BY) not in kube.OWNERS or phase != "Active":
                skipped.append(name)
                continue
            project_id = labels.get(names.LABEL_PROJECT) or name.rpartition("-pr-")[0]
            manifest = pull_secret_manifest(
                effective,
                namespace=name,
                project_id=project_id,
                pr=int(pr_text) if pr_text.isdigit() else 0,
            )
            if manifest is None:  # pragma: no cover - creds guarantee a secret
                continue
            try:
                kube.apply_objects(api=api, namespace=name, manifests=[manifest])
            except KubeError as exc:
                log.warning("Could not refresh the pull secret in %s: %s", name, exc.message)
                failed.append(name)
                continue
            refreshed.append(name)
    finally:
        api.close()
    metrics.cleanup_action("pull-secret-refreshed", len(refreshed))
    period = settings.registry.pull_secret_refresh_seconds
    expires_at = creds.expires_at.timestamp() if creds.expires_at is not None else None
    if expires_at is not None and expires_at - now < period:
        log.warning(
            "The registry credentials are valid for %d more seconds, less than the %d seconds "
            "until the next refresh; lower registry.pull_secret_refresh_seconds.",
            max(0, int(expires_at - now)),
            period,
        )
    log.info(
        "Pull secret %s refreshed in %d namespaces (%d skipped, %d failed).",
        secret_name,
        len(refreshed),
        len(skipped),
        len(failed),
    )
    return {
        "secret": secret_name,
        "refreshed": refreshed,
        "skipped": skipped,
        "failed": failed,
        "expires_at": expires_at,
    }
