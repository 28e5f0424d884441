"""The database subcharts, rendered by the real helm binary from the values k8see builds.

Covers: ``helm lint --strict`` of each subchart on its own; each database alone and all five
together rendered from a k8s-ee.yaml through ``manifests.release.helm_values`` (object names
``app-<db>``, the connection variables from Secrets, one wait init container per database
with no password on its command line, ``storage: "2Gi"`` reaching the subchart's volume size,
pass-through options); the output validated against the Kubernetes 1.31 schemas
(kubernetes-validate, offline) and passing Trivy's misconfiguration scan with no HIGH or
CRITICAL finding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from k8see import names
from k8see.config import load_repo_config
from k8see.config.model import RepoConfig
from k8see.errors import ConfigError, HelmError
from k8see.integrations import helm
from k8see.manifests.release import helm_values
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from tests.conftest import ROOT, require_tool

CHART = ROOT / "charts" / "k8s-ee-app"
DATABASES = ("postgresql", "mongodb", "redis", "minio", "mariadb")
DIGEST = "sha256:" + "cd" * 32
#: The connection variables each database gives the app container (docs/environments.md "3a").
ENV = {
    "postgresql": {"DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"},
    "mongodb": {"MONGODB_URL", "MONGODB_URI", "MONGODB_DATABASE"},
    "redis": {"REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_URL"},
    "minio": {
        "MINIO_ENDPOINT",
        "MINIO_PORT",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "MINIO_BUCKET",
        "S3_ENDPOINT",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "S3_BUCKET",
    },
    "mariadb": {
        "MYSQL_HOST",
        "MYSQL_PORT",
        "MYSQL_DATABASE",
        "MYSQL_USER",
        "MYSQL_PASSWORD",
        "MYSQL_URL",
    },
}
#: Variables that carry a credential and so must come from a Secret.
SECRET_ENV = {
    "DATABASE_URL",
    "PGPASSWORD",
    "MONGODB_URL",
    "MONGODB_URI",
    "REDIS_PASSWORD",
    "MINIO_SECRET_KEY",
    "S3_SECRET_KEY",
    "MYSQL_PASSWORD",
    "MYSQL_URL",
}


@pytest.fixture(autouse=True)
def _helm() -> None:
    require_tool("helm")


def values_for(databases: dict[str, Any], **config: Any) -> dict[str, Any]:
    """The chart values k8see builds for a k8s-ee.yaml with these databases."""
    data = RepoConfig.model_validate(
        {"projectId": "shop", "databases": databases, **config}
    ).to_dict()
    validated = {
        "config": data,
        "project_id": "shop",
        "namespace": "shop-pr-42",
        "preview_url": names.preview_url("shop", 42, "preview.test"),
        "databases": [db for db, v in data["databases"].items() if v],
    }
    run = Run(repo="acme/shop", pr=42, sha="a" * 40, generation=1, action=Action.DEPLOY, ref="main")
    build = {"image": f"reg.test/acme/shop@{DIGEST}", "digest": DIGEST}
    return helm_values(run, validated=validated, build=build, settings=PlatformSettings())


def render(databases: dict[str, Any], **config: Any) -> list[dict[str, Any]]:
    return helm.template(
        release="app", chart=CHART, namespace="shop-pr-42", values=values_for(databases, **config)
    )


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    return found[0]


def app_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "Deployment", "shop-pr-42-app")["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("chart", sorted((CHART / "charts").iterdir()), ids=lambda p: p.name)
def test_each_subchart_lints_strict_on_its_own(chart: Path) -> None:
    done = subprocess.run(
        ["helm", "lint", str(chart), "--strict", "--set", "enabled=true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("db", DATABASES)
def test_each_database_alone(db: str) -> None:
    # Given a k8s-ee.yaml enabling only this database, with the documented `true` form
    objects = render({db: True})
    pod = app_pod(objects)
    app = pod["containers"][0]
    env = {e["name"]: e for e in app.get("env") or []}
    # Then the app gets exactly this database's variables (plus DATABASE_TYPE for SQL ones)
    expected = set(ENV[db]) | ({"DATABASE_TYPE"} if db in ("postgresql", "mariadb") else set())
    assert set(env) == expected
    for name in SECRET_ENV & set(env):
        assert "secretKeyRef" in env[name]["valueFrom"], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"].startswith(f"app-{db}")
    # And one init container waits for it, hardened, with no password in its command
    (init,) = pod["initContainers"]
    assert init["name"] == f"wait-for-{db}"
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    command = " ".join(init["command"])
    assert f"app-{db}" in command
    assert "PASSWORD" not in command.upper().replace("MYSQL_PWD", "")
    assert all("value" not in e or "pass" not in e["name"].lower() for e in init.get("env") or [])
    # And the database objects are named app-<db> and labelled for the environment
    db_objects = [o for o in objects if o["metadata"]["name"].startswith(f"app-{db}")]
    assert db_objects
    for obj in db_objects:
        assert obj["metadata"]["labels"]["k8s-ee/project-id"] == "shop"
        assert obj["metadata"]["labels"]["k8s-ee/pr-number"] == "42"


def test_database_type_prefers_mariadb() -> None:
    env = {
        e["name"]: e
        for e in app_pod(render({"postgresql": True, "mariadb": True}))["containers"][0]["env"]
    }
    assert env["DATABASE_TYPE"]["value"] == "mariadb"


def test_storage_string_becomes_each_subchart_volume_size() -> None:
    # Given the string form of storage (the reference's gap 2: it broke the charts)
    objects = render(
        {
            "postgresql": {"storage": "2Gi"},
            "mongodb": {"storage": "3Gi"},
            "minio": {"storage": "4Gi"},
            "mariadb": {"storage": "5Gi"},
        }
    )
    assert find(objects, "Cluster", "app-postgresql")["spec"]["storage"]["size"] == "2Gi"
    mongo = find(objects, "MongoDBCommunity", "app-mongodb")["spec"]["statefulSet"]["spec"]
    claim = mongo["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert claim == "3Gi"
    pool = find(objects, "Tenant", "app-minio")["spec"]["pools"][0]
    assert pool["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "4Gi"
    # And MariaDB keeps its data on a PVC of its size (the reference used emptyDir)
    pvc = find(objects, "PersistentVolumeClaim", "app-mariadb")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    volumes = find(objects, "Deployment", "app-mariadb")["spec"]["template"]["spec"]["volumes"]
    data = next(v for v in volumes if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "app-mariadb"


def test_pass_through_options_and_defaults_of_3_7() -> None:
    objects = render(
        {
            "postgresql": {
                "version": "15",
                "instances": 2,
                "postgresql": {"parameters": {"max_connections": "50"}},
                "bootstrap": {"initSQL": ["SELECT 1"]},
            },
            "mongodb": {"members": 1, "version": "7.0.12"},
            "redis": {"config": {"maxmemory": "50mb"}},
            "minio": {"bucket": "uploads"},
            "mariadb": {"config": {"maxConnections": 30}},
        }
    )
    cluster = find(objects, "Cluster", "app-postgresql")["spec"]
    assert cluster["instances"] == 2
    assert cluster["imageName"] == "ghcr.io/cloudnative-pg/postgresql:15"
    params = cluster["postgresql"]["parameters"]
    assert params["max_connections"] == "50"
    assert params["shared_buffers"] == "128MB"  # defaults kept beside the user's keys
    assert cluster["bootstrap"]["initdb"]["postInitSQL"] == ["SELECT 1"]
    assert cluster["enableSuperuserAccess"] is False
    assert cluster["startDelay"] == 300
    mongo = find(objects, "MongoDBCommunity", "app-mongodb")["spec"]
    assert mongo["version"] == "7.0.12"
    assert mongo["users"][0]["scramCredentialsSecretName"] == "app-mongodb-scram"
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        find(objects, kind, "mongodb-database")
    redis = find(objects, "Deployment", "app-redis")["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][redis["args"].index("--maxmemory") + 1] == "50mb"
    assert not any("requirepass" in a for a in redis["args"])  # password only in a file
    assert find(objects, "Tenant", "app-minio")["spec"]["buckets"] == [{"name": "uploads"}]
    env = {e["name"]: e for e in app_pod(objects)["containers"][0]["env"]}
    assert env["MINIO_BUCKET"]["value"] == "uploads"
    maria = find(objects, "Deployment", "app-mariadb")["spec"]
    assert maria["strategy"] == {"type": "Recreate"}
    assert "--max-connections=30" in maria["template"]["spec"]["containers"][0]["args"]


def test_unknown_database_option_is_refused_with_the_key() -> None:
    # k8s-ee.yaml refuses it first, naming the key and its line...
    with pytest.raises(ConfigError) as refused:
        load_repo_config("projectId: shop\ndatabases:\n  redis:\n    nosuchkey: 1\n")
    assert refused.value.where is not None and refused.value.where.line == 4
    assert "nosuchkey" in refused.value.message
    # ...and the subchart's schema would too, for values that reached it another way
    values = values_for({"redis": True})
    values["redis"]["nosuchkey"] = 1
    with pytest.raises(HelmError, match="nosuchkey"):
        helm.template(release="app", chart=CHART, namespace="shop-pr-42", values=values)


def test_every_subchart_value_is_a_declared_option() -> None:
    # The options k8s-ee.yaml accepts per database are exactly what the subchart's schema
    # accepts (besides enabled and global, which k8see sets, and the security contexts, which
    # are the platform's), so the model neither refuses a value that would work nor passes
    # one the chart refuses.
    from k8see.config.model import PLATFORM_KEYS, DatabasesConfig

    for db in DATABASES:
        schema = json.loads((CHART / "charts" / db / "values.schema.json").read_text())
        chart_keys = set(schema["properties"]) - {"enabled", "global"} - PLATFORM_KEYS
        options = _object_form(DatabasesConfig.model_fields[db].annotation)
        model_keys = {f.alias or name for name, f in options.model_fields.items()} - {"enabled"}
        assert model_keys == chart_keys, db


def all_five() -> list[dict[str, Any]]:
    return render(dict.fromkeys(DATABASES, True), ingress={"enabled": True})


def test_all_five_are_valid_kubernetes_objects() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = all_five()
    custom = {"Cluster", "MongoDBCommunity", "Tenant"}
    for obj in objects:
        if obj["kind"] in custom:
            # The operators' CRDs are not in the Kubernetes schemas; check their shape here.
            assert obj["apiVersion"] in (
                "postgresql.cnpg.io/v1",
                "mongodbcommunity.mongodb.com/v1",
                "minio.min.io/v2",
            )
            assert obj["metadata"]["name"].startswith("app-")
            assert isinstance(obj["spec"], dict) and obj["spec"]
            continue
        kubernetes_validate.validate(obj, "1.31", strict=True)
    assert custom <= {o["kind"] for o in objects}


def test_all_five_pass_trivy_misconfiguration_scan(tmp_path: Path) -> None:
    require_tool("trivy")
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump_all(all_five()))
    done = subprocess.run(
        [
            str(shutil.which("trivy")),
            "config",
            "--skip-check-update",
            "--quiet",
            "--format",
            "json",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    results = report.get("Results") or []
    assert results, "trivy scanned nothing"
    assert sum((r.get("MisconfSummary") or {}).get("Successes", 0) for r in results) > 50
    serious = [
        (m["ID"], m["Title"])
        for r in results
        for m in r.get("Misconfigurations") or []
        if m["Severity"] in ("HIGH", "CRITICAL")
    ]
    assert serious == []


def test_database_pods_carry_the_references_app_label() -> None:
    # The onboarding guide's troubleshooting: kubectl get pods -n <ns> -l app=postgresql
    require_tool("helm")
    objects = render(dict.fromkeys(DATABASES, True))

    def one(kind: str, part: str = "") -> dict[str, Any]:
        (found,) = [o for o in objects if o["kind"] == kind and part in o["metadata"]["name"]]
        return found

    mongo = one("MongoDBCommunity")["spec"]["statefulSet"]["spec"]["template"]
    pod_labels = {
        "postgresql": one("Cluster")["spec"]["inheritedMetadata"]["labels"],
        "mongodb": mongo["metadata"]["labels"],
        "minio": one("Tenant")["spec"]["pools"][0]["labels"],
        "redis": one("Deployment", "redis")["spec"]["template"]["metadata"]["labels"],
        "mariadb": one("Deployment", "mariadb")["spec"]["template"]["metadata"]["labels"],
    }
    assert {db: labels.get("app") for db, labels in pod_labels.items()} == {
        db: db for db in DATABASES
    }


def _object_form(annotation: Any) -> Any:
    """The options model inside a database field's ``bool | Options | None`` union."""
    from pydantic import BaseModel

    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        found = _object_form(arg)
        if found is not None:
            return found
    return None
