"""The k8s-ee.yaml model: every default and constraint (docs/configuration.md), and the schema file.

Covered: pinned defaults; accepted and refused values per field (including the gaps closed on
purpose: query strings in healthPath, fractional CPU, image.repository); database enablement
and subchart values; to_dict round trip; the committed JSON Schema files match the
models and agree with the model on sample documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k8see.config import RepoConfig, json_schema, schema_text, validate_repo_config
from k8see.config.model import DATABASES, SCHEMA_ID
from k8see.config.policy import allowlist_schema_text
from k8see.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = (
    ".venv/bin/python -c 'from k8see.config import schema_text; "
    'print(schema_text(), end="")\' > config/k8s-ee.schema.json'
)


def config(**fields: Any) -> RepoConfig:
    return validate_repo_config({"projectId": "myapp", **fields})


def refused(**fields: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate_repo_config({"projectId": "myapp", **fields})
    return info.value


def test_defaults_match_the_reference() -> None:
    data = config().to_dict()
    assert data == {
        "projectId": "myapp",
        "trigger": "automatic",
        "app": {"port": 3000, "healthPath": "/health", "metricsPath": None},
        "image": {"context": ".", "dockerfile": "Dockerfile", "repository": None},
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "200m", "memory": "384Mi"},
        },
        "env": {},
        "writableDirs": [],
        "envFrom": [],
        "databases": {name: False for name in DATABASES},
        "ingress": {"enabled": True, "annotations": {}},
        "metrics": {"enabled": False, "interval": "30s"},
    }


def test_database_object_defaults_match_the_reference() -> None:
    cfg = config(databases={name: {} for name in DATABASES})
    dbs = cfg.to_dict()["databases"]
    assert dbs["postgresql"] == {"enabled": True, "version": "16", "storage": "1Gi"}
    assert dbs["mongodb"] == {"enabled": True, "version": None, "storage": "1Gi"}
    assert dbs["redis"] == {"enabled": True}
    assert dbs["minio"] == {"enabled": True, "storage": "1Gi"}
    assert dbs["mariadb"] == {"enabled": True, "version": "11.4", "storage": "1Gi"}


@pytest.mark.parametrize("project_id", ["a", "0", "myapp", "my-app-2", "a" * 20, "a-b", "9lives"])
def test_project_id_accepted(project_id: str) -> None:
    assert validate_repo_config({"projectId": project_id}).project_id == project_id


@pytest.mark.parametrize(
    "project_id", ["", "a" * 21, "-a", "a-", "MyApp", "my_app", "my.app", "a b", 12, None]
)
def test_project_id_refused(project_id: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_repo_config({"projectId": project_id})
    assert info.value.where is not None and info.value.where.field == "projectId"


def test_project_id_is_required() -> None:
    with pytest.raises(ConfigError, match=r"projectId: is missing"):
        validate_repo_config({})


@pytest.mark.parametrize("trigger", ["automatic", "on-demand"])
def test_trigger_accepted(trigger: str) -> None:
    assert config(trigger=trigger).trigger == trigger


@pytest.mark.parametrize("trigger", ["manual", "Automatic", "", True, None])
def test_trigger_refused(trigger: Any) -> None:
    refused(trigger=trigger)


@pytest.mark.parametrize("port", [1, 80, 3000, 65535])
def test_port_accepted(port: int) -> None:
    assert config(app={"port": port}).app.port == port


@pytest.mark.parametrize("port", [0, -1, 65536, "3000", 80.0, True, None])
def test_port_refused(port: Any) -> None:
    refused(app={"port": port})


@pytest.mark.parametrize(
    "path", ["/", "/health", "/health.json", "/health?x=1&y=2", "/api/v1/health-check", "/%20"]
)
def test_health_path_accepted_including_what_the_reference_deploy_refused(path: str) -> None:
    assert config(app={"healthPath": path, "metricsPath": path}).app.health_path == path


@pytest.mark.parametrize("path", ["", "health", "/he alth", "/a\tb", "/a\x00", "/a\nb", 5])
def test_health_and_metrics_path_refused(path: Any) -> None:
    refused(app={"healthPath": path})
    refused(app={"metricsPath": path})


@pytest.mark.parametrize("value", [".", "app", "services/api", "./web", "a..b"])
def test_image_paths_accepted(value: str) -> None:
    cfg = config(image={"context": value, "dockerfile": value})
    assert cfg.image.context == value and cfg.image.dockerfile == value


@pytest.mark.parametrize("value", ["", "/abs", "..", "../x", "a/../b", "a/..", "a\\b", "a\x01"])
def test_image_paths_refused(value: str) -> None:
    refused(image={"context": value})
    refused(image={"dockerfile": value})


@pytest.mark.parametrize(
    "repo",
    ["app", "acme/shop", "ghcr.io/acme/shop", "localhost:5000/a/b", "registry.example.com/a_b/c-d"],
)
def test_image_repository_accepted(repo: str) -> None:
    assert config(image={"repository": repo}).image.repository == repo


@pytest.mark.parametrize(
    "repo", ["", "Acme/shop", "ghcr.io/acme/shop:1.0", "a//b", "a/b@sha256:00", "-a", "a b"]
)
def test_image_repository_refused(repo: str) -> None:
    refused(image={"repository": repo})


@pytest.mark.parametrize(
    ("cpu", "stored"),
    [
        ("50m", "50m"),
        ("1", "1"),
        ("0.5", "0.5"),
        ("2.25", "2.25"),
        (1, "1"),
        (0.5, "0.5"),
        (2.0, "2"),
    ],
)
def test_cpu_accepts_millicores_and_fractional_cores(cpu: Any, stored: str) -> None:
    cfg = config(
        resources={
            "requests": {"cpu": cpu, "memory": "64Mi"},
            "limits": {"cpu": cpu, "memory": "64Mi"},
        }
    )
    assert cfg.resources.requests.cpu == stored and cfg.resources.limits.cpu == stored


@pytest.mark.parametrize("cpu", ["", "m", "1.", ".5", "0.0001", "1 m", "1k", "-1", True, None, -1])
def test_cpu_refused(cpu: Any) -> None:
    refused(resources={"limits": {"cpu": cpu, "memory": "64Mi"}})


@pytest.mark.parametrize("memory", ["128Mi", "1Gi", "0Mi"])
def test_memory_accepted(memory: str) -> None:
    both = {"cpu": "1", "memory": memory}
    assert config(resources={"requests": both, "limits": both}).resources.limits.memory == memory


@pytest.mark.parametrize("memory", ["128", "1G", "1Ti", "128mi", 128, ""])
def test_memory_refused(memory: Any) -> None:
    refused(resources={"requests": {"cpu": "1", "memory": memory}})


def test_resources_sections_refuse_other_keys() -> None:
    refused(resources={"requests": {"cpu": "1", "memory": "1Gi", "gpu": "1"}})
    refused(resources={"burst": {}})


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        # The reference fills every field it is not given from its defaults.
        ({"limits": {"memory": "512Mi"}}, ("50m", "128Mi", "200m", "512Mi")),
        ({"limits": {"cpu": "1"}}, ("50m", "128Mi", "1", "384Mi")),
        ({"requests": {"cpu": "100m"}}, ("100m", "128Mi", "200m", "384Mi")),
        ({"requests": {"memory": "256Mi"}, "limits": {}}, ("50m", "256Mi", "200m", "384Mi")),
    ],
)
def test_a_resource_left_out_keeps_its_own_default(
    resources: dict[str, Any], expected: tuple[str, str, str, str]
) -> None:
    cfg = config(resources=resources).resources
    got = (cfg.requests.cpu, cfg.requests.memory, cfg.limits.cpu, cfg.limits.memory)
    assert got == expected
    # What a message carries validates to the same thing.
    assert config(resources=config(resources=resources).to_dict()["resources"]) == config(
        resources=resources
    )


def test_a_filled_default_is_still_checked_against_what_was_given() -> None:
    # requests.cpu 1 is above the default CPU limit it was not given: still refused, saying so.
    error = refused(resources={"requests": {"cpu": "1"}})
    assert "requests.cpu 1 is above limits.cpu 200m" in error.message


@pytest.mark.parametrize(
    ("resources", "problem"),
    [
        ({"requests": {"cpu": "500m", "memory": "64Mi"}}, "requests.cpu 500m is above limits.cpu"),
        ({"requests": {"cpu": "0.25", "memory": "1Gi"}}, "requests.memory 1Gi is above"),
        ({"limits": {"cpu": "0.04", "memory": "1Gi"}}, "requests.cpu 50m is above"),
    ],
)
def test_requests_above_limits_are_refused(resources: dict[str, Any], problem: str) -> None:
    error = refused(resources=resources)
    assert problem in error.message
    assert error.where is not None and error.where.field == "resources"


def test_requests_equal_to_limits_are_fine() -> None:
    same = {"cpu": "1", "memory": "1Gi"}
    cfg = config(resources={"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": same})
    assert cfg.resources.limits.cpu == "1"


def test_env_values_must_be_strings() -> None:
    assert config(env={"A": "1", "_b2": "", "C": "true"}).env == {"A": "1", "_b2": "", "C": "true"}
    for value in (8080, 1.5, True, None, ["x"], {"a": "b"}):
        refused(env={"A": value})


@pytest.mark.parametrize("name", ["1A", "A-B", "A.B", "", "A B", "É"])
def test_env_names_refused(name: str) -> None:
    refused(env={name: "x"})


def test_writable_dirs() -> None:
    assert config(writableDirs=["/app/cache", "/var/x.y_z-1"]).writable_dirs == [
        "/app/cache",
        "/var/x.y_z-1",
    ]
    for bad in ("/", "tmp", "/a b", "/a/../etc", "/..", "/a/$HOME"):
        refused(writableDirs=[bad])
    refused(writableDirs="/tmp")


def test_env_from_needs_exactly_one_source() -> None:
    cfg = config(envFrom=[{"secretRef": {"name": "s"}}, {"configMapRef": {"name": "cm.v1"}}])
    assert cfg.env_from[0].secret_ref is not None and cfg.env_from[0].secret_ref.name == "s"
    assert cfg.env_from[1].config_map_ref is not None
    for bad in (
        {},
        {"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}},
        {"secretRef": {}},
        {"secretRef": {"name": "a", "key": "b"}},
        {"secretRef": {"name": "Bad_Name"}},
        {"other": {"name": "a"}},
    ):
        refused(envFrom=[bad])


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        (True, True),
        (False, False),
        (None, False),
        ({}, True),
        ({"enabled": False}, False),
        ({"enabled": True, "storage": "5Gi"}, True),
    ],
)
def test_database_enablement_rules(value: Any, enabled: bool) -> None:
    cfg = config(databases={"postgresql": value})
    assert ("postgresql" in cfg.enabled_databases()) is enabled
    assert cfg.database_values("postgresql")["enabled"] is enabled


def test_absent_databases_are_disabled_and_order_is_the_references() -> None:
    cfg = config(databases={"redis": True, "postgresql": True, "mariadb": {"version": "10"}})
    assert cfg.enabled_databases() == ["postgresql", "redis", "mariadb"]
    assert cfg.database_values("minio") == {"enabled": False}


def test_database_values_pass_user_keys_through() -> None:
    options = {"storage": "2Gi", "instances": 2, "bootstrap": {"initSQL": ["SELECT 1"]}}
    cfg = config(databases={"postgresql": options, "redis": True})
    assert cfg.database_values("postgresql") == {**options, "enabled": True}
    assert cfg.database_values("redis") == {"enabled": True}
    off = config(databases={"minio": {"enabled": False, "bucket": "b"}})
    assert off.database_values("minio") == {"enabled": False, "bucket": "b"}
    with pytest.raises(KeyError):
        cfg.database_values("oracle")


@pytest.mark.parametrize(
    "databases",
    [
        {"postgresql": "yes"},
        {"postgresql": 1},
        {"postgresql": {"storage": "2G"}},
        {"mongodb": {"storage": 2}},
        {"minio": {"enabled": "no"}},
        {"mariadb": {"version": 11}},
        {"oracle": True},
        {"postgresql": []},
    ],
)
def test_databases_refused(databases: dict[str, Any]) -> None:
    refused(databases=databases)


def test_ingress_and_metrics() -> None:
    cfg = config(
        ingress={"enabled": False, "annotations": {"example.com/a": "x", "b": "y"}},
        metrics={"enabled": True, "interval": "1m"},
    )
    assert cfg.ingress.enabled is False and cfg.ingress.annotations["b"] == "y"
    assert cfg.metrics.enabled and cfg.metrics.interval == "1m"
    refused(ingress={"annotations": {"a": 1}})
    refused(ingress={"annotations": {"a b": "x"}})
    refused(ingress={"enabled": "yes"})
    for interval in ("30", "1d", "s", "30S", 30):
        refused(metrics={"interval": interval})


@pytest.mark.parametrize(
    "doc",
    [
        {"projectId": "a", "extra": 1},
        {"projectId": "a", "app": {"host": "x"}},
        {"projectId": "a", "image": {"tag": "x"}},
        {"projectId": "a", "ingress": {"tls": True}},
        {"projectId": "a", "metrics": {"path": "/m"}},
        {"projectId": "a", "databases": {"x": True}},
    ],
)
def test_unknown_keys_refused_everywhere_but_database_objects(doc: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        validate_repo_config(doc)


def test_python_names_are_not_accepted_as_keys() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        validate_repo_config({"project_id": "a"})


def test_to_dict_round_trips_and_is_json() -> None:
    cfg = config(
        trigger="on-demand",
        env={"A": "b"},
        databases={
            "postgresql": {"storage": "2Gi", "instances": 2, "postgresql": {"parameters": {}}},
            "redis": True,
        },
        envFrom=[{"secretRef": {"name": "s"}}],
        resources={"requests": {"cpu": 0.125, "memory": "64Mi"}},
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert validate_repo_config(data) == cfg


def test_schema_has_id_title_and_the_reference_shape() -> None:
    schema = json_schema()
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"] == "k8s-ee.yaml"
    assert schema["required"] == ["projectId"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "projectId",
        "trigger",
        "app",
        "image",
        "resources",
        "env",
        "writableDirs",
        "envFrom",
        "databases",
        "ingress",
        "metrics",
    }


def test_committed_schema_matches_the_model() -> None:
    committed = (ROOT / "config" / "k8s-ee.schema.json").read_text()
    assert committed == schema_text(), f"regenerate it: {REGENERATE}"


def test_committed_allowlist_schema_matches_the_model() -> None:
    committed = (ROOT / "config" / "allowed-orgs.schema.json").read_text()
    assert committed == allowlist_schema_text()


SAMPLES: list[tuple[dict[str, Any], bool]] = [
    ({"projectId": "a"}, True),
    ({"projectId": "a", "app": {"port": 8080, "healthPath": "/h?x"}}, True),
    ({"projectId": "a", "resources": {"limits": {"cpu": 0.5, "memory": "1Gi"}}}, True),
    ({"projectId": "a", "databases": {"postgresql": {"storage": "2Gi", "instances": 2}}}, True),
    ({"projectId": "a", "databases": {"postgresql": {"storage": "2Gi", "x": 1}}}, False),
    ({"projectId": "a", "envFrom": [{"secretRef": {"name": "s"}}]}, True),
    ({"projectId": "A"}, False),
    ({"projectId": "a", "env": {"A": 1}}, False),
    ({"projectId": "a", "env": {"1A": "x"}}, False),
    ({"projectId": "a", "app": {"port": 0}}, False),
    ({"projectId": "a", "nope": 1}, False),
    ({"projectId": "a", "envFrom": [{}]}, False),
    ({"projectId": "a", "databases": {"redis": "yes"}}, False),
    ({"projectId": "a", "image": {"context": "a/../.."}}, False),
    ({"projectId": "a", "image": {"dockerfile": "/Dockerfile"}}, False),
    ({"projectId": "a", "image": {"context": "a..b", "dockerfile": "d/Dockerfile"}}, True),
    ({"projectId": "a", "writableDirs": ["/a/../b"]}, False),
    ({"projectId": "a", "writableDirs": ["/a/..b"]}, True),
]


@pytest.mark.parametrize(("doc", "valid"), SAMPLES)
def test_generated_schema_agrees_with_the_model(doc: dict[str, Any], valid: bool) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_ok = jsonschema.Draft202012Validator(json_schema()).is_valid(doc)
    try:
        validate_repo_config(doc)
        model_ok = True
    except ConfigError:
        model_ok = False
    assert (schema_ok, model_ok) == (valid, valid)
