"""The platform chart's admission policy holds the deploy pool to the namespaces k8see manages.

RBAC must let the deploy pool write RoleBindings, and update and delete namespaces, anywhere
(a PR namespace does not exist before its first deploy); the ValidatingAdmissionPolicy narrows
that back. The sandbox does not run admission policies, so the policy's CEL expressions are
evaluated here with cel-python, a CEL interpreter, over the variables the API server gives
them (``request``, ``object``, ``oldObject``, ``namespaceObject``), for what k8see itself does
(all allowed) and for what a compromised deploy worker might try (all refused).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require_tool

celpy = pytest.importorskip("celpy")

PLATFORM = ROOT / "charts" / "k8see-platform"
DEPLOY_USER = "system:serviceaccount:k8see:k8see-k8see-platform-deploy"
VAP = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
MANAGED = {"app.kubernetes.io/managed-by": "k8see", "k8s-ee/type": "ephemeral"}


def render(*args: str) -> list[dict[str, Any]]:
    home = os.environ.get("HOME", "/tmp")
    done = subprocess.run(
        [require_tool("helm"), "template", "k8see", str(PLATFORM), "-n", "k8see",
         "-f", str(PLATFORM / "ci" / "default-values.yaml"), *args],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "HOME": home},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    objects = render("--api-versions", VAP)
    (found,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"] == {
        "policyName": found["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    return found


def evaluate(expression: str, **variables: Any) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(expression))
    activation = {k: celpy.json_to_cel(v) for k, v in variables.items()}
    return bool(program.evaluate(activation))


def admitted(policy: dict[str, Any], **variables: Any) -> bool:
    """Whether the API server would admit the request: the policy does not match it, or
    every validation holds."""
    spec = policy["spec"]
    if not all(evaluate(c["expression"], **variables) for c in spec["matchConditions"]):
        return True
    return all(evaluate(v["expression"], **variables) for v in spec["validations"])


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def rolebinding_request(ns: dict[str, Any], user: str = DEPLOY_USER) -> dict[str, Any]:
    return {
        "request": {
            "operation": "CREATE",
            "resource": {"group": "rbac.authorization.k8s.io", "resource": "rolebindings"},
            "userInfo": {"username": user},
        },
        "object": {"kind": "RoleBinding", "metadata": {"name": "x"}},
        "oldObject": None,
        "namespaceObject": ns,
    }


def namespace_request(old: dict[str, Any], operation: str = "UPDATE") -> dict[str, Any]:
    return {
        "request": {
            "operation": operation,
            "resource": {"group": "", "resource": "namespaces"},
            "userInfo": {"username": DEPLOY_USER},
        },
        "object": None if operation == "DELETE" else old,
        "oldObject": old,
        "namespaceObject": None,
    }


def test_what_k8see_does_is_admitted(policy: dict[str, Any]) -> None:
    pr_namespace = namespace("shop-pr-7", MANAGED)
    adopted = namespace("old-pr-3", {**MANAGED, "app.kubernetes.io/managed-by": "github-actions"})
    # The deploy stage binds the pools in a PR namespace (and the mongodb subchart's binding)
    assert admitted(policy, **rolebinding_request(pr_namespace))
    # It relabels, finalizes and deletes its own namespaces, the reference's included
    for ns in (pr_namespace, adopted):
        assert admitted(policy, **namespace_request(ns))
        assert admitted(policy, **namespace_request(ns, "DELETE"))


def test_what_a_compromised_deploy_worker_might_try_is_refused(policy: dict[str, Any]) -> None:
    # Binding itself to the PR roles where Secrets worth stealing are
    assert not admitted(policy, **rolebinding_request(namespace("kube-system", {})))
    assert not admitted(policy, **rolebinding_request(namespace("default")))
    # ... or in a namespace labelled ephemeral by someone else
    other = {**MANAGED, "app.kubernetes.io/managed-by": "argocd"}
    assert not admitted(policy, **rolebinding_request(namespace("apps", other)))
    # Labelling kube-system as k8see's first, or deleting someone else's namespace
    assert not admitted(policy, **namespace_request(namespace("kube-system", {})))
    assert not admitted(policy, **namespace_request(namespace("payments"), "DELETE"))


def test_other_users_are_not_held_by_it(policy: dict[str, Any]) -> None:
    cluster_admin = rolebinding_request(namespace("kube-system", {}), user="kubernetes-admin")
    assert admitted(policy, **cluster_admin)
    maintenance = "system:serviceaccount:k8see:k8see-k8see-platform-maintenance"
    assert admitted(policy, **rolebinding_request(namespace("default"), user=maintenance))


def test_left_out_where_the_cluster_lacks_the_api_or_when_turned_off() -> None:
    kinds = {o["kind"] for o in render()}
    assert "ValidatingAdmissionPolicy" not in kinds
    off = render("--api-versions", VAP, "--set", "admissionPolicy.enabled=false")
    assert "ValidatingAdmissionPolicy" not in {o["kind"] for o in off}
