"""The deploy stage: namespace, guardrails, the app release, and a health check.

Input: the ``Run``'s repository, PR and commit, and the digest of its ``BuildResult``;
nothing else of the message is believed (``provenance``): the config is validated again from
the worker's own checkout of the PR's head (GitHub says the PR is open at this commit, and a
fork's commit is approved), and the image is deployed only from the repository's own registry
path, by the digest the registry has for this run's ``pr-<N>`` and ``sha-<sha>`` tags.
``deploy_verified`` is the deploy proper, for results the caller vouches for. Steps, each one
idempotent so a redelivered task converges (docs/environments.md "1. The namespace",
docs/environments.md "3. The app release"):

0. every kind the release renders is served by the cluster (``served_kinds``): a missing
   operator is a ``PolicyError`` naming it, and nothing is written;
1. the namespace ``{projectId}-pr-{N}``, created or ownership-checked and relabelled, with
   the RoleBindings that give the platform's pools their rights inside it;
2. ResourceQuota, LimitRange, the five NetworkPolicies and the registry pull secret,
   re-applied on every deploy (so a rotated registry password reaches the namespace), and
   the project's preview secrets copied from the platform's source namespace
   (``preview_secrets``; an ``envFrom`` Secret it does not provide stops the deploy here);
3. a stuck release (failed, pending-*) is uninstalled;
4. ``helm upgrade --install --atomic --wait`` of the app chart by digest. While helm waits,
   the pods are watched: a crash loop, an image that cannot be pulled or a quota refusal
   stops helm at once instead of after the Helm timeout;
5. GET ``app.healthPath`` through the API server's service proxy; any 2xx passes.

Each failure the PR author can fix becomes ``DeployFailed`` with the reason, the last log
lines and the next step (worded in ``deploy_failures``, which also decides when a rollout is
hopeless). What is applied is computed by the pure builders of
``manifests.release``, the same ones ``k8see render`` prints.
"""

from __future__ import annotations

import time
from typing import Any

from k8see import names
from k8see.errors import DeployFailed, HelmError, Where
from k8see.integrations import health, helm, kube, kubeproxy, preview_secrets, registry_access
from k8see.integrations.github import make_client
from k8see.manifests.release import (
    chart_path,
    guardrail_manifests,
    helm_values,
    namespace_metadata,
    pod_security_level,
    pull_secret_manifest,
)
from k8see.record import EnvironmentRecord
from k8see.results import BuildResult, DeployResult, ValidateResult
from k8see.run import Run, Status
from k8see.settings import PlatformSettings
from k8see.stages import provenance
from k8see.stages.context import StageContext
from k8see.stages.deploy_failures import deploy_failure, fail_fast_reason, logs_hint
from k8see.stages.served_kinds import check_served

__all__ = ["deploy_verified", "record_changes", "run"]

SERVICE_PORT = 80
#: ``app.kubernetes.io/name`` of the app's pods (the chart's name).
APP_CHART_NAME = "k8s-ee-app"


def pull_secret(
    settings: PlatformSettings, *, namespace: str, project_id: str, pr: int
) -> dict[str, Any] | None:
    """The pull secret with the registry's login as of now: for ECR a fresh 12-hour token
    (the ``pull_secret_refresh`` beat job renews it before it expires)."""
    username, password, _expires = registry_access.registry_credentials(settings)
    return pull_secret_manifest(
        registry_access.with_login(settings, username=username, password=password),
        namespace=namespace,
        project_id=project_id,
        pr=pr,
    )


def run(run: Run, ctx: StageContext) -> Run:
    """Deploy the PR's head, with the config and image derived again from GitHub, the worker's
    checkout and the registry (the message's results only say which digest to expect).

    Raises:
        PolicyError: the repository is not allowed or the PR is unknown to GitHub.
        Stale: the run's commit is not the PR's head.
        Refused: the PR is closed, a fork commit is unapproved, or the image is not this
            run's build.
    """
    build = BuildResult.of(run)
    if not build.image:
        raise DeployFailed(
            "The deploy stage has no built image to deploy.",
            hint="This run skipped build; enqueue the PR again.",
        )
    github = make_client(ctx.settings, log=ctx.log)
    verified = provenance.verified_config(run, ctx, github)
    repository = provenance.image_repository(
        ctx.settings,
        run.repo,
        verified.config.project_id,
        verified.config.image.repository,
        host=registry_access.registry_host(ctx.settings),
        config_file=verified.result.config_path or names.DEFAULT_CONFIG_PATH,
    )
    image = provenance.verified_image(run, ctx, github, build=build, repository=repository)
    # Later stages (comment) read the message's validate result for its GitHub Deployment id;
    # what deploy acts on is the verified one.
    believed = ValidateResult.of(run).with_fields(**verified.result.to_json()).write(run)
    return deploy_verified(BuildResult.parse(image).write(believed), ctx)


def deploy_verified(run: Run, ctx: StageContext) -> Run:
    """Deploy ``run``'s validate and build results, which the caller vouches for."""
    started = time.monotonic()
    validated = ValidateResult.of(run)
    build = BuildResult.of(run)
    if not validated.config or not build.image:
        raise DeployFailed(
            "The deploy stage has no validated config or built image to deploy.",
            hint="This run skipped validate or build; enqueue the PR again.",
        )
    settings = ctx.settings
    namespace = str(validated.namespace)
    project_id = str(validated.project_id)
    # Errors the PR author fixes name the file they edit (config-path, k8s-ee.yaml by default).
    config_file = validated.config_path or names.DEFAULT_CONFIG_PATH
    # The release's builders read the results as they travel (``k8see render`` has no run).
    validated_json = validated.to_json()
    values = helm_values(run, validated=validated_json, build=build.to_json(), settings=settings)
    api = kube.make_api(settings)
    try:
        # Before anything is written: a kind the cluster does not serve (an operator that is
        # not installed) would fail the release with helm's raw "no matches for kind".
        check_served(
            api,
            ctx,
            chart=chart_path(settings),
            namespace=namespace,
            values=values,
            config_file=config_file,
        )
        level = pod_security_level(settings, validated.databases or [])
        labels, annotations = namespace_metadata(run, project_id=project_id, pod_security=level)
        created = kube.ensure_namespace(
            api=api,
            name=namespace,
            labels=labels,
            annotations=annotations,
            repo=run.repo,
            bindings=settings.deploy.namespace_bindings,
        )
        ctx.log.info("namespace %s %s", namespace, "created" if created else "updated")
        ctx.renew_lease()
        endpoint = kube.api_server_endpoint(api=api)
        manifests = guardrail_manifests(
            validated_json,
            pr=run.pr,
            settings=settings,
            api_cidrs=settings.deploy.api_server_cidrs or endpoint.cidrs,
            api_ports=endpoint.ports,
        )
        secret = pull_secret(settings, namespace=namespace, project_id=project_id, pr=run.pr)
        manifests += [secret] if secret else []
        applied = kube.apply_objects(api=api, namespace=namespace, manifests=manifests)
        secrets = preview_secrets.sync(
            api=api,
            template=settings.deploy.preview_secrets_namespace,
            repo=run.repo,
            project_id=project_id,
            namespace=namespace,
            config=validated.config,
            config_file=config_file,
        )
        if secrets.copied or secrets.removed or secrets.skipped:
            ctx.log.info(
                "preview secrets from %s: %d copied, %d removed, %d never copied (%s)",
                secrets.source,
                len(secrets.copied),
                len(secrets.removed),
                len(secrets.skipped),
                ", ".join(f"{k}: {v}" for k, v in secrets.skipped.items()) or "none",
            )
        ctx.renew_lease()
        # helm's own requests go through the retrying proxy (see kubeproxy for why).
        with kubeproxy.for_helm(settings) as helm_api:
            recovered = helm.recover_stuck(
                release=names.RELEASE_NAME,
                namespace=namespace,
                kubeconfig=helm_api.kubeconfig,
                log=ctx.log,
            )
            ctx.renew_lease()
            release = _install(
                api,
                ctx,
                namespace=namespace,
                project_id=project_id,
                pr=run.pr,
                values=values,
                kubeconfig=helm_api.kubeconfig,
                config_file=config_file,
            )
        if helm_api.retries:
            ctx.log.info("helm's API requests: %s", helm_api.summary())
        ctx.renew_lease()
        _check_health(
            api,
            ctx,
            namespace=namespace,
            project_id=project_id,
            pr=run.pr,
            health_path=values["app"]["healthPath"],
            config_file=config_file,
        )
    finally:
        api.close()
    ingress = _has_ingress(validated)
    result = DeployResult(
        namespace=namespace,
        # No Ingress (ingress.enabled: false): there is no public URL to show or link.
        preview_url=validated.preview_url if ingress else "",
        ingress=ingress,
        release_revision=release.revision,
        seconds=round(time.monotonic() - started, 3),
        created=created,
        applied=applied,
        recovered_release=recovered,
        helm_api=helm_api.summary(),
        image=build.image,
    )
    ctx.log.info("deployed %s revision %s to %s", run.repo, release.revision, namespace)
    return result.write(run)


def _selector(project_id: str, pr: int) -> str:
    # The app's pods only: the database pods share the release and the k8s-ee labels.
    return (
        f"{names.LABEL_PROJECT}={project_id},{names.LABEL_PR}={pr},"
        f"app.kubernetes.io/instance={names.RELEASE_NAME},app.kubernetes.io/name={APP_CHART_NAME}"
    )


def _install(
    api: Any,
    ctx: StageContext,
    *,
    namespace: str,
    project_id: str,
    pr: int,
    values: dict[str, Any],
    kubeconfig: str,
    config_file: str,
) -> helm.ReleaseStatus:
    """helm upgrade --install, watching the pods so a hopeless rollout fails fast."""
    seen: dict[str, Any] = {}

    def on_tick() -> str | None:
        ctx.renew_lease()
        diagnostics = health.pod_diagnostics(
            api=api, namespace=namespace, selector=_selector(project_id, pr)
        )
        if diagnostics["reason"]:
            seen.clear()
            seen.update(diagnostics)
        return fail_fast_reason(diagnostics)

    try:
        return helm.upgrade_install(
            release=names.RELEASE_NAME,
            chart=chart_path(ctx.settings),
            namespace=namespace,
            values=values,
            timeout_seconds=ctx.settings.deploy.helm_timeout_seconds,
            kubeconfig=kubeconfig,
            log=ctx.log,
            on_tick=on_tick,
            on_line=ctx.record_log,
        )
    except HelmError as exc:
        if not seen.get("reason"):
            seen.update(
                health.pod_diagnostics(
                    api=api, namespace=namespace, selector=_selector(project_id, pr), probes=True
                )
            )
        raise deploy_failure(
            exc,
            seen,
            values=values,
            timeout=ctx.settings.deploy.helm_timeout_seconds,
            config_file=config_file,
        ) from exc


def _check_health(
    api: Any,
    ctx: StageContext,
    *,
    namespace: str,
    project_id: str,
    pr: int,
    health_path: str,
    config_file: str,
) -> None:
    settings = ctx.settings.deploy
    service = names.deployment_name(project_id, pr)
    result = health.wait_healthy(
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
    diagnostics = health.pod_diagnostics(
        api=api, namespace=namespace, selector=_selector(project_id, pr)
    )
    state = f"; pod state {diagnostics['reason']}" if diagnostics["reason"] else ""
    raise DeployFailed(
        f"The health check GET {health_path} failed after {result.attempts} attempts: "
        f"{result.detail or 'no answer'}{state}.",
        hint=f"Make {health_path} answer with a 2xx status once the app is ready, or point "
        f"app.healthPath in {config_file} at a path that does." + logs_hint(diagnostics),
        where=Where(file=config_file, field="app.healthPath"),
    )


def _has_ingress(validated: ValidateResult) -> bool:
    ingress = validated.config.get("ingress") or {}
    return bool(ingress.get("enabled", True))


def record_changes(run: Run, before: EnvironmentRecord) -> dict[str, Any]:
    """A deployed run makes the environment ready at its URL."""
    result = DeployResult.of(run)
    return {
        "status": Status.READY.value,
        "preview_url": result.preview_url,
        "ingress": result.ingress,
        "helm_api": result.helm_api,
        "error": None,
    }
