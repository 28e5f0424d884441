"""Every ``ci/*-values.yaml`` scenario of both charts renders manifests the real API server
accepts, under strict field validation.

``helm lint --strict`` checks templates, not the Kubernetes schema: a misspelt field, a wrong
type or a field of another Kubernetes version passes it and fails (or, worse, is silently
dropped) at install. Here every rendered object of a built-in kind is created with a server-side
dry run (``kubectl create --dry-run=server --validate=strict``) on the local cluster: the
pinned Kubernetes version's own OpenAPI schemas and admission, what kubeconform checks offline,
and for the operators' kinds (ServiceMonitor, PrometheusRule, KEDA's, the databases') their
real CRDs, installed for this module from the operators' Go modules and removed after it. A
kind served by neither fails the test, so a new one cannot slip past.

Each scenario renders under a release name of its own, so cluster-scoped objects (ClusterRoles,
the admission policy) never collide with what other tests or a platform on the cluster made.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8see_sandbox import crds
from tests.conftest import ROOT, require_tool
from tests.fixtures.databases import require_crds

CHARTS = (ROOT / "charts" / "k8see-platform", ROOT / "charts" / "k8s-ee-app")
SCENARIOS = [s for chart in CHARTS for s in sorted((chart / "ci").glob("*-values.yaml"))]
#: The CRDs of every operator kind the charts render ("" is the MinIO Tenant's stand-in).
CRDS = crds.DATABASE_CRDS + crds.METRICS_CRDS + crds.RULES_CRDS + crds.KEDA_CRDS


@pytest.fixture(scope="module")
def operator_crds(kube_api_client: Any) -> Iterator[None]:
    require_crds(CRDS)
    created = crds.install(kube_api_client, CRDS)
    yield
    crds.uninstall(kube_api_client, created)


def _render(scenario: Path, release: str, namespace: str) -> list[dict[str, Any]]:
    chart = scenario.parent.parent
    done = subprocess.run(
        [require_tool("helm"), "template", release, str(chart), "-f", str(scenario),
         "--namespace", namespace],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.parent.parent.name}/{s.name}")
def test_the_api_server_accepts_every_object_of_the_scenario(
    scenario: Path, operator_crds: None, kube_namespace: str, kube_env: dict[str, str]
) -> None:
    kubectl = require_tool("kubectl")
    release = f"scn-{uuid.uuid4().hex[:6]}"
    docs = _render(scenario, release, kube_namespace)
    assert docs, f"{scenario} renders nothing"

    done = subprocess.run(
        [kubectl, "create", "--dry-run=server", "--validate=strict", "-n", kube_namespace,
         "-o", "name", "-f", "-"],
        input=yaml.safe_dump_all(docs), capture_output=True, text=True, env=kube_env,
        timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    # kubectl names each object it created (dry run): all of them, none skipped
    assert len(done.stdout.split()) == len(docs), done.stdout


def test_a_field_the_schema_lacks_is_refused(kube_namespace: str, kube_env: dict[str, str]) -> None:
    # The check above can fail: the same dry run refuses a field Kubernetes does not have
    kubectl = require_tool("kubectl")
    docs = _render(SCENARIOS[0], f"scn-{uuid.uuid4().hex[:6]}", kube_namespace)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    done = subprocess.run(
        [kubectl, "create", "--dry-run=server", "--validate=strict", "-n", kube_namespace,
         "-f", "-"],
        input=yaml.safe_dump(deployment), capture_output=True, text=True, env=kube_env,
        timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert 'unknown field "spec.template.spec.containers[0].livenessProbes"' in done.stderr
