"""``k8see doctor``: can this cluster and these credentials run k8see's deploys?

Two questions, asked of the API server with the deploy pool's own credentials
(``deploy.kubeconfig``, or the pod's service account):

- **Operators.** For the metrics option and each database the platform offers through an
  operator, is the operator's kind served (API discovery)? A deploy asking for one that is
  not fails before helm (``stages.served_kinds``); doctor says so ahead of time.
- **Permissions.** May these credentials do what the deploy pool does
  (SelfSubjectAccessReview)? Across the cluster: namespaces, finalizing a stuck one, the
  ``kubernetes`` Service and Endpoints, RoleBindings, and ``bind`` on the ClusterRoles of
  ``deploy.namespace_bindings``. Inside a PR namespace the rights come from those bindings,
  which a deploy writes into each new namespace, so they cannot be checked before one exists;
  without bindings configured they are checked in ``namespace`` (helm's release Secrets, the
  app's Deployments, Services, Ingresses, the guardrails and the operators' kinds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from k8see import operators
from k8see.integrations import discovery, kube, kubeapi
from k8see.settings import PlatformSettings

__all__ = ["Access", "Report", "check"]

#: Rights the deploy pool needs across the cluster: (verb, group, resource, subresource).
CLUSTER_RIGHTS = [
    *[(verb, "", "namespaces", "") for verb in ("get", "list", "create", "patch", "delete")],
    ("update", "", "namespaces", "finalize"),
]
#: Rights it needs inside a PR namespace (granted there by the namespace bindings).
NAMESPACE_RIGHTS = [
    *[(verb, "", "secrets", "") for verb in ("get", "list", "create", "update", "delete")],
    *[
        ("create", group, resource, "")
        for group, resource in (
            ("", "configmaps"),
            ("", "services"),
            ("", "serviceaccounts"),
            ("", "persistentvolumeclaims"),
            ("", "resourcequotas"),
            ("", "limitranges"),
            ("apps", "deployments"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "networkpolicies"),
            ("rbac.authorization.k8s.io", "roles"),
        )
    ],
    ("patch", "", "persistentvolumeclaims", ""),
    ("list", "", "pods", ""),
    ("get", "", "pods", "log"),
    ("get", "", "services", "proxy"),
]


@dataclass(frozen=True)
class Access:
    """One permission asked about, and the answer."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    allowed: bool = False

    def describe(self) -> str:
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        what += f".{self.group}" if self.group else ""
        what += f" {self.name}" if self.name else ""
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {what}{where}"


@dataclass(frozen=True)
class Report:
    """What doctor found; ``ok`` is False when an operator or a permission is missing."""

    operators: list[dict[str, Any]]
    permissions: list[Access]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return all(o["served"] for o in self.operators) and all(p.allowed for p in self.permissions)

    def text(self) -> str:
        """The report for people: one line per operator and per permission."""
        lines = [
            f"{'ok     ' if o['served'] else 'MISSING'} {o['option']}: {o['operator']}'s "
            f"{o['kind']} ({o['apiVersion']})"
            for o in self.operators
        ]
        lines += [
            f"{'ok     ' if p.allowed else 'DENIED '} {p.describe()}" for p in self.permissions
        ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "operators": self.operators,
            "permissions": [{**asdict(p), "check": p.describe()} for p in self.permissions],
            "notes": self.notes,
        }


def check(settings: PlatformSettings, *, namespace: str) -> Report:
    """Ask the cluster, with the deploy pool's credentials.

    Raises:
        KubeError: the API server cannot be reached or refuses discovery.
    """
    api = kube.make_api(settings)
    try:
        missing = set(
            discovery.unserved(api, [(o.api_version, o.kind) for o in operators.OPERATOR_KINDS])
        )
        found = [
            {
                "option": o.option,
                "operator": o.operator,
                "kind": o.kind,
                "apiVersion": o.api_version,
                "served": (o.api_version, o.kind) not in missing,
            }
            for o in operators.OPERATOR_KINDS
        ]
        wanted = [Access(v, r, g, s) for v, g, r, s in CLUSTER_RIGHTS]
        wanted += [Access("get", "services", name="kubernetes", namespace="default")]
        wanted += [Access("get", "endpoints", name="kubernetes", namespace="default")]
        wanted += [
            Access(verb, "rolebindings", "rbac.authorization.k8s.io", namespace=namespace)
            for verb in ("get", "create", "patch")
        ]
        bindings = settings.deploy.namespace_bindings
        notes: list[str] = []
        if bindings:
            wanted += [
                Access("bind", "clusterroles", "rbac.authorization.k8s.io", name=role)
                for role in sorted(bindings)
            ]
            notes.append(
                "Rights inside PR namespaces come from RoleBindings to "
                f"{', '.join(sorted(bindings))}, written by each deploy; checked: bind on them."
            )
        else:
            wanted += [Access(v, r, g, s, namespace) for v, g, r, s in NAMESPACE_RIGHTS]
            wanted += [
                Access("create", o.plural, o.group, namespace=namespace)
                for o in operators.OPERATOR_KINDS
                if (o.api_version, o.kind) not in missing
            ]
        return Report(found, [_review(api, a) for a in wanted], notes)
    finally:
        api.close()


def _review(api: ApiClient, access: Access) -> Access:
    """The API server's answer to "may I?" for ``access`` (SelfSubjectAccessReview)."""
    attributes = {
        "verb": access.verb,
        "group": access.group,
        "resource": access.resource,
        "subresource": access.subresource,
        "namespace": access.namespace,
        "name": access.name,
    }
    review = kubeapi.call(
        client.AuthorizationV1Api(api).create_self_subject_access_review,
        {"spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}}},
        what=f"ask whether this identity may {access.describe()}",
    )
    allowed = bool(review.status and review.status.allowed)
    return Access(**{**asdict(access), "allowed": allowed})
