"""``k8see doctor`` against the real cluster.

Covers: with cluster-admin credentials every permission is allowed, and each operator kind is
reported served exactly when API discovery serves it; a missing operator makes the exit code
1 and the JSON name it; once a test CRD for it is installed it is reported served, and with
every operator kind served the exit code is 0; a service account with no rights is denied
each permission, checked by the API server (SelfSubjectAccessReview); the text report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from k8see import operators
from k8see.cli import main
from k8see.integrations import discovery


def doctor(kubeconfig: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["doctor", *args], env={"K8SEE_DEPLOY__KUBECONFIG": kubeconfig}
    )
    return result.exit_code, result.output


def served_now(api: Any) -> set[tuple[str, str]]:
    wanted = [(o.api_version, o.kind) for o in operators.OPERATOR_KINDS]
    return set(wanted) - set(discovery.unserved(api, wanted))


def crd_for(o: operators.OperatorKind) -> dict[str, Any]:
    group, _, version = o.api_version.rpartition("/")
    return {
        "metadata": {"name": f"{o.plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": o.plural, "singular": o.kind.lower(), "kind": o.kind},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture
def installed_crds(kube_api_client: Any) -> Iterator[list[str]]:
    """CRDs this test installs; removed afterwards, and waited for, so later tests (the deploy
    gate's) see the cluster as it was."""
    names: list[str] = []
    yield names
    ext = client.ApiextensionsV1Api(kube_api_client)
    for name in names:
        ext.delete_custom_resource_definition(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = {c.metadata.name for c in ext.list_custom_resource_definition().items}
        if not left & set(names):
            return
        time.sleep(0.2)


def test_the_report_follows_what_the_cluster_serves(
    kubeconfig: str, kube_api_client: Any, installed_crds: list[str]
) -> None:
    # Given the cluster as it is
    before = served_now(kube_api_client)
    code, out = doctor(kubeconfig, "--json")
    report = json.loads(out)
    # Then cluster-admin may do everything the deploy pool does
    assert report["permissions"] and all(p["allowed"] for p in report["permissions"])
    # And each operator is reported served exactly when discovery serves its kind
    assert {(o["apiVersion"], o["kind"]) for o in report["operators"] if o["served"]} == before
    missing = [o for o in operators.OPERATOR_KINDS if (o.api_version, o.kind) not in before]
    if not missing:
        pytest.skip("this cluster serves every operator kind already")
    assert code == 1 and report["ok"] is False
    assert {o["option"] for o in report["operators"] if not o["served"]} == {
        o.option for o in missing
    }
    # When a CRD for the first missing kind is installed
    ext = client.ApiextensionsV1Api(kube_api_client)
    first = missing[0]
    ext.create_custom_resource_definition(crd_for(first))
    installed_crds.append(f"{first.plural}.{first.group}")
    wait_served(kube_api_client, first)
    # Then doctor reports it served, and still names the others
    code, out = doctor(kubeconfig, "--json")
    now = {o["option"]: o["served"] for o in json.loads(out)["operators"]}
    assert now[first.option] is True
    assert all(now[o.option] is False for o in missing[1:])
    assert code == (0 if len(missing) == 1 else 1)
    # And with every operator's kind installed, doctor passes
    for o in missing[1:]:
        ext.create_custom_resource_definition(crd_for(o))
        installed_crds.append(f"{o.plural}.{o.group}")
        wait_served(kube_api_client, o)
    code, out = doctor(kubeconfig)
    assert code == 0, out
    assert "MISSING" not in out and "DENIED" not in out
    assert f"ok      {first.option}: {first.operator}'s {first.kind}" in out


def wait_served(api: Any, o: operators.OperatorKind) -> None:
    deadline = time.monotonic() + 30
    while (o.api_version, o.kind) not in served_now(api):
        assert time.monotonic() < deadline, f"{o.kind} not served after 30 s"
        time.sleep(0.2)


def test_credentials_without_rights_are_denied_by_the_api_server(
    kubeconfig: str, kube_api_client: Any, kube_namespace: str, tmp_path: Path
) -> None:
    # Given a service account bound to nothing, as a deploy pool set up wrongly would be
    core = client.CoreV1Api(kube_api_client)
    core.create_namespaced_service_account(kube_namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token(
        "nobody", kube_namespace, {"spec": {"audiences": []}}
    ).status.token
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "nobody"}}],
                "current-context": "c",
            }
        )
    )
    # When doctor runs with its credentials
    code, out = doctor(str(path), "--json")
    report = json.loads(out)
    # Then the API server refused each right the deploy pool needs, and doctor says so
    assert code == 1
    checks = {p["check"]: p["allowed"] for p in report["permissions"]}
    assert checks["create namespaces"] is False
    assert checks["update namespaces/finalize"] is False
    assert checks["create secrets in k8see-doctor-pr-0"] is False
    # And discovery, open to every authenticated identity, still answered for the operators
    assert len(report["operators"]) == len(operators.OPERATOR_KINDS)
