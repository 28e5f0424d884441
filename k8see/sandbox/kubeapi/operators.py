"""Simulated database operators: CloudNativePG, MongoDB Community and MinIO.

Our charts depend on what these operators create, not only on their status: the app reads
``<cluster>-app`` (CNPG) and ``<name>-admin-<user>`` (MongoDB) Secrets and connects to the
``-rw``, ``-svc`` and ``-hl`` Services. Each custom object gets those objects (owned by it, so
they go when it goes) and a ready status after the ready delay. Names and keys follow the
operators' documentation.
"""

from __future__ import annotations

import base64
import copy
import secrets
import time
from collections.abc import Callable
from typing import Any

from k8see.sandbox.kubeapi.api import Api
from k8see.sandbox.kubeapi.apierrors import ApiError
from k8see.sandbox.kubeapi.workloads import owner_ref

Obj = dict[str, Any]
CNPG = ("postgresql.cnpg.io", "clusters")
MONGO = ("mongodbcommunity.mongodb.com", "mongodbcommunity")
TENANT = ("minio.min.io", "tenants")
SERVICES, SECRETS = ("", "services"), ("", "secrets")


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class Operators:
    def __init__(self, *, api: Api, ready_delay_seconds: float) -> None:
        self.api = api
        self.delay = ready_delay_seconds
        self.first_seen: dict[str, float] = {}
        self.pending = False
        self._handlers: dict[tuple[str, str], Callable[[Obj], None]] = {
            CNPG: self.cnpg,
            MONGO: self.mongodb,
            TENANT: self.tenant,
        }

    def reconcile(self) -> None:
        self.pending = False
        for key, handler in self._handlers.items():
            if self.api.registry.by_key(key) is None:
                continue
            for obj in self.api.store.list(key):
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                started = self.first_seen.setdefault(obj["metadata"]["uid"], time.monotonic())
                if time.monotonic() - started < self.delay:
                    self.pending = True
                    continue
                handler(obj)

    # -- helpers -------------------------------------------------------------------------

    def _ensure(self, key: tuple[str, str], owner: Obj, body: Obj) -> Obj | None:
        """Create ``body`` in the owner's namespace unless it exists; the owner owns it."""
        ns = owner["metadata"]["namespace"]
        existing = self.api.store.get(key, ns, body["metadata"]["name"])
        if existing is not None:
            return existing
        owner_rt = self.api.registry.by_key(
            (owner["apiVersion"].split("/")[0], _plural(self.api, owner))
        )
        rt = self.api.registry.by_key(key)
        assert rt is not None
        if owner_rt is not None:
            body["metadata"]["ownerReferences"] = [owner_ref(owner, owner_rt)]
        try:
            return self.api.create(rt, ns, body)
        except ApiError:
            return None

    def _service(
        self, owner: Obj, name: str, port: int, selector: dict[str, str], *, headless: bool = False
    ) -> None:
        spec: Obj = {
            "ports": [{"name": "main", "port": port, "targetPort": port}],
            "selector": selector,
        }
        if headless:
            spec["clusterIP"] = "None"
        self._ensure(
            SERVICES, owner, {"metadata": {"name": name, "labels": dict(selector)}, "spec": spec}
        )

    def _status(self, key: tuple[str, str], obj: Obj, status: Obj) -> None:
        merged = {**(obj.get("status") or {}), **status}
        if merged != obj.get("status"):
            obj["status"] = merged
            rt = self.api.registry.by_key(key)
            assert rt is not None
            self.api.write(rt, obj)

    # -- CloudNativePG -------------------------------------------------------------------

    def cnpg(self, cluster: Obj) -> None:
        meta, spec = cluster["metadata"], cluster.get("spec") or {}
        name, ns = meta["name"], meta["namespace"]
        initdb = (spec.get("bootstrap") or {}).get("initdb") or {}
        dbname, owner = (
            initdb.get("database", "app"),
            initdb.get("owner", initdb.get("database", "app")),
        )
        for suffix, role in (("rw", "primary"), ("ro", "replica"), ("r", "any")):
            self._service(
                cluster,
                f"{name}-{suffix}",
                5432,
                {"cnpg.io/cluster": name, "cnpg.io/instanceRole": role},
            )
        password = secrets.token_urlsafe(18)
        host = f"{name}-rw"
        data = {
            "username": owner,
            "user": owner,
            "password": password,
            "dbname": dbname,
            "host": host,
            "port": "5432",
            "uri": f"postgresql://{owner}:{password}@{host}.{ns}:5432/{dbname}",
            "jdbc-uri": f"jdbc:postgresql://{host}.{ns}:5432/{dbname}?password={password}&user={owner}",
            "pgpass": f"{host}:5432:{dbname}:{owner}:{password}\n",
        }
        self._ensure(
            SECRETS,
            cluster,
            {
                "metadata": {
                    "name": f"{name}-app",
                    "labels": {"cnpg.io/cluster": name, "cnpg.io/reload": "true"},
                },
                "type": "kubernetes.io/basic-auth",
                "data": {k: _b64(v) for k, v in data.items()},
            },
        )
        instances = int(spec.get("instances", 1))
        self._status(
            CNPG,
            cluster,
            {
                "phase": "Cluster in healthy state",
                "instances": instances,
                "readyInstances": instances,
                "currentPrimary": f"{name}-1",
                "targetPrimary": f"{name}-1",
                "instanceNames": [f"{name}-{i + 1}" for i in range(instances)],
                "writeService": f"{name}-rw",
                "readService": f"{name}-r",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "ClusterIsReady",
                        "message": "Cluster is Ready (simulated by the k8see sandbox)",
                    }
                ],
            },
        )

    # -- MongoDB Community ---------------------------------------------------------------

    def mongodb(self, mdb: Obj) -> None:
        meta, spec = mdb["metadata"], mdb.get("spec") or {}
        name, ns = meta["name"], meta["namespace"]
        members = int(spec.get("members", 1))
        self._service(mdb, f"{name}-svc", 27017, {"app": f"{name}-svc"}, headless=True)
        hosts = ",".join(
            f"{name}-{i}.{name}-svc.{ns}.svc.cluster.local:27017" for i in range(members)
        )
        for user in spec.get("users") or []:
            username, db = str(user.get("name", "")), str(user.get("db", "admin"))
            ref = user.get("passwordSecretRef") or {}
            password = self._secret_value(
                ns, str(ref.get("name", "")), str(ref.get("key", "password"))
            )
            if password is None:
                continue
            secret_name = user.get("connectionStringSecretName") or f"{name}-{db}-{username}"
            standard = f"mongodb://{username}:{password}@{hosts}/{db}?replicaSet={name}&ssl=false"
            srv = f"mongodb+srv://{username}:{password}@{name}-svc.{ns}.svc.cluster.local/{db}?replicaSet={name}&ssl=false"
            self._ensure(
                SECRETS,
                mdb,
                {
                    "metadata": {"name": secret_name},
                    "data": {
                        "connectionString.standard": _b64(standard),
                        "connectionString.standardSrv": _b64(srv),
                        "username": _b64(username),
                        "password": _b64(password),
                    },
                },
            )
        self._status(
            MONGO,
            mdb,
            {
                "phase": "Running",
                "currentMongoDBMembers": members,
                "currentStatefulSetReplicas": members,
                "mongoUri": f"mongodb://{hosts}/?replicaSet={name}",
                "version": spec.get("version", ""),
                "message": "simulated by the k8see sandbox",
            },
        )

    def _secret_value(self, namespace: str, name: str, key: str) -> str | None:
        secret = self.api.store.get(SECRETS, namespace, name)
        if secret is None or key not in (secret.get("data") or {}):
            return None
        return base64.b64decode(secret["data"][key]).decode()

    # -- MinIO Tenant --------------------------------------------------------------------

    def tenant(self, tenant: Obj) -> None:
        meta, spec = tenant["metadata"], tenant.get("spec") or {}
        name = meta["name"]
        self._service(tenant, f"{name}-hl", 9000, {"v1.min.io/tenant": name}, headless=True)
        self._service(tenant, f"{name}-console", 9090, {"v1.min.io/tenant": name})
        pools = copy.deepcopy(spec.get("pools") or [])
        servers = sum(int(p.get("servers", 1)) for p in pools) or 1
        self._status(
            TENANT,
            tenant,
            {
                "currentState": "Initialized",
                "healthStatus": "green",
                "availableReplicas": servers,
                "pools": [
                    {"ssName": f"{name}-{p.get('name', 'pool-0')}", "state": "PoolInitialized"}
                    for p in pools
                ],
                "healthMessage": "simulated by the k8see sandbox",
            },
        )


def _plural(api: Api, obj: Obj) -> str:
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    for rt in api.registry.all():
        if rt.group == group and rt.kind == obj["kind"]:
            return rt.plural
    return ""
