"""Every promised default and name, pinned: those of the system k8see replaces
(docs/onboarding.md, docs/configuration.md) and of docs/architecture.md."""

from __future__ import annotations

from k8see import names
from k8see.app import QUEUES, ROUTES, create_app
from k8see.pipeline import DEPLOY_STAGES, DESTROY_STAGES
from k8see.settings import PlatformSettings


def test_names_match_the_reference() -> None:
    assert names.namespace("myapp", 42) == "myapp-pr-42"
    assert names.preview_url("myapp", 42, "k8s-ee.genesluna.dev") == (
        "https://myapp-pr-42.k8s-ee.genesluna.dev"
    )
    assert names.RELEASE_NAME == "app"
    assert names.image_tag(42) == "pr-42"


def test_platform_defaults() -> None:
    s = PlatformSettings()
    assert s.deploy.domain == "k8s-ee.genesluna.dev"
    assert s.deploy.helm_timeout_seconds == 600  # helm --timeout 10m
    assert s.deploy.destroy_timeout_seconds == 240  # namespace delete --timeout=4m
    assert s.deploy.health_attempts == 10
    assert s.build.platforms == "linux/amd64,linux/arm64"
    assert s.build.timeout_seconds == 900  # the reference's 15-minute build job
    assert s.github.comment_marker == "<!-- k8s-ee-pr-env -->"
    assert s.cleanup.preserve_default_hours == 48
    assert s.cleanup.max_preserved == 3
    assert s.scan.policy == "warn"
    assert s.registry.type == "ghcr"
    # Issue 14: the platform's limits and listeners
    assert s.metrics.address == "127.0.0.1"  # never 0.0.0.0; the chart sets the pod IP
    assert s.redis.admin_username == "k8see-admin"
    assert s.deploy.quota_ceiling_cpu_millicores == 16_000
    assert s.deploy.quota_ceiling_memory_mib == 32_768
    assert s.deploy.quota_ceiling_storage_mib == 204_800
    assert s.deploy.egress_denied_cidrs == []


def test_queues_routes_and_chains() -> None:
    assert QUEUES == ("default", "build", "deploy", "maintenance")
    assert ROUTES["k8see.validate"] == "default" and ROUTES["k8see.comment"] == "default"
    assert ROUTES["k8see.build"] == ROUTES["k8see.scan"] == ROUTES["k8see.untag"] == "build"
    assert ROUTES["k8see.deploy"] == ROUTES["k8see.destroy"] == "deploy"
    assert DEPLOY_STAGES == ("validate", "build", "scan", "deploy", "comment")
    assert DESTROY_STAGES == ("destroy", "untag", "comment")


def test_the_app_is_json_only_and_acks_late() -> None:
    app = create_app(PlatformSettings(), name="t")
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_send_task_events and app.conf.task_send_sent_event


def test_a_lost_workers_message_comes_back_after_the_visibility_timeout_setting() -> None:
    """20 minutes by default (the build's limit plus 5), not Celery's hour; a setting, so the
    drills (tests/drills/test_worker_main_killed.py) and operators can choose it."""
    default = create_app(PlatformSettings(), name="t")
    assert default.conf.broker_transport_options["visibility_timeout"] == 1200
    chosen = PlatformSettings.model_validate({"queues": {"visibility_timeout_seconds": 45}})
    app = create_app(chosen, name="t")
    assert app.conf.broker_transport_options["visibility_timeout"] == 45
