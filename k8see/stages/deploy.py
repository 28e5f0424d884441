"""The deploy stage: namespace, guardrails, the app release, and a health check.

Input: ``run.result("validate")`` (the validated config, projectId, namespace, preview URL,
enabled databases) and ``run.result("build")`` (the image by digest). Steps, each one
idempotent so a redelivered task converges (reference §2.4, §2.6):

1. the namespace ``{projectId}-pr-{N}``, created or ownership-checked and relabelled;
2. ResourceQuota, LimitRange and the five NetworkPolicies, re-applied on every deploy;
3. a stuck release (failed, pending-*) is uninstalled;
4. ``helm upgrade --install --atomic --wait`` of the app chart by digest. While helm waits,
   the pods are watched: a crash loop, an image that cannot be pulled or a quota refusal
   stops helm at once instead of after the Helm timeout;
5. GET ``app.healthPath`` through the API server's service proxy; any 2xx passes.

Each failure the PR author can fix becomes ``DeployFailed`` with the reason, the last log
lines and the next step. The pure builders (``namespace_metadata``, ``guardrail_manifests``,
``helm_values``) are what ``k8see render`` prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from k8see import names, quota
from k8see.errors import DeployFailed, HelmError, Where
from k8see.integrations import helm, kube
from k8see.run import Run
from k8see.settings import PlatformSettings
from k8see.stages.context import StageContext

#: The chart shipped with k8see, used when ``deploy.chart_path`` is empty.
DEFAULT_CHART = Path(__file__).resolve().parents[2] / "charts" / "k8s-ee-app"
SERVICE_PORT = 80
CREATED_BY = "k8see"
#: Waiting reasons that stop helm early; the others (ContainerCreating, ...) pass in time.
FAIL_FAST_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "FailedCreate",
)
LOG_LINES_IN_HINT = 10


def chart_path(settings: PlatformSettings) -> Path:
    return Path(settings.deploy.chart_path) if settings.deploy.chart_path else DEFAULT_CHART


def namespace_metadata(run: Run, *, project_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """The PR namespace's labels and annotations (reference §3.1), k8see as manager."""
    labels = {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_TYPE: "ephemeral",
        names.LABEL_PROJECT: names.check_project_id(project_id),
        names.LABEL_PR: str(names.check_pr(run.pr)),
        names.LABEL_BRANCH: names.sanitize_label_value(run.ref),
        names.LABEL_SHA: names.check_sha(run.sha),
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
    validated: dict[str, Any], *, pr: int, settings: PlatformSettings, api_cidrs: list[str]
) -> list[dict[str, Any]]:
    """Quota, limits and network policies for this config (reference §3.2-3.4)."""
    config = validated["config"]
    return quota.guardrails(
        namespace=validated["namespace"],
        project_id=validated["project_id"],
        pr=pr,
        app_port=int(config["app"]["port"]),
        databases=database_options(validated),
        resources=config.get("resources"),
        ingress_namespace=settings.deploy.ingress_controller_namespace,
        ingress_labels=settings.deploy.ingress_controller_labels,
        api_cidrs=api_cidrs,
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
    values: dict[str, Any] = {
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
            "annotations": {
                **settings.deploy.ingress_annotations,
                **(ingress.get("annotations") or {}),
            },
        },
        "metrics": {
            "enabled": bool(metrics.get("enabled", False)),
            "interval": metrics.get("interval") or "30s",
        },
    }
    if config.get("resources"):
        values["resources"] = _drop_none(config["resources"])
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
    labels, annotations = namespace_metadata(run, project_id=project_id)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": validated["namespace"], "labels": labels, "annotations": annotations},
    }
    cidrs = list(api_cidrs if api_cidrs is not None else settings.deploy.api_server_cidrs)
    guardrails = guardrail_manifests(validated, pr=run.pr, settings=settings, api_cidrs=cidrs)
    values = helm_values(run, validated=validated, build=build, settings=settings)
    release = helm.template(
        release=names.RELEASE_NAME,
        chart=chart_path(settings),
        namespace=validated["namespace"],
        values=values,
    )
    return [namespace, *guardrails, *release]


def _placeholder_image(validated: dict[str, Any]) -> str:
    image = (validated.get("config") or {}).get("image") or {}
    return str(image.get("repository") or f"registry.invalid/{validated['project_id']}")


def run(run: Run, ctx: StageContext) -> Run:
    """Deploy the run's image into the PR's environment and check it answers."""
    started = time.monotonic()
    validated = run.result("validate")
    build = run.result("build")
    if not validated.get("config") or not build.get("image"):
        raise DeployFailed(
            "The deploy stage has no validated config or built image to deploy.",
            hint="This run skipped validate or build; enqueue the PR again.",
        )
    settings = ctx.settings
    namespace = str(validated["namespace"])
    project_id = str(validated["project_id"])
    api = kube.make_api(settings)
    try:
        labels, annotations = namespace_metadata(run, project_id=project_id)
        created = kube.ensure_namespace(
            api=api, name=namespace, labels=labels, annotations=annotations, repo=run.repo
        )
        ctx.log.info("namespace %s %s", namespace, "created" if created else "updated")
        ctx.renew_lease()
        cidrs = settings.deploy.api_server_cidrs or kube.api_server_addresses(api=api)
        manifests = guardrail_manifests(validated, pr=run.pr, settings=settings, api_cidrs=cidrs)
        applied = kube.apply_objects(api=api, namespace=namespace, manifests=manifests)
        ctx.renew_lease()
        kubeconfig = settings.deploy.kubeconfig
        recovered = helm.recover_stuck(
            release=names.RELEASE_NAME, namespace=namespace, kubeconfig=kubeconfig, log=ctx.log
        )
        ctx.renew_lease()
        values = helm_values(run, validated=validated, build=build, settings=settings)
        release = _install(
            api, ctx, namespace=namespace, project_id=project_id, pr=run.pr, values=values
        )
        ctx.renew_lease()
        _check_health(
            api,
            ctx,
            namespace=namespace,
            project_id=project_id,
            pr=run.pr,
            health_path=values["app"]["healthPath"],
        )
    finally:
        api.close()
    result = {
        "namespace": namespace,
        "preview_url": validated["preview_url"],
        "release_revision": release.revision,
        "seconds": round(time.monotonic() - started, 3),
        "created": created,
        "applied": applied,
        "recovered_release": recovered,
        "image": build.get("image"),
    }
    ctx.log.info("deployed %s revision %s to %s", run.repo, release.revision, namespace)
    return run.with_result("deploy", result)


def _selector(project_id: str, pr: int) -> str:
    return (
        f"{names.LABEL_PROJECT}={project_id},{names.LABEL_PR}={pr},"
        f"app.kubernetes.io/instance={names.RELEASE_NAME}"
    )


def _install(
    api: Any, ctx: StageContext, *, namespace: str, project_id: str, pr: int, values: dict[str, Any]
) -> helm.ReleaseStatus:
    """helm upgrade --install, watching the pods so a hopeless rollout fails fast."""
    seen: dict[str, Any] = {}

    def on_tick() -> str | None:
        ctx.renew_lease()
        diagnostics = kube.pod_diagnostics(
            api=api, namespace=namespace, selector=_selector(project_id, pr)
        )
        if diagnostics["reason"]:
            seen.clear()
            seen.update(diagnostics)
        return str(diagnostics["reason"]) if diagnostics["reason"] in FAIL_FAST_REASONS else None

    try:
        return helm.upgrade_install(
            release=names.RELEASE_NAME,
            chart=chart_path(ctx.settings),
            namespace=namespace,
            values=values,
            timeout_seconds=ctx.settings.deploy.helm_timeout_seconds,
            kubeconfig=ctx.settings.deploy.kubeconfig,
            log=ctx.log,
            on_tick=on_tick,
            on_line=ctx.record_log,
        )
    except HelmError as exc:
        if not seen.get("reason"):
            seen.update(
                kube.pod_diagnostics(
                    api=api, namespace=namespace, selector=_selector(project_id, pr)
                )
            )
        raise _deploy_failure(
            exc, seen, values=values, timeout=ctx.settings.deploy.helm_timeout_seconds
        ) from exc


def _logs_hint(diagnostics: dict[str, Any]) -> str:
    lines = [str(line) for line in diagnostics.get("logs") or []][-LOG_LINES_IN_HINT:]
    return ("\nLast log lines:\n" + "\n".join(f"    {line}" for line in lines)) if lines else ""


def _deploy_failure(
    exc: HelmError, diagnostics: dict[str, Any], *, values: dict[str, Any], timeout: int
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
            + _logs_hint(diagnostics),
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
            hint="An envFrom secret or ConfigMap named in k8s-ee.yaml probably does not exist in "
            "the namespace.",
            where=Where(file="k8s-ee.yaml", field="envFrom"),
        )
    message = exc.message.lower()
    if reason == "FailedCreate" or "exceeded quota" in message or "exceeded quota" in detail:
        return DeployFailed(
            f"Kubernetes refused to create the app's pods: {detail or exc.message}",
            hint="The namespace quota is too small for what the app requests; lower resources "
            "in k8s-ee.yaml or ask the platform admin to raise the limits.",
            where=Where(file="k8s-ee.yaml", field="resources"),
        )
    if "timed out" in message or "deadline exceeded" in message:
        state = f" (last pod state: {reason})" if reason else ""
        return DeployFailed(
            f"The app did not become ready within {timeout} s{state}.",
            hint=f"Its readiness probe GETs {values['app']['healthPath']} on port {port}; make "
            "it answer 2xx once the app is up." + _logs_hint(diagnostics),
            where=Where(file="k8s-ee.yaml", field="app.healthPath"),
        )
    return exc


def _check_health(
    api: Any, ctx: StageContext, *, namespace: str, project_id: str, pr: int, health_path: str
) -> None:
    settings = ctx.settings.deploy
    service = names.deployment_name(project_id, pr)
    result = kube.wait_healthy(
        api=api,
        namespace=namespace,
        service=service,
        port=SERVICE_PORT,
        path=health_path,
        attempts=settings.health_attempts,
        interval_seconds=settings.health_interval_seconds,
    )
    if result.ok:
        ctx.log.info("health check %s answered %s", health_path, result.status)
        return
    diagnostics = kube.pod_diagnostics(
        api=api, namespace=namespace, selector=_selector(project_id, pr)
    )
    state = f"; pod state {diagnostics['reason']}" if diagnostics["reason"] else ""
    raise DeployFailed(
        f"The health check GET {health_path} failed after {result.attempts} attempts: "
        f"{result.detail or 'no answer'}{state}.",
        hint=f"Make {health_path} answer with a 2xx status once the app is ready, or point "
        "app.healthPath in k8s-ee.yaml at a path that does." + _logs_hint(diagnostics),
        where=Where(file="k8s-ee.yaml", field="app.healthPath"),
    )
