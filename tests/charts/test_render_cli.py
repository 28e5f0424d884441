"""``k8see render``, run as a user runs it: the real CLI in a subprocess, no cluster.

Covers: one multi-document YAML stream in the deploy's order (namespace, quota, limits, five
policies, pull secret, then the release), the quota computed for the example's database and
storage, the registry pull secret present but blanked (the password never printed), the
database wiring of the example; and bad input (no config, bad repository, invalid config)
ending with ``Error:``/``Hint:`` and an exit code instead of a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k8see.manifests import quota
from tests.conftest import ROOT, require_tool

EXAMPLE = ROOT / "examples" / "postgres-app"
PASSWORD = "s3cret-registry-pass-123"


def k8see(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "K8SEE_REGISTRY__USERNAME": "bot",
        "K8SEE_REGISTRY__PASSWORD": PASSWORD,
        "K8SEE_DEPLOY__DOMAIN": "preview.test",
    }
    return subprocess.run(
        [sys.executable, "-m", "k8see", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_render_prints_every_manifest_in_apply_order() -> None:
    require_tool("helm")
    done = k8see("render", str(EXAMPLE), "--pr", "7", "--repo", "acme/shop")
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds[:3] == ["Namespace", "ResourceQuota", "LimitRange"]
    assert kinds[3:8] == ["NetworkPolicy"] * 5
    assert kinds[8] == "Secret"
    assert {"ConfigMap", "Deployment", "Service", "Ingress", "Cluster"} <= set(kinds[9:])
    assert docs[0]["metadata"]["name"] == "postgres-app-pr-7"
    assert docs[0]["metadata"]["annotations"]["k8s-ee/repository"] == "acme/shop"
    # The quota is the pg row plus the extra 1Gi of the example's 2Gi volume
    hard = docs[1]["spec"]["hard"]
    assert hard == quota.quota_hard(databases={"postgresql": {"storage": "2Gi"}})
    assert hard["requests.storage"] == "4Gi"
    # The pull secret is there, typed and referenced, but its value is not printed
    secret = docs[8]
    assert secret["metadata"]["name"] == "ghcr-pull-secret"
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["data"] == {".dockerconfigjson": ""}
    assert PASSWORD not in done.stdout and PASSWORD not in done.stderr
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "ghcr-pull-secret"}]
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-postgresql"]
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert {"DATABASE_URL", "PGHOST", "PGPASSWORD", "DATABASE_TYPE"} <= env
    cluster = next(d for d in docs if d["kind"] == "Cluster")
    assert cluster["spec"]["storage"]["size"] == "2Gi"


def test_render_accepts_the_file_itself() -> None:
    require_tool("helm")
    done = k8see("render", str(EXAMPLE / "k8s-ee.yaml"), "--pr", "3")
    assert done.returncode == 0, done.stderr
    assert "postgres-app-pr-3" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("render", "examples", "--pr", "1"), 1, "There is no examples/k8s-ee.yaml"),
        (("render", str(EXAMPLE), "--pr", "1", "--repo", "nope"), 1, "OWNER/REPO"),
        (("render", str(EXAMPLE)), 2, "--pr"),
    ],
)
def test_bad_input_gives_a_message_and_no_traceback(
    args: tuple[str, ...], code: int, needle: str
) -> None:
    done = k8see(*args)
    assert done.returncode == code
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_config_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "k8s-ee.yaml").write_text(
        "projectId: x\ndatabases:\n  postgresql:\n    storage: lots\n"
    )
    done = k8see("render", str(tmp_path), "--pr", "1")
    assert done.returncode == 1
    assert "storage" in done.stderr
    assert "Traceback" not in done.stderr
