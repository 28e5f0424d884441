"""The platform chart's alerting rules (``metrics.prometheusRule``), checked by Prometheus's
own ``promtool``: the rendered rules load, every k8see series they read is one k8see.metrics
exports, and ``promtool test rules`` replays series through them: each alert fires when its
condition holds (with its labels and its annotations as Prometheus renders them) and stays
quiet otherwise, user errors never count as platform failures, and no scrape target at all
is an alert too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.test_platform_chart import CHART, VALUES, exported_metrics, helm
from tests.conftest import require_tool

JOB = "k8see-k8see-platform-metrics"  # the metrics Service of release "k8see"


def render(*sets: str) -> list[dict[str, Any]]:
    args = [item for s in sets for item in ("--set", s)]
    out = helm("template", "k8see", str(CHART), "-f", str(VALUES), *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule"]


@pytest.fixture(scope="module")
def rule() -> dict[str, Any]:
    (rule,) = render("metrics.prometheusRule.enabled=true",
                     "metrics.prometheusRule.labels.release=prometheus")  # fmt: skip
    return rule


@pytest.fixture
def rules_file(rule: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "k8see.rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)  # fmt: skip


def annotations(rule: dict[str, Any], alert: str, **values: str) -> dict[str, str]:
    """The alert's annotations as Prometheus renders them, given its template values."""
    (spec,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == alert]
    out = {}
    for key, text in spec["annotations"].items():
        text = text.replace('{{ printf "%.0f" $value }}', values.get("value", ""))
        text = text.replace("{{ $value }}", values.get("value", ""))
        for name, value in values.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", value)
        assert "{{" not in text, f"{alert}.{key} has a template this test does not fill: {text}"
        out[key] = text
    return out


def test_the_rules_are_off_by_default_and_carry_the_selector_labels(rule: dict[str, Any]) -> None:
    assert render() == []
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_the_scrape_job_of_the_workers_can_be_named() -> None:
    (rule,) = render("metrics.prometheusRule.enabled=true",
                     "metrics.prometheusRule.scrapeJob=k8see-workers")  # fmt: skip
    (down,) = [r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "K8seeMetricsDown"]
    assert down["expr"] == 'up{job="k8see-workers"} == 0 or absent(up{job="k8see-workers"})'


def test_promtool_loads_the_rules(rules_file: Path) -> None:
    out = promtool("check", "rules", str(rules_file), cwd=rules_file.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def test_the_rules_read_only_series_k8see_exports(rule: dict[str, Any], redis_url: str) -> None:
    exported = exported_metrics(redis_url)
    for group in rule["spec"]["groups"]:
        for spec in group["rules"]:
            expr = spec["expr"]
            names = set(re.findall(r"\bk8see_[a-z_]+\b", expr))
            for name in names:
                assert name in exported, f"{name} in {spec['alert']} is not exported"
            grouped = {
                label.strip()
                for group in re.findall(r"(?:by|without) \(([^)]*)\)", expr)
                for label in group.split(",")
            }
            matched = set(re.findall(r"(\w+)=~?\"", expr)) - {"job"}  # `up`'s scrape job
            allowed = set().union(*(exported[n] for n in names)) if names else set()
            assert grouped | matched <= allowed, spec["alert"]


def test_the_alerts_fire_when_they_should(rule: dict[str, Any], rules_file: Path) -> None:
    warning = {"severity": "warning"}
    cases = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {  # a busy platform: Kubernetes refusing, one job failing, one pool backed up
                "interval": "1m",
                "input_series": [
                    {"series": 'k8see_stage_failures_total{stage="deploy",reason="kube"}',
                     "values": "0+1x60"},
                    # user errors, five a minute: never a platform alert
                    {"series": 'k8see_stage_failures_total{stage="validate",reason="config"}',
                     "values": "0+5x60"},
                    {"series": 'k8see_stage_failures_total{stage="deploy",reason="stuck"}',
                     "values": "0x2 1x57"},
                    {"series": f'up{{job="{JOB}",instance="a"}}', "values": "1x60"},
                    {"series": 'k8see_maintenance_runs_total{job_name="cleanup",outcome="ok"}',
                     "values": "0+1x60"},
                    {"series": "k8see_maintenance_runs_total"
                               '{job_name="registry-gc",outcome="failed"}',
                     "values": "0+1x60"},
                    {"series": 'k8see_queue_wait_seconds_bucket{stage="build",le="120"}',
                     "values": "0x60"},
                    {"series": 'k8see_queue_wait_seconds_bucket{stage="build",le="600"}',
                     "values": "0+1x60"},
                    {"series": 'k8see_queue_wait_seconds_bucket{stage="build",le="+Inf"}',
                     "values": "0+1x60"},
                    {"series": 'k8see_queue_wait_seconds_bucket{stage="deploy",le="1"}',
                     "values": "0+1x60"},
                    {"series": 'k8see_queue_wait_seconds_bucket{stage="deploy",le="+Inf"}',
                     "values": "0+1x60"},
                    {"series": 'k8see_time_to_ready_seconds_bucket{le="300"}', "values": "0x60"},
                    {"series": 'k8see_time_to_ready_seconds_bucket{le="600"}', "values": "0x60"},
                    {"series": 'k8see_time_to_ready_seconds_bucket{le="900"}',
                     "values": "0+1x60"},
                    {"series": 'k8see_time_to_ready_seconds_bucket{le="+Inf"}',
                     "values": "0+1x60"},
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "K8seePlatformFailures", "exp_alerts": []},
                    {"eval_time": "40m", "alertname": "K8seePlatformFailures", "exp_alerts": [
                        {"exp_labels": warning,
                         "exp_annotations": annotations(rule, "K8seePlatformFailures",
                                                        value="30")}]},
                    {"eval_time": "10m", "alertname": "K8seeStuckRuns", "exp_alerts": [
                        {"exp_labels": warning,
                         "exp_annotations": annotations(rule, "K8seeStuckRuns", value="1")}]},
                    {"eval_time": "60m", "alertname": "K8seeMaintenanceFailing", "exp_alerts": [
                        {"exp_labels": {**warning, "job_name": "registry-gc"},
                         "exp_annotations": annotations(rule, "K8seeMaintenanceFailing",
                                                        value="60", job_name="registry-gc")}]},
                    # p90 of the build queue: 120 + 0.9 x 480 = 552 s; deploy's stays under 1 s
                    {"eval_time": "10m", "alertname": "K8seeQueueBacklog", "exp_alerts": []},
                    {"eval_time": "30m", "alertname": "K8seeQueueBacklog", "exp_alerts": [
                        {"exp_labels": {**warning, "stage": "build"},
                         "exp_annotations": annotations(rule, "K8seeQueueBacklog",
                                                        value="552", stage="build")}]},
                    # p95 to ready: 600 + 0.95 x 300 = 885 s
                    {"eval_time": "30m", "alertname": "K8seeSlowPreviews", "exp_alerts": [
                        {"exp_labels": warning,
                         "exp_annotations": annotations(rule, "K8seeSlowPreviews",
                                                        value="885")}]},
                    {"eval_time": "60m", "alertname": "K8seeMetricsDown", "exp_alerts": []},
                    {"eval_time": "60m", "alertname": "K8seeCleanupNotRunning",
                     "exp_alerts": []},
                ],
            },
            {  # nothing scraped at all, and no cleanup ever recorded
                "interval": "1m",
                "input_series": [
                    {"series": 'k8see_maintenance_runs_total{job_name="watchdog",outcome="ok"}',
                     "values": "0+1x60"},
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "K8seeMetricsDown", "exp_alerts": []},
                    {"eval_time": "15m", "alertname": "K8seeMetricsDown", "exp_alerts": [
                        {"exp_labels": {**warning, "job": JOB},
                         "exp_annotations": annotations(rule, "K8seeMetricsDown")}]},
                    {"eval_time": "45m", "alertname": "K8seeCleanupNotRunning", "exp_alerts": [
                        {"exp_labels": warning,
                         "exp_annotations": annotations(rule, "K8seeCleanupNotRunning")}]},
                    {"eval_time": "45m", "alertname": "K8seePlatformFailures", "exp_alerts": []},
                ],
            },
        ],
    }  # fmt: skip
    (rules_file.parent / "tests.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
    out = promtool("test", "rules", "tests.yaml", cwd=rules_file.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
