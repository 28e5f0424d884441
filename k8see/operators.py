"""The operators whose custom resources the app chart renders, and what in k8s-ee.yaml asks.

The app chart emits a ServiceMonitor for ``metrics.enabled`` and a database operator's custom
resource for three of the databases. A cluster that lacks the operator's CRD refuses the
whole release with helm's raw "no matches for kind"; this table turns that into a sentence
naming the operator and the option (deploy's check before helm, ``k8see doctor``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OPERATOR_KINDS", "OperatorKind", "for_kind"]


@dataclass(frozen=True)
class OperatorKind:
    """A custom kind the app chart renders.

    Attributes:
        api_version: ``group/version`` the chart writes.
        kind: The kind.
        plural: Its resource name (for RBAC checks).
        operator: Who serves it, as a user would search for it.
        option: The k8s-ee.yaml setting that makes the chart render it.
        off: How the PR author does without it.
    """

    api_version: str
    kind: str
    plural: str
    operator: str
    option: str
    off: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


OPERATOR_KINDS = (
    OperatorKind(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors",
        "the Prometheus operator",
        "metrics.enabled",
        "turn metrics off (metrics.enabled: false)",
    ),
    OperatorKind(
        "postgresql.cnpg.io/v1",
        "Cluster",
        "clusters",
        "CloudNativePG",
        "databases.postgresql",
        "remove databases.postgresql",
    ),
    OperatorKind(
        "mongodbcommunity.mongodb.com/v1",
        "MongoDBCommunity",
        "mongodbcommunity",
        "the MongoDB Community operator",
        "databases.mongodb",
        "remove databases.mongodb",
    ),
    OperatorKind(
        "minio.min.io/v2",
        "Tenant",
        "tenants",
        "the MinIO operator",
        "databases.minio",
        "remove databases.minio",
    ),
)


def for_kind(api_version: str, kind: str) -> OperatorKind | None:
    """The table's entry for ``kind`` of ``api_version``, or None for any other kind."""
    return next((o for o in OPERATOR_KINDS if (o.api_version, o.kind) == (api_version, kind)), None)
