"""The pull-secret refresh job against the sandbox Kubernetes API.

Covers:
- a k8see-managed environment with an old pull secret gets the new credentials, and one
  without a secret gets it (the same Secret the deploy stage writes);
- an ephemeral-labelled namespace managed by someone else, and a plain namespace, keep their
  own secret of the same name byte for byte;
- with the worker's real log setup at DEBUG, nothing the job (or the kubernetes client below
  it) writes holds the password, the ``user:password`` pair or the secret's encoded payload;
- with ECR (moto's server over HTTP), the secret is ``ecr-pull-secret`` for the account's host
  with user ``AWS`` and a fresh token; the report gives ECR's expiry, and a warning says when
  the refresh period is longer than the token's remaining life;
- the beat schedule runs the job on the maintenance queue, and 0 turns it off;
- a registry without credentials makes the job a no-op.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from k8see import logs, names
from k8see.app import beat_schedule
from k8see.jobs.pull_secret_refresh import pull_secret_credentials, run_pull_secret_refresh
from k8see.manifests.release import pull_secret_manifest
from k8see.settings import PlatformSettings, load_settings

OLD_PASSWORD = "old-Registry-Pa55"
NEW_PASSWORD = "new-Registry-Pa55-rotated"
SECRET = "ghcr-pull-secret"


def make_settings(redis_url: str, kubeconfig: str, password: str | None) -> PlatformSettings:
    registry: dict[str, Any] = {"type": "ghcr", "host": "ghcr.io"}
    if password:
        registry.update(username="k8see-bot", password=password)
    return load_settings(
        redis={"url": redis_url}, deploy={"kubeconfig": kubeconfig}, registry=registry
    )


def make_namespace(api: Any, name: str, labels: dict[str, str]) -> None:
    from kubernetes import client

    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )


def managed_labels(project: str, pr: int, managed_by: str = names.MANAGED_BY) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: managed_by,
        names.LABEL_TYPE: "ephemeral",
        names.LABEL_PROJECT: project,
        names.LABEL_PR: str(pr),
    }


def put_secret(api: Any, settings: PlatformSettings, namespace: str) -> None:
    from kubernetes import client

    manifest = pull_secret_manifest(settings, namespace=namespace, project_id="x", pr=1)
    assert manifest is not None
    client.CoreV1Api(api).create_namespaced_secret(namespace, manifest)


def secret_password(api: Any, namespace: str) -> str | None:
    """The password inside the namespace's pull secret, None when there is no secret."""
    from kubernetes import client

    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(SECRET, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
    auth = base64.b64decode(config["auths"]["ghcr.io"]["auth"]).decode()
    return auth.partition(":")[2]


def secret_payload(api: Any, namespace: str) -> tuple[str, dict[str, str]]:
    from kubernetes import client

    secret = client.CoreV1Api(api).read_namespaced_secret(SECRET, namespace)
    return secret.metadata.resource_version, dict(secret.data)


@pytest.fixture
def worker_log() -> Iterator[io.StringIO]:
    """The worker's own log setup (JSON, DEBUG, redaction), its handler writing to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logs.configure(fmt="json", level="DEBUG", secrets=[NEW_PASSWORD])
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_refresh_rewrites_managed_secrets_only(
    redis_url: str, kubeconfig: str, kube_api_client: Any, worker_log: Any
) -> None:
    # Given four namespaces: managed with an old secret, managed without one, labelled
    # ephemeral but managed by another tool, and a plain one, the last two with their own secret
    old = make_settings(redis_url, kubeconfig, OLD_PASSWORD)
    new = make_settings(redis_url, kubeconfig, NEW_PASSWORD)
    tag = uuid.uuid4().hex[:6]
    stale, bare, foreign, plain = (f"{k}{tag}-pr-{i}" for i, k in enumerate("sbfp", start=1))
    make_namespace(kube_api_client, stale, managed_labels(f"s{tag}", 1))
    make_namespace(kube_api_client, bare, managed_labels(f"b{tag}", 2))
    make_namespace(kube_api_client, foreign, managed_labels(f"f{tag}", 3, managed_by="argocd"))
    make_namespace(kube_api_client, plain, {"team": "payments"})
    for namespace in (stale, foreign, plain):
        put_secret(kube_api_client, old, namespace)
    untouched = {ns: secret_payload(kube_api_client, ns) for ns in (foreign, plain)}

    # When the job runs with the rotated credentials
    report = run_pull_secret_refresh(settings=new, client=redis.Redis.from_url(redis_url))

    # Then both managed environments carry the new password, labelled like a deploy's secret
    assert secret_password(kube_api_client, stale) == NEW_PASSWORD
    assert secret_password(kube_api_client, bare) == NEW_PASSWORD
    assert {stale, bare} <= set(report["refreshed"]) and report["secret"] == SECRET
    assert foreign in report["skipped"] and plain not in report["refreshed"]
    assert report["failed"] == []
    from kubernetes import client

    labels = client.CoreV1Api(kube_api_client).read_namespaced_secret(SECRET, bare).metadata.labels
    assert labels[names.LABEL_PROJECT] == f"b{tag}" and labels[names.LABEL_PR] == "2"
    # And the other namespaces' secrets did not change at all
    for namespace, before in untouched.items():
        assert secret_payload(kube_api_client, namespace) == before
        assert secret_password(kube_api_client, namespace) == OLD_PASSWORD
    # And neither the log nor the report holds the secret in any form
    written = worker_log.getvalue()
    assert "Pull secret ghcr-pull-secret refreshed" in written
    pair = base64.b64encode(f"k8see-bot:{NEW_PASSWORD}".encode()).decode()
    payloads = [
        (pull_secret_manifest(s, namespace=bare, project_id="b", pr=2) or {})["data"]
        for s in (old, new)
    ]
    for leak in (NEW_PASSWORD, OLD_PASSWORD, pair, *(p[".dockerconfigjson"] for p in payloads)):
        assert leak not in written
        assert leak not in json.dumps(report)
    assert NEW_PASSWORD not in repr(pull_secret_credentials(new))


def test_refresh_with_ecr_writes_a_fresh_token(
    redis_url: str,
    kubeconfig: str,
    kube_api_client: Any,
    aws_identity: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import boto3
    from kubernetes import client

    namespace = f"e{uuid.uuid4().hex[:6]}-pr-5"
    make_namespace(kube_api_client, namespace, managed_labels("e", 5))
    settings = load_settings(
        redis={"url": redis_url},
        deploy={"kubeconfig": kubeconfig},
        registry={"type": "ecr", "host": "", "ecr_region": "eu-west-1",
                  "aws_endpoint_url": aws_identity.url},
    )  # fmt: skip
    report = run_pull_secret_refresh(settings=settings, client=redis.Redis.from_url(redis_url))

    assert namespace in report["refreshed"] and report["secret"] == "ecr-pull-secret"
    # The expiry reported is ECR's own; moto answers a fixed date in the past, so the job
    # also says the refresh period is too long for it (AWS answers about 12 hours ahead).
    ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=aws_identity.url)
    answered = ecr.get_authorization_token()["authorizationData"][0]["expiresAt"]
    assert report["expires_at"] == answered.timestamp()
    assert "less than the 21600 seconds until the next refresh" in caplog.text
    secret = client.CoreV1Api(kube_api_client).read_namespaced_secret("ecr-pull-secret", namespace)
    (host, entry), *_ = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))[
        "auths"
    ].items()
    assert host.endswith(".dkr.ecr.eu-west-1.amazonaws.com")
    user, _, token = base64.b64decode(entry["auth"]).decode().partition(":")
    assert user == "AWS" and token


def test_refresh_without_registry_credentials_does_nothing(
    redis_url: str, kubeconfig: str, kube_api_client: Any
) -> None:
    namespace = f"n{uuid.uuid4().hex[:6]}-pr-4"
    make_namespace(kube_api_client, namespace, managed_labels("n", 4))
    settings = make_settings(redis_url, kubeconfig, None)

    report = run_pull_secret_refresh(settings=settings, client=redis.Redis.from_url(redis_url))

    assert "skipped" in report and secret_password(kube_api_client, namespace) is None


def test_beat_runs_the_refresh_on_the_maintenance_queue(redis_url: str) -> None:
    settings = make_settings(redis_url, "", NEW_PASSWORD)
    entry = beat_schedule(settings)["pull-secret-refresh"]
    assert entry["task"] == "k8see.pull_secret_refresh"
    assert entry["schedule"] == 6 * 3600.0 and entry["options"]["queue"] == "maintenance"

    settings.registry.pull_secret_refresh_seconds = 0
    assert "pull-secret-refresh" not in beat_schedule(settings)
