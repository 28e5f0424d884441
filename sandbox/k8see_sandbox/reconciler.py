"""What stands in for the database operators in the local cluster: a small reconciler.

The CRDs are the operators' own (``k8see_sandbox.crds``); the operators are not. For each
CloudNativePG ``Cluster``, ``MongoDBCommunity`` and MinIO ``Tenant`` this reconciler creates,
through the real API, what the real operator creates and the app relies on:

- the Secrets, with the names and keys the operators write (CloudNativePG's ``<name>-app``
  basic-auth Secret with ``uri``/``host``/``port``/``dbname``/``user``/``password``/...;
  MongoDB's ``<name>-<db>-<user>`` with ``connectionString.standard``/``username``/
  ``password``, from the user's password Secret; MinIO needs none, the chart writes its own);
- the Services the app connects to (``<name>-rw``/``-ro``/``-r``, ``<name>-svc``,
  ``<name>-hl``) on the database's port;
- a StatefulSet whose pod runs our test app (``tools/go/testapp``) listening on that port, in
  place of the database server: readiness, the Services' endpoints and the app's connection
  wiring are real, the database protocol is not;
- the status fields the operator reports (CloudNativePG ``readyInstances``/``phase``, MongoDB
  ``phase``/``mongoUri``, MinIO ``currentState``), set from the StatefulSet's readiness.

Everything it creates is owned by the custom resource (``ownerReferences``), so the garbage
collector removes it with the resource, as with the operators. It watches (list, then watch
from the list's resourceVersion) in one thread per kind, and one for the StatefulSets.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

__all__ = ["KINDS", "OperatorStandIn", "StandInKind"]

log = logging.getLogger(__name__)

#: Labels every object the stand-in creates, with the plural of the kind it stands in for.
STANDIN_LABEL = "k8see.dev/operator-standin"
WATCH_SECONDS = 5
#: Every resource is reconciled again this often (an input it waits for, such as MongoDB's
#: password Secret, brings no event of its own), as an informer's resync period would.
RESYNC_SECONDS = 15.0
#: The database pod's resources: far below what the databases' quota rows allow, and at the
#: PR namespaces' LimitRange minimum (10m, 32Mi).
RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "50m", "memory": "64Mi"},
}


@dataclass(frozen=True)
class StandInKind:
    """A custom kind the stand-in reconciles.

    Attributes:
        group, version, plural, kind: The resource.
        port: The database's port, which its pod listens on and its Services expose.
        statefulset: The StatefulSet's name for a resource name.
        pod_labels: The labels the operator gives its pods (its Services select them).
        services: Each Service's name suffix and the labels it selects beyond the pod's.
        secrets: The Secrets' data for the resource, or None while an input is missing.
        status: The status for the resource, given the number of ready pods.
    """

    group: str
    version: str
    plural: str
    kind: str
    port: int
    statefulset: Callable[[str], str]
    pod_labels: Callable[[str], dict[str, str]]
    services: dict[str, dict[str, str]]
    secrets: Callable[[client.CoreV1Api, dict[str, Any]], dict[str, dict[str, str]] | None]
    status: Callable[[dict[str, Any], int], dict[str, Any]]


def _cnpg_secrets(core: client.CoreV1Api, obj: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``<name>-app`` as CloudNativePG writes it (pkg/specs/secrets.go), for the initdb owner."""
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    initdb = ((obj.get("spec") or {}).get("bootstrap") or {}).get("initdb") or {}
    dbname = str(initdb.get("database") or "app")
    user = str(initdb.get("owner") or dbname)
    password = secrets.token_urlsafe(24)
    host = f"{name}-rw"

    def uri(at: str) -> str:
        login = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
        return f"postgresql://{login}@{at}:5432/{dbname}"

    def jdbc(at: str) -> str:
        query = urllib.parse.urlencode({"password": password, "user": user})
        return f"jdbc:postgresql://{at}:5432/{dbname}?{query}"

    short, fqdn = f"{host}.{ns}", f"{host}.{ns}.svc.cluster.local"
    return {
        f"{name}-app": {
            "username": user,
            "user": user,
            "password": password,
            "dbname": dbname,
            "host": host,
            "port": "5432",
            "pgpass": f"{host}:5432:{dbname}:{user}:{password}\n",
            "uri": uri(short),
            "jdbc-uri": jdbc(short),
            "fqdn-uri": uri(fqdn),
            "fqdn-jdbc-uri": jdbc(fqdn),
        }
    }


def _mongodb_secrets(
    core: client.CoreV1Api, obj: dict[str, Any]
) -> dict[str, dict[str, str]] | None:
    """One ``<name>-<db>-<user>`` connection Secret per user, from the user's password Secret
    (as the MongoDB operator does); None until that Secret exists."""
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    spec = obj.get("spec") or {}
    members = int(spec.get("members") or 1)
    hosts = ",".join(f"{name}-{i}.{name}-svc.{ns}.svc.cluster.local:27017" for i in range(members))
    out: dict[str, dict[str, str]] = {}
    for user in spec.get("users") or []:
        ref = user.get("passwordSecretRef") or {}
        try:
            source = core.read_namespaced_secret(ref.get("name", ""), ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        encoded = (source.data or {}).get(ref.get("key") or "password")
        if encoded is None:
            return None
        password = base64.b64decode(encoded).decode()
        username, db = str(user["name"]), str(user.get("db") or "admin")
        login = f"{urllib.parse.quote_plus(username)}:{urllib.parse.quote_plus(password)}@"
        secret = user.get("connectionStringSecretName") or _normalize(f"{name}-{db}-{username}")
        out[secret] = {
            "connectionString.standard": (
                f"mongodb://{login}{hosts}/{db}?replicaSet={name}&ssl=false"
            ),
            "connectionString.standardSrv": (
                f"mongodb+srv://{login}{name}-svc.{ns}.svc.cluster.local/{db}"
                f"?replicaSet={name}&ssl=false"
            ),
            "username": username,
            "password": password,
        }
    return out


def _normalize(name: str) -> str:
    """The MongoDB operator's RFC 1123 form of a Secret name."""
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]+", "-", name.lower())).strip("-")
    return name[:253]


def _no_secrets(core: client.CoreV1Api, obj: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {}


def _cnpg_status(obj: dict[str, Any], ready: int) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    instances = int((obj.get("spec") or {}).get("instances") or 1)
    return {
        "instances": instances,
        "readyInstances": ready,
        "phase": "Cluster in healthy state" if ready else "Setting up primary",
        "currentPrimary": f"{name}-1",
        "targetPrimary": f"{name}-1",
        "writeService": f"{name}-rw",
        "readService": f"{name}-r",
    }


def _mongodb_status(obj: dict[str, Any], ready: int) -> dict[str, Any]:
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    spec = obj.get("spec") or {}
    members = int(spec.get("members") or 1)
    hosts = ",".join(f"{name}-{i}.{name}-svc.{ns}.svc.cluster.local:27017" for i in range(members))
    return {
        "mongoUri": f"mongodb://{hosts}/?replicaSet={name}",
        "phase": "Running" if ready else "Pending",
        "version": str(spec.get("version") or ""),
        "currentStatefulSetReplicas": ready,
        "currentMongoDBMembers": ready,
    }


def _tenant_status(obj: dict[str, Any], ready: int) -> dict[str, Any]:
    return {
        "currentState": "Initialized" if ready else "Provisioning initial users",
        "availableReplicas": ready,
        "healthStatus": "green" if ready else "red",
    }


KINDS = (
    StandInKind(
        group="postgresql.cnpg.io",
        version="v1",
        plural="clusters",
        kind="Cluster",
        port=5432,
        statefulset=lambda name: name,
        pod_labels=lambda name: {"cnpg.io/cluster": name, "cnpg.io/instanceRole": "primary"},
        services={
            "-rw": {"cnpg.io/instanceRole": "primary"},
            "-ro": {"cnpg.io/instanceRole": "replica"},
            "-r": {},
        },
        secrets=_cnpg_secrets,
        status=_cnpg_status,
    ),
    StandInKind(
        group="mongodbcommunity.mongodb.com",
        version="v1",
        plural="mongodbcommunity",
        kind="MongoDBCommunity",
        port=27017,
        statefulset=lambda name: name,
        pod_labels=lambda name: {"app": f"{name}-svc"},
        services={"-svc": {}},
        secrets=_mongodb_secrets,
        status=_mongodb_status,
    ),
    StandInKind(
        group="minio.min.io",
        version="v2",
        plural="tenants",
        kind="Tenant",
        port=9000,
        statefulset=lambda name: f"{name}-pool-0",
        pod_labels=lambda name: {"v1.min.io/tenant": name, "v1.min.io/pool": "pool-0"},
        services={"-hl": {}},
        secrets=_no_secrets,
        status=_tenant_status,
    ),
)


class OperatorStandIn:
    """Reconciles ``KINDS`` in every namespace until ``stop()``.

    Args:
        api: A client with rights to the kinds, Secrets, Services and StatefulSets in every
            namespace (an operator's ClusterRole; the admin client in the sandbox).
        image: The image of the database pods: the test app, which listens on ``$PORT``.
    """

    def __init__(self, api: client.ApiClient, *, image: str) -> None:
        self.api = api
        self.image = image
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> OperatorStandIn:
        for kind in KINDS:
            self._spawn(f"standin-{kind.plural}", functools.partial(self._watch_kind, kind))
        self._spawn("standin-statefulsets", self._watch_statefulsets)
        return self

    def stop(self) -> None:
        """Stop watching (each thread ends within ``WATCH_SECONDS``)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=WATCH_SECONDS * 3)
        self._threads.clear()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- the watch loops -------------------------------------------------------------------

    def _watch(self, lister: Callable[..., Any], handle: Callable[[Any], None], **kw: Any) -> None:
        """List, handle each item, then watch from the list's resourceVersion; start over
        after ``RESYNC_SECONDS``, an error or an expired resourceVersion (410)."""
        while not self._stopping.is_set():
            try:
                listing = lister(**kw)
                items, version = _items_and_version(listing)
                for item in items:
                    handle(item)
                resync = time.monotonic() + RESYNC_SECONDS
                while not self._stopping.is_set() and time.monotonic() < resync:
                    stream = watch.Watch().stream(
                        lister,
                        resource_version=version,
                        timeout_seconds=WATCH_SECONDS,
                        _request_timeout=WATCH_SECONDS * 2,
                        **kw,
                    )
                    for event in stream:
                        if event["type"] == "ERROR":
                            raise _Expired
                        version = _version_of(event["object"]) or version
                        if event["type"] in ("ADDED", "MODIFIED"):
                            handle(event["object"])
                        if self._stopping.is_set():
                            return
            except _Expired:
                continue
            except ApiException as exc:
                if exc.status not in (404, 410):  # 404: the CRD is not installed (yet)
                    log.warning("Operator stand-in: %s answered %s.", lister.__name__, exc.status)
                self._stopping.wait(1)
            except Exception as exc:  # noqa: BLE001 - a watch thread must outlive a bad answer
                log.warning("Operator stand-in: watch failed (%s); starting over.", exc)
                self._stopping.wait(1)

    def _watch_kind(self, kind: StandInKind) -> None:
        self._watch(
            self.custom.list_cluster_custom_object,
            lambda obj: self._reconcile(kind, obj),
            group=kind.group,
            version=kind.version,
            plural=kind.plural,
        )

    def _watch_statefulsets(self) -> None:
        self._watch(
            self.apps.list_stateful_set_for_all_namespaces,
            self._statefulset_changed,
            label_selector=STANDIN_LABEL,
        )

    # -- reconciling -----------------------------------------------------------------------

    def _reconcile(self, kind: StandInKind, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return
        name, ns = meta["name"], meta["namespace"]
        owner = client.V1OwnerReference(
            api_version=f"{kind.group}/{kind.version}",
            kind=kind.kind,
            name=name,
            uid=meta["uid"],
            controller=True,
            block_owner_deletion=True,
        )
        labels = {STANDIN_LABEL: kind.plural}
        try:
            data = kind.secrets(self.core, obj)
            for secret_name, values in (data or {}).items():
                self._create(
                    self.core.create_namespaced_secret,
                    ns,
                    client.V1Secret(
                        metadata=_meta(secret_name, labels, owner),
                        type="kubernetes.io/basic-auth" if kind.kind == "Cluster" else "Opaque",
                        string_data=values,
                    ),
                )
            pods = kind.pod_labels(name)
            for suffix, extra in kind.services.items():
                self._create(
                    self.core.create_namespaced_service,
                    ns,
                    self._service(f"{name}{suffix}", kind, {**pods, **extra}, labels, owner),
                )
            self._create(
                self.apps.create_namespaced_stateful_set,
                ns,
                self._statefulset(kind.statefulset(name), kind, pods, labels, owner, name),
            )
            self._set_status(kind, obj)
        except ApiException as exc:
            if exc.status not in (403, 404):  # a namespace being deleted, say
                log.warning("Operator stand-in: %s %s/%s: %s.", kind.kind, ns, name, exc.status)

    @staticmethod
    def _create(create: Callable[..., Any], namespace: str, body: Any) -> None:
        try:
            create(namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # what exists is kept: a Secret's password must not change
                raise

    def _service(
        self,
        name: str,
        kind: StandInKind,
        selector: dict[str, str],
        labels: dict[str, str],
        owner: client.V1OwnerReference,
    ) -> client.V1Service:
        headless = kind.kind != "Cluster"  # MongoDB's -svc and MinIO's -hl are headless
        return client.V1Service(
            metadata=_meta(name, labels, owner),
            spec=client.V1ServiceSpec(
                cluster_ip="None" if headless else None,
                selector=selector,
                ports=[client.V1ServicePort(name="db", port=kind.port, target_port=kind.port)],
                publish_not_ready_addresses=headless or None,
            ),
        )

    def _statefulset(
        self,
        name: str,
        kind: StandInKind,
        pod_labels: dict[str, str],
        labels: dict[str, str],
        owner: client.V1OwnerReference,
        resource: str,
    ) -> client.V1StatefulSet:
        container = client.V1Container(
            name="database",
            image=self.image,
            image_pull_policy="IfNotPresent",
            env=[client.V1EnvVar(name="PORT", value=str(kind.port))],
            ports=[client.V1ContainerPort(name="db", container_port=kind.port)],
            readiness_probe=client.V1Probe(
                tcp_socket=client.V1TCPSocketAction(port=kind.port), period_seconds=1
            ),
            resources=client.V1ResourceRequirements(**RESOURCES),
            security_context=client.V1SecurityContext(
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                run_as_non_root=True,
                capabilities=client.V1Capabilities(drop=["ALL"]),
            ),
        )
        return client.V1StatefulSet(
            metadata=_meta(name, labels, owner),
            spec=client.V1StatefulSetSpec(
                replicas=1,
                service_name=f"{resource}{next(iter(kind.services))}",
                selector=client.V1LabelSelector(match_labels=pod_labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={**pod_labels, **labels}),
                    spec=client.V1PodSpec(
                        automount_service_account_token=False,
                        termination_grace_period_seconds=1,
                        security_context=client.V1PodSecurityContext(
                            run_as_non_root=True,
                            run_as_user=65535,
                            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
                        ),
                        containers=[container],
                    ),
                ),
            ),
        )

    def _statefulset_changed(self, sts: Any) -> None:
        for ref in sts.metadata.owner_references or []:
            kind = next((k for k in KINDS if k.kind == ref.kind), None)
            if kind is None or not ref.api_version.startswith(kind.group + "/"):
                continue
            try:
                obj = self.custom.get_namespaced_custom_object(
                    kind.group, kind.version, sts.metadata.namespace, kind.plural, ref.name
                )
                self._set_status(kind, obj, ready=int(sts.status.ready_replicas or 0))
            except ApiException as exc:
                if exc.status not in (403, 404):
                    log.warning("Operator stand-in: status of %s: %s.", ref.name, exc.status)

    def _set_status(self, kind: StandInKind, obj: dict[str, Any], ready: int | None = None) -> None:
        meta = obj["metadata"]
        if ready is None:
            try:
                sts = self.apps.read_namespaced_stateful_set(
                    kind.statefulset(meta["name"]), meta["namespace"]
                )
                ready = int(sts.status.ready_replicas or 0)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                ready = 0
        status = kind.status(obj, ready)
        if obj.get("status") == status:
            return
        self.custom.patch_namespaced_custom_object_status(
            kind.group,
            kind.version,
            meta["namespace"],
            kind.plural,
            meta["name"],
            {"status": status},
        )


class _Expired(Exception):
    """The watch's resourceVersion is too old (an ERROR event): list again."""


def _meta(name: str, labels: dict[str, str], owner: client.V1OwnerReference) -> Any:
    return client.V1ObjectMeta(name=name, labels=dict(labels), owner_references=[owner])


def _items_and_version(listing: Any) -> tuple[list[Any], str]:
    if isinstance(listing, dict):
        return list(listing.get("items") or []), str(listing["metadata"]["resourceVersion"])
    return list(listing.items or []), str(listing.metadata.resource_version)


def _version_of(obj: Any) -> str | None:
    if isinstance(obj, dict):
        return (obj.get("metadata") or {}).get("resourceVersion")
    return getattr(obj.metadata, "resource_version", None)
