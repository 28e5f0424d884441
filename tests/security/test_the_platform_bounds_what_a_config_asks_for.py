"""Attack 8: a hostile k8s-ee.yaml reconfigures the shared ingress, reserves the cluster,
reaches metadata addresses, or runs a privileged database.

Covers, through the config validator (``admission``, the model) and ``helm template`` of the
real app chart (``render_manifests``):
- ``ingress.annotations`` keys outside ``deploy.ingress_annotation_allowlist`` (nginx
  snippets, traefik router/middleware/TLS keys) and the platform's own keys are a
  ``ConfigError`` naming the key and the allowlist; an allowlisted key reaches the Ingress,
  and the platform's annotations win over anything a config says;
- a quota above ``deploy.quota_ceiling_*`` (128 CPU, ~1 TiB memory, 50,002 GiB storage) is a
  ``ConfigError`` naming the ceiling, and the validate stage refuses it at the PR's head;
- the egress policy denies link-local, CGNAT, metadata addresses and the cluster's CIDRs;
- a database ``securityContext``/``containerSecurityContext`` is refused as the platform's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k8see.admission import admit
from k8see.config import validate_repo_config
from k8see.errors import ConfigError
from k8see.manifests.release import offline_run, render_manifests
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import validate
from k8see_sandbox.github import GitHubSandbox
from tests.conftest import require_tool
from tests.security.common import REPO, platform_settings, source_repo, stage_ctx

SHA = "a" * 40


def admitted(settings: PlatformSettings | None = None, **fields: Any) -> None:
    config = validate_repo_config({"projectId": "shop", **fields})
    admit(config, (settings or PlatformSettings()).deploy, config_file="k8s-ee.yaml")


def rendered(settings: PlatformSettings, **fields: Any) -> dict[str, dict[str, Any]]:
    """``helm template`` of the real chart plus the guardrails, by kind (the last of each)."""
    require_tool("helm")
    config = validate_repo_config({"projectId": "shop", **fields})
    run = offline_run(config, repo=REPO, pr=5, sha=SHA, ref="feature", settings=settings)
    docs = render_manifests(run, settings=settings, api_cidrs=["10.43.0.1"])
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


@pytest.mark.parametrize(
    "key",
    [
        "nginx.ingress.kubernetes.io/server-snippet",
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "traefik.ingress.kubernetes.io/router.middlewares",
        "traefik.ingress.kubernetes.io/router.entrypoints",
        "traefik.ingress.kubernetes.io/router.tls.certresolver",
    ],
)
def test_an_annotation_outside_the_allowlist_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        admitted(ingress={"annotations": {key: "x"}})
    error = refused.value
    assert key in error.message
    assert error.where is not None and error.where.field == f"ingress.annotations.{key}"
    assert "nginx.ingress.kubernetes.io/proxy-body-size" in (error.hint or "")  # the allowlist


def test_an_allowlisted_annotation_reaches_the_ingress_and_the_platforms_win() -> None:
    settings = PlatformSettings(deploy={"domain": "preview.test"})
    key = "nginx.ingress.kubernetes.io/proxy-body-size"
    admitted(settings, ingress={"annotations": {key: "10m"}})
    # A config that never met admission (render of a forged result, say) still cannot
    # replace the platform's TLS resolver, nor add a key off the allowlist
    certresolver = "traefik.ingress.kubernetes.io/router.tls.certresolver"
    annotations = {key: "10m", certresolver: "evil", "x.example/snippet": "y"}
    ingress = rendered(settings, ingress={"annotations": annotations})["Ingress/shop-pr-5-app"]
    got = ingress["metadata"]["annotations"]
    assert got[key] == "10m"
    assert got[certresolver] == "letsencrypt-prod"
    assert "x.example/snippet" not in got


@pytest.mark.parametrize(
    ("fields", "ceiling"),
    [
        ({"resources": {"limits": {"cpu": "128"}}}, "deploy.quota_ceiling_cpu_millicores"),
        ({"resources": {"limits": {"memory": "1000Gi"}}}, "deploy.quota_ceiling_memory_mib"),
        (
            {"databases": {"postgresql": {"storage": "50000Gi"}, "mariadb": {"storage": "2Gi"}}},
            "deploy.quota_ceiling_storage_mib",
        ),
    ],
    ids=["cpu", "memory", "storage"],
)
def test_a_quota_beyond_the_platforms_ceiling_is_a_config_error(
    fields: dict[str, Any], ceiling: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        admitted(**fields)
    assert ceiling in refused.value.message
    # and a platform that raised its ceilings admits it
    high = PlatformSettings(
        deploy={
            "quota_ceiling_cpu_millicores": 10**9,
            "quota_ceiling_memory_mib": 10**9,
            "quota_ceiling_storage_mib": 10**9,
        }
    )
    admitted(high, **fields)


def test_the_validate_stage_refuses_a_config_beyond_the_ceiling(
    github: GitHubSandbox, redis_url: str, tmp_path: Path
) -> None:
    settings = platform_settings(tmp_path, redis_url=redis_url, github_url=github.url)
    hostile = "projectId: shop\nresources:\n  limits:\n    cpu: '128'\n"
    sha = source_repo(tmp_path, files={"k8s-ee.yaml": hostile})
    github.add_repo(REPO)
    github.add_pull(REPO, 5, head_sha=sha, head_ref="feature")
    run = Run(
        repo=REPO, pr=5, sha=sha, generation=1, action=Action.DEPLOY,
        trigger="pull_request:synchronize",
    )  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        validate.run(run, stage_ctx(settings, tmp_path))
    assert "deploy.quota_ceiling_cpu_millicores" in refused.value.message


def test_egress_denies_metadata_cgnat_and_the_clusters_cidrs() -> None:
    settings = PlatformSettings(
        deploy={"domain": "preview.test", "egress_denied_cidrs": ["198.18.0.0/15", "fd00::/8"]}
    )
    policy = rendered(settings)["NetworkPolicy/allow-egress"]
    blocks = [
        peer["ipBlock"]
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    internet = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    for denied in ("169.254.0.0/16", "100.64.0.0/10", "168.63.129.16/32", "198.18.0.0/15"):
        assert denied in internet["except"]
    assert "fd00::/8" not in internet["except"]  # IPv6 has no egress rule at all
    assert all(b["cidr"] in ("0.0.0.0/0", "10.43.0.1/32") for b in blocks)


@pytest.mark.parametrize("db", ["mongodb", "minio"])
@pytest.mark.parametrize("key", ["containerSecurityContext", "securityContext"])
def test_a_database_security_context_is_the_platforms(db: str, key: str) -> None:
    privileged = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    with pytest.raises(ConfigError) as refused:
        validate_repo_config({"projectId": "shop", "databases": {db: {key: privileged}}})
    text = refused.value.message + (refused.value.hint or "")
    assert key in text and "platform" in text
