"""The platform chart's knobs a platform team expects, on every pod it renders.

Covers (issue 18): ``imagePullSecrets``; ``nodeSelector``, ``tolerations``, ``affinity``,
``topologySpreadConstraints``, ``priorityClassName``, ``podAnnotations`` and ``podLabels`` as
top-level defaults with per-component overrides; ``resources`` per component, falling back to
the top-level value, else default requests without CPU limits; the probes (a heartbeat file
for the pools and beat, HTTP for Flower and the API), each of which can be turned off; the
schema refusing values of the wrong type with helm's error naming the value; and the
``ci/operations-values.yaml`` scenario applied to the real local cluster with strict
validation. Every check loops over every Deployment and StatefulSet the chart renders, so a
new template that forgets the helpers fails here.
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import pytest
import yaml

from tests.charts.test_platform_chart_values import CHART, FULLNAME, VALUES, helm
from tests.conftest import require_tool

OPERATIONS = CHART / "ci" / "operations-values.yaml"
#: With Sentinel too, so the Redis and Sentinel StatefulSets are among the pods checked.
SENTINEL = "redis.sentinel.enabled=true"
Doc = dict[str, Any]


def render(values: Any = VALUES, *sets: str) -> list[Doc]:
    argv = ["template", "k8see", str(CHART), "-f", str(values)]
    out = helm(*argv, *(arg for s in sets for arg in ("--set", s)))
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def pods(docs: list[Doc]) -> dict[str, Doc]:
    """Every pod template, by its component label."""
    found = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"][
            "template"
        ]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
    }
    assert len(found) >= 7, sorted(found)
    return found


def all_containers(pod: Doc) -> list[Doc]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


def test_every_pod_gets_the_top_level_knobs() -> None:
    rendered = pods(render(OPERATIONS, SENTINEL))
    assert {"redis", "redis-sentinel", "beat", "flower", "api", "worker-build"} <= set(rendered)
    for component, pod in rendered.items():
        spec, metadata = pod["spec"], pod["metadata"]
        assert spec["imagePullSecrets"] == [{"name": "k8see-pull"}], component
        assert spec["nodeSelector"]["kubernetes.io/os"] == "linux", component
        assert spec["affinity"]["nodeAffinity"], component
        (spread,) = spec["topologySpreadConstraints"]
        # A constraint without a labelSelector counts the component's own pods.
        assert spread["labelSelector"]["matchLabels"] == {
            k: v for k, v in metadata["labels"].items() if k.startswith("app.kubernetes.io/")
        }, component
        assert metadata["labels"]["team"] == "platform", component
        assert metadata["annotations"]["k8see.example/team"] == "platform", component
        for container in all_containers(pod):
            assert container["resources"]["requests"], f"{component}/{container['name']}"
        if component != "api":  # the API sets priorityClassName "" (none)
            assert spec["priorityClassName"] == "k8see-platform", component
        if component != "worker-build":  # the build pool has its own tolerations
            assert spec["tolerations"][0]["key"] == "dedicated", component


def test_a_component_replaces_a_default_and_merges_pod_metadata() -> None:
    rendered = pods(render(OPERATIONS))
    build = rendered["worker-build"]
    assert build["spec"]["tolerations"] == [
        {"key": "builds", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert build["spec"]["nodeSelector"]["k8see.example/builds"] == "true"
    assert build["metadata"]["labels"]["pool"] == "build"
    assert build["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }
    assert "priorityClassName" not in rendered["api"]["spec"]
    assert rendered["flower"]["metadata"]["annotations"] == {
        "k8see.example/team": "platform",
        "k8see.example/owner": "flower",
    }
    assert rendered["beat"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "10m", "memory": "96Mi"}
    }
    # Top-level resources reach a component without its own, as before 0.13.
    assert rendered["worker-deploy"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"}
    }


def test_by_default_every_container_requests_and_no_cpu_is_limited() -> None:
    rendered = pods(render(VALUES, SENTINEL))
    for component, pod in rendered.items():
        spec = pod["spec"]
        for key in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity",
                    "topologySpreadConstraints", "priorityClassName"):  # fmt: skip
            assert key not in spec, f"{component}: {key}"
        for container in all_containers(pod):
            resources = container["resources"]
            assert set(resources["requests"]) == {"cpu", "memory"}, component
            assert "cpu" not in resources.get("limits", {}), component
    build = rendered["worker-build"]["spec"]["containers"][0]["resources"]["requests"]
    assert build == {"cpu": "500m", "memory": "1Gi"}


def liveness(pod: Doc) -> Doc | None:
    probe: Doc | None = pod["spec"]["containers"][0].get("livenessProbe")
    return probe


def test_every_long_running_pod_has_probes_that_ask_no_broker() -> None:
    rendered = pods(render(VALUES, SENTINEL))
    for component, pod in rendered.items():
        if component.startswith("redis"):
            continue
        container = pod["spec"]["containers"][0]
        probe = liveness(pod)
        assert probe is not None, component
        if component.startswith("worker-") or component == "beat":
            # The heartbeat file the process itself touches (k8see.liveness); not celery inspect.
            (script,) = probe["exec"]["command"][2:]
            assert "stat -c %Y /tmp/k8see-heartbeat" in script and "-lt 120" in script
            assert "inspect" not in script
            args = container["args"]
            assert args[args.index("--heartbeat-file") + 1] == "/tmp/k8see-heartbeat", component
        else:
            assert probe["httpGet"]["path"] in ("/healthz", "/healthcheck"), component
            assert container["readinessProbe"]["httpGet"]["port"] == "http", component


@pytest.mark.parametrize("component", ["worker", "beat", "flower", "api"])
def test_each_probe_can_be_turned_off(component: str) -> None:
    sets = [f"probes.{component}.{kind}.enabled=false" for kind in ("liveness", "readiness")]
    sets = sets if component in ("flower", "api") else sets[:1]
    rendered = pods(render(VALUES, *sets))
    chosen = {k: v for k, v in rendered.items() if k.split("-")[0] == component}
    assert chosen
    for name, pod in chosen.items():
        container = pod["spec"]["containers"][0]
        assert "livenessProbe" not in container and "readinessProbe" not in container, name
        assert "--heartbeat-file" not in container["args"], name


def test_probe_timings_are_values() -> None:
    rendered = pods(render(VALUES, "probes.worker.liveness.maxAgeSeconds=300",
                           "probes.worker.liveness.periodSeconds=60"))  # fmt: skip
    probe = liveness(rendered["worker-default"])
    assert probe is not None and probe["periodSeconds"] == 60
    assert "-lt 300" in probe["exec"]["command"][2]


@pytest.mark.parametrize(
    ("value", "path", "want"),
    [
        ("tolerations=dedicated", "/tolerations", "want array"),
        ("nodeSelector=linux", "/nodeSelector", "want object"),
        ("imagePullSecrets=regcred", "/imagePullSecrets", "want array"),
        ("pools.build.tolerations=builds", "/pools/build/tolerations", "want array"),
        ("beat.affinity=none", "/beat/affinity", "want object"),
        ("redis.sentinel.podLabels=x", "/redis/sentinel/podLabels", "want object"),
        ("api.resources=big", "/api/resources", "want object"),
        ("priorityClassName[0]=high", "/priorityClassName", "want string"),
        ("probes.worker.liveness.enabled=yes", "/probes/worker/liveness/enabled", "want boolean"),
        ("probes.beat.liveness.maxAgeSeconds=5", "/probes/beat/liveness/maxAgeSeconds", "20"),
    ],
)
def test_the_schema_refuses_wrong_types_naming_the_value(value: str, path: str, want: str) -> None:
    out = helm("template", "k8see", str(CHART), "-f", str(VALUES), "--set", value)
    assert out.returncode != 0, out.stdout
    line = next((ln for ln in out.stderr.splitlines() if f"'{path}'" in ln), "")
    assert want in line, out.stderr


def test_pod_labels_may_not_change_the_selectors() -> None:
    out = helm("template", "k8see", str(CHART), "-f", str(VALUES),
               "--set", "podLabels.app\\.kubernetes\\.io/component=x")  # fmt: skip
    assert out.returncode != 0
    assert "podLabels may not set app.kubernetes.io/component" in out.stderr


def test_the_operations_scenario_is_accepted_by_the_cluster(kube_env: dict[str, str]) -> None:
    """Applied with strict validation by the real API server: every field is one Kubernetes
    knows, where it belongs (a misplaced or misspelt key fails here, not at install)."""
    namespace = f"ops-{uuid.uuid4().hex[:6]}"
    priority = f"k8see-test-{uuid.uuid4().hex[:6]}"
    argv = ["template", "k8see", str(CHART), "-f", str(OPERATIONS), "-n", namespace,
            "--set", SENTINEL, "--set", f"priorityClassName={priority}"]  # fmt: skip
    out = helm(*argv, env=kube_env)
    assert out.returncode == 0, out.stderr
    workloads = [d for d in yaml.safe_load_all(out.stdout)
                 if d and d["kind"] in ("Deployment", "StatefulSet")]  # fmt: skip
    manifest = yaml.safe_dump_all(workloads)
    kubectl = require_tool("kubectl")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl, *args], input=stdin, env=kube_env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    priority_class = yaml.safe_dump({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                     "metadata": {"name": priority}, "value": 1000})  # fmt: skip
    assert run("create", "namespace", namespace).returncode == 0
    try:
        assert run("create", "-f", "-", stdin=priority_class).returncode == 0
        done = run("apply", "--validate=strict", "-n", namespace, "-f", "-", stdin=manifest)
        assert done.returncode == 0, done.stderr
        assert f"deployment.apps/{FULLNAME}-worker-build created" in done.stdout
        assert f"statefulset.apps/{FULLNAME}-redis-sentinel created" in done.stdout
        # What the API server stored is what the chart rendered: nothing dropped as unknown.
        stored = run("get", "deployment", f"{FULLNAME}-worker-build", "-n", namespace, "-o", "yaml")
        spec = yaml.safe_load(stored.stdout)["spec"]["template"]["spec"]
        assert spec["priorityClassName"] == priority
        assert spec["imagePullSecrets"] == [{"name": "k8see-pull"}]
        assert spec["tolerations"][0]["key"] == "builds"
        assert spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        assert spec["containers"][0]["livenessProbe"]["exec"]["command"][0] == "sh"
    finally:
        run("delete", "namespace", namespace, "--wait=false")
        run("delete", "priorityclass", priority, "--ignore-not-found")
