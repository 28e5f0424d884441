"""What a deploy applies, as plain manifests and Helm values, computed without a cluster.

Pure builders shared by the deploy stage and ``k8see render``: the namespace's labels and
annotations (docs/environments.md "1. The namespace"), the guardrails (``manifests.guardrails``),
the registry pull secret, and the app chart's values, every k8s-ee.yaml field included (the
reference ignored several). Only ``render_manifests`` runs a tool: ``helm template``, which needs
no cluster.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from k8see import names
from k8see.config.model import RepoConfig
from k8see.integrations import helm, kube
from k8see.manifests.guardrails import guardrails
from k8see.manifests.quota import DATABASES, platform_labels
from k8see.run import Action, Run
from k8see.settings import PlatformSettings

#: The chart shipped with k8see, used when ``deploy.chart_path`` is empty.
DEFAULT_CHART = Path(__file__).resolve().parents[2] / "charts" / "k8s-ee-app"
CREATED_BY = "k8see"
#: Marks Secrets whose values ``k8see render`` replaced.
REDACTED_ANNOTATION = "k8s-ee/redacted"


def chart_path(settings: PlatformSettings) -> Path:
    return Path(settings.deploy.chart_path) if settings.deploy.chart_path else DEFAULT_CHART


#: Pod Security Admission's namespace labels.
PSA_LABEL = "pod-security.kubernetes.io"
#: Databases whose every pod passes Pod Security ``restricted``: the app chart's own Redis and
#: MariaDB Deployments (admitted by a real API server in tests/stages/test_deploy_pod_security.py)
#: and CloudNativePG's instances, which that operator runs restricted by design. MongoDB
#: Community's operator adds init containers that keep their capabilities (restricted refuses
#: them; mongodb/helm-charts#323), and MinIO's operator was never run here, so a namespace
#: with either gets ``baseline``.
RESTRICTED_DATABASES = frozenset({"postgresql", "redis", "mariadb"})


def pod_security_level(settings: PlatformSettings, databases: Iterable[str]) -> str:
    """The level a PR namespace enforces: ``deploy.pod_security`` as set, or for ``auto``,
    ``restricted`` when every pod of the environment is known to pass it, else ``baseline``.

    The app chart's pods always pass restricted: their security contexts are the platform's
    (non-root uid 1001, no privilege escalation, every capability dropped, the runtime's
    seccomp profile), never the repository's. A chart of the platform's own
    (``deploy.chart_path``) is not known to, so ``auto`` gives it ``baseline``.
    """
    setting = settings.deploy.pod_security
    if setting != "auto":
        return setting
    if settings.deploy.chart_path or not set(databases) <= RESTRICTED_DATABASES:
        return "baseline"
    return "restricted"


def namespace_metadata(
    run: Run, *, project_id: str, pod_security: str = ""
) -> tuple[dict[str, str], dict[str, str]]:
    """The PR namespace's labels and annotations (docs/environments.md "1. The namespace"): k8see as
    manager, and the Pod Security Admission level ``pod_security`` (``pod_security_level``) when
    one is set."""
    labels = {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_TYPE: "ephemeral",
        names.LABEL_PROJECT: names.check_project_id(project_id),
        names.LABEL_PR: str(names.check_pr(run.pr)),
        names.LABEL_BRANCH: names.sanitize_label_value(run.ref),
        names.LABEL_SHA: names.check_sha(run.sha),
    }
    if pod_security:
        labels |= {
            f"{PSA_LABEL}/enforce": pod_security,
            f"{PSA_LABEL}/enforce-version": "latest",
            f"{PSA_LABEL}/warn": pod_security,
            f"{PSA_LABEL}/audit": "restricted",
        }
    annotations = {
        names.ANN_CREATED_BY: CREATED_BY,
        names.ANN_REPOSITORY: names.check_repo(run.repo),
        names.ANN_LAST_UPDATED: kube.now_iso(),
    }
    return labels, annotations


def database_options(validated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{db: options}`` of the enabled databases (options ``{}`` for the ``true`` form)."""
    declared = (validated.get("config") or {}).get("databases") or {}
    return {
        db: dict(declared[db]) if isinstance(declared.get(db), dict) else {}
        for db in validated.get("databases") or []
    }


def guardrail_manifests(
    validated: dict[str, Any],
    *,
    pr: int,
    settings: PlatformSettings,
    api_cidrs: list[str],
    api_ports: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Quota, limits and network policies for this config (docs/environments.md "2. Guardrails").

    ``api_ports`` are the API server's real ports; None (offline) opens 443 and 6443.
    """
    config = validated["config"]
    return guardrails(
        namespace=validated["namespace"],
        project_id=validated["project_id"],
        pr=pr,
        app_port=int(config["app"]["port"]),
        databases=database_options(validated),
        resources=config.get("resources"),
        ingress_namespace=settings.deploy.ingress_controller_namespace,
        ingress_labels=settings.deploy.ingress_controller_labels,
        api_cidrs=api_cidrs,
        api_ports=api_ports or (),
        denied_cidrs=settings.deploy.egress_denied_cidrs,
    )


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def split_image(image: str, digest: str = "") -> dict[str, str]:
    """``repo@sha256:…`` or ``repo:tag`` as the chart's ``image`` values."""
    if "@" in image:
        repository, _, found = image.partition("@")
        return {"repository": repository, "digest": digest or found}
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = image.rpartition(":")
        return {"repository": repository, "tag": tag, "digest": digest}
    return {"repository": image, "digest": digest}


def database_values(validated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each database subchart's values: its k8s-ee.yaml options, or ``enabled: false``.

    ``storage: "2Gi"`` (the documented string form) becomes the subcharts' ``storage.size``;
    the reference passed the string through and broke the chart (its gap 2).
    """
    enabled = database_options(validated)
    out: dict[str, dict[str, Any]] = {}
    for db in DATABASES:
        if db not in enabled:
            out[db] = {"enabled": False}
            continue
        options: dict[str, Any] = _drop_none(enabled[db])
        options["enabled"] = True
        if isinstance(options.get("storage"), str):
            options["storage"] = {"size": options["storage"]}
        out[db] = options
    return out


def pull_secret_name(settings: PlatformSettings) -> str:
    """``<type>-pull-secret`` when the registry needs credentials, else "" (no secret)."""
    registry = settings.registry
    if not registry.username or registry.password is None:
        return ""
    return f"{registry.type}-pull-secret"


def pull_secret_manifest(
    settings: PlatformSettings, *, namespace: str, project_id: str, pr: int
) -> dict[str, Any] | None:
    """The ``kubernetes.io/dockerconfigjson`` Secret for the configured registry, or None.

    Re-applied on every deploy, so a rotated registry password reaches running environments
    at their next deploy. A registry without credentials (the local sandbox one, or ECR
    pulled through the nodes' instance role) gets no secret.
    """
    name = pull_secret_name(settings)
    if not name or settings.registry.password is None:
        return None
    username = settings.registry.username
    password = settings.registry.password.get_secret_value()
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {settings.registry.host: {"username": username, "auth": auth}}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": platform_labels(project_id=project_id, pr=pr),
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def helm_values(
    run: Run, *, validated: dict[str, Any], build: dict[str, Any], settings: PlatformSettings
) -> dict[str, Any]:
    """The app chart's values for this run: identity, image by digest, and every config field."""
    config = validated["config"]
    app = config.get("app") or {}
    ingress = config.get("ingress") or {}
    metrics = config.get("metrics") or {}
    image = split_image(str(build.get("image") or ""), str(build.get("digest") or ""))
    image.setdefault("tag", names.image_tag(run.pr))
    pull_secret = pull_secret_name(settings)
    values: dict[str, Any] = {
        "global": {"projectId": validated["project_id"], "prNumber": run.pr},
        "projectId": validated["project_id"],
        "prNumber": run.pr,
        "commitSha": run.sha,
        "branchName": run.ref,
        "previewDomain": settings.deploy.domain,
        "previewUrl": validated["preview_url"],
        "image": image,
        "app": {
            "port": int(app.get("port") or 3000),
            "healthPath": app.get("healthPath") or "/health",
            "metricsPath": app.get("metricsPath") or "/metrics",
        },
        "env": {str(k): str(v) for k, v in (config.get("env") or {}).items()},
        "envFrom": _drop_none(config.get("envFrom") or []),
        "writableDirs": list(config.get("writableDirs") or []),
        "ingress": {
            "enabled": bool(ingress.get("enabled", True)),
            "className": settings.deploy.ingress_class,
            # The platform's own keys win; only allowlisted user keys pass (``admission``
            # refuses the others with a config error before a deploy gets here).
            "annotations": {
                **{
                    str(k): str(v)
                    for k, v in (ingress.get("annotations") or {}).items()
                    if k in settings.deploy.ingress_annotation_allowlist
                },
                **settings.deploy.ingress_annotations,
            },
        },
        "metrics": {
            "enabled": bool(metrics.get("enabled", False)),
            "interval": metrics.get("interval") or "30s",
        },
        "imagePullSecrets": [{"name": pull_secret}] if pull_secret else [],
        **database_values(validated),
    }
    if config.get("resources"):
        values["resources"] = _drop_none(config["resources"])
    if settings.deploy.priority_class:
        values["priorityClassName"] = settings.deploy.priority_class
    if settings.deploy.database_wait_images:  # merged over the chart's, per database
        values["databaseWait"] = {"images": dict(settings.deploy.database_wait_images)}
    return values


def render_manifests(
    run: Run, *, settings: PlatformSettings, api_cidrs: list[str] | None = None
) -> list[dict[str, Any]]:
    """Everything a deploy of ``run`` would apply, offline, for ``k8see render``.

    The namespace, the guardrails, then the release's templates rendered by ``helm template``
    (no cluster needed). ``run`` carries ``validate`` and ``build`` results; without a build,
    the image is shown by tag ``pr-<N>`` at ``image.repository`` or a placeholder.
    """
    validated = run.result("validate")
    build = run.result("build") or {
        "image": f"{_placeholder_image(validated)}:{names.image_tag(run.pr)}"
    }
    project_id = str(validated["project_id"])
    level = pod_security_level(settings, validated.get("databases") or [])
    labels, annotations = namespace_metadata(run, project_id=project_id, pod_security=level)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": validated["namespace"], "labels": labels, "annotations": annotations},
    }
    cidrs = list(api_cidrs if api_cidrs is not None else settings.deploy.api_server_cidrs)
    guardrails = guardrail_manifests(validated, pr=run.pr, settings=settings, api_cidrs=cidrs)
    values = helm_values(run, validated=validated, build=build, settings=settings)
    secret = pull_secret_manifest(
        settings, namespace=validated["namespace"], project_id=project_id, pr=run.pr
    )
    release = helm.template(
        release=names.RELEASE_NAME,
        chart=chart_path(settings),
        namespace=validated["namespace"],
        values=values,
    )
    return [
        redact_secret(o) for o in [namespace, *guardrails, *([secret] if secret else []), *release]
    ]


def redact_secret(manifest: dict[str, Any]) -> dict[str, Any]:
    """A Secret with its values blanked (keys kept); any other object unchanged.

    ``k8see render`` output lands in terminals and CI logs. Its database passwords are not even
    the real ones (``lookup`` needs the cluster, so offline every render invents new ones).
    """
    if manifest.get("kind") != "Secret":
        return manifest
    out = dict(manifest)
    out["metadata"] = dict(out.get("metadata") or {})
    out["metadata"]["annotations"] = {
        **(out["metadata"].get("annotations") or {}),
        REDACTED_ANNOTATION: "values are set in the cluster at deploy time",
    }
    for key in ("data", "stringData"):
        if out.get(key):
            out[key] = dict.fromkeys(out[key], "")
    return out


def _placeholder_image(validated: dict[str, Any]) -> str:
    image = (validated.get("config") or {}).get("image") or {}
    return str(image.get("repository") or f"registry.invalid/{validated['project_id']}")


def offline_run(
    config: RepoConfig, *, repo: str, pr: int, sha: str, ref: str, settings: PlatformSettings
) -> Run:
    """A deploy ``Run`` for ``config`` as the validate stage would produce it, without GitHub.

    ``k8see render`` uses it to show what a deploy of this config would apply; there is no
    build, so ``render_manifests`` shows the image by tag.
    """
    data = config.to_dict()
    project_id = str(data["projectId"])
    validated = {
        "config": data,
        "project_id": project_id,
        "namespace": names.namespace(project_id, pr),
        "preview_url": names.preview_url(project_id, pr, settings.deploy.domain),
        "databases": config.enabled_databases(),
        "sha": sha,
        "ref": ref,
    }
    return Run(
        repo=names.check_repo(repo),
        pr=names.check_pr(pr),
        sha=names.check_sha(sha),
        generation=0,
        action=Action.DEPLOY,
        ref=ref,
        results={"validate": validated},
    )
