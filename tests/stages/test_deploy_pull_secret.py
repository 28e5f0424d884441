"""The deploy stage's pull secret carries the registry's login as of the deploy.

Covers: with ECR (moto's server over real HTTP), the first deploy already gets an
``ecr-pull-secret`` for the account's registry with user ``AWS`` and a fresh token (before,
only the 6-hourly refresh job wrote one); a registry with a static login gets that login; a
registry without one gets no secret.
"""

from __future__ import annotations

import base64
import json

from k8see.settings import load_settings
from k8see.stages.deploy import pull_secret
from tests.fixtures.images import AwsServer


def _login(secret: dict[str, object]) -> tuple[str, dict[str, object]]:
    data = secret["data"]
    assert isinstance(data, dict)
    config = json.loads(base64.b64decode(data[".dockerconfigjson"]))
    ((host, entry),) = config["auths"].items()
    return host, entry


def test_an_ecr_deploy_gets_a_pull_secret_with_a_fresh_token(aws_identity: AwsServer) -> None:
    settings = load_settings(
        registry={"type": "ecr", "host": "", "ecr_region": "eu-west-1",
                  "aws_endpoint_url": aws_identity.url},
    )  # fmt: skip
    secret = pull_secret(settings, namespace="web-pr-1", project_id="web", pr=1)
    assert secret is not None and secret["metadata"]["name"] == "ecr-pull-secret"
    host, entry = _login(secret)
    assert host.endswith(".dkr.ecr.eu-west-1.amazonaws.com")
    user, _, token = base64.b64decode(str(entry["auth"])).decode().partition(":")
    assert user == "AWS" and token


def test_static_logins_and_anonymous_registries() -> None:
    with_login = load_settings(
        registry={"type": "ghcr", "host": "ghcr.io", "username": "bot", "password": "s3cret"}
    )
    secret = pull_secret(with_login, namespace="web-pr-1", project_id="web", pr=1)
    assert secret is not None
    assert _login(secret)[0] == "ghcr.io"
    anonymous = load_settings(registry={"type": "generic", "host": "127.0.0.1:5000"})
    assert pull_secret(anonymous, namespace="web-pr-1", project_id="web", pr=1) is None
