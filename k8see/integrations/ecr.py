"""Amazon ECR through boto3: repositories, push credentials, tag deletion.

Why boto3 and not the registry API alone: ECR's registry speaks the OCI distribution API for
pushes and pulls, but creating a repository, its lifecycle policy, the 12-hour login token and
deleting a tag are ECR API calls. Credentials are the ambient AWS identity (IRSA web identity,
an instance role or the usual ``AWS_*`` variables), found by boto3's default chain; k8see
never holds AWS keys in its settings. ``registry.aws_endpoint_url`` points the API at another
endpoint (a VPC endpoint in production, moto's server in tests).

Every ``botocore`` error stops here as a ``RegistryError`` with the AWS error code only (AWS
messages can echo request parameters).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from k8see.errors import RegistryError
from k8see.integrations.oci import TagDeletion

__all__ = [
    "LIFECYCLE_POLICY",
    "EcrAuthorization",
    "EcrRegistry",
    "cache_lifecycle_policy",
    "ecr_host",
]

#: The reference's only rule (docs/images.md "ECR"): untagged images (left by overwritten
#: ``pr-N`` pushes) expire 7 days after they were pushed.
LIFECYCLE_POLICY: dict[str, Any] = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "Expire untagged images after 7 days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 7,
            },
            "action": {"type": "expire"},
        }
    ]
}


def cache_lifecycle_policy(max_age_days: int) -> dict[str, Any]:
    """The policy of a build-cache repository: ``LIFECYCLE_POLICY``, and every image (tagged
    or not) expires ``max_age_days`` after it was pushed; without that rule when 0.

    The cache belongs to the project, not to a PR, so no close deletes its tags; age is what
    ends them. ECR wants the ``tagStatus: any`` rule last (the highest ``rulePriority``).
    """
    if max_age_days <= 0:
        return LIFECYCLE_POLICY
    expire_all = {
        "rulePriority": 2,
        "description": f"Expire build-cache images after {max_age_days} days",
        "selection": {
            "tagStatus": "any",
            "countType": "sinceImagePushed",
            "countUnit": "days",
            "countNumber": max_age_days,
        },
        "action": {"type": "expire"},
    }
    return {"rules": [*LIFECYCLE_POLICY["rules"], expire_all]}


#: boto3 pages of batch_delete_image take at most this many image ids.
BATCH_DELETE_MAX = 100


@dataclass(frozen=True)
class EcrAuthorization:
    """A registry login from ``GetAuthorizationToken``: user ``AWS``, valid about 12 hours."""

    username: str
    password: str
    expires_at: datetime
    endpoint: str


def ecr_host(*, account: str, region: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com`` (docs/images.md "Registry")."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


class EcrRegistry:
    """The ECR calls k8see makes, each idempotent.

    Args:
        region: The AWS region of the registry (``registry.ecr_region``).
        endpoint_url: Another ECR/STS endpoint, or empty for AWS's.
        session: A ``boto3.Session``; the default one (ambient identity) when None.
    """

    def __init__(self, *, region: str, endpoint_url: str = "", session: Any = None) -> None:
        if not region:
            raise RegistryError(
                "The ECR registry needs a region.",
                hint="Set K8SEE_REGISTRY__ECR_REGION (e.g. eu-west-1).",
            )
        self.region = region
        self._session = session or boto3.session.Session(region_name=region)
        kwargs: dict[str, Any] = {"region_name": region}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        self._ecr = self._session.client("ecr", **kwargs)
        self._sts = self._session.client("sts", **kwargs)

    # --- identity and login -------------------------------------------------------------------

    def host(self) -> str:
        """The registry host of the ambient identity's account in this region."""
        identity = self._call("identify the AWS account", self._sts.get_caller_identity)
        return ecr_host(account=str(identity["Account"]), region=self.region)

    def authorization(self) -> EcrAuthorization:
        """A fresh registry login (``AWS`` + a token valid about 12 hours)."""
        answer = self._call("get an ECR login token", self._ecr.get_authorization_token)
        data = (answer.get("authorizationData") or [{}])[0]
        try:
            decoded = base64.b64decode(data["authorizationToken"]).decode()
            username, _, password = decoded.partition(":")
            expires_at = data["expiresAt"]
        except (KeyError, ValueError) as exc:
            raise RegistryError("ECR answered GetAuthorizationToken without a token.") from exc
        if not password or not isinstance(expires_at, datetime):
            raise RegistryError("ECR answered GetAuthorizationToken without a token.")
        return EcrAuthorization(
            username=username,
            password=password,
            expires_at=expires_at,
            endpoint=str(data.get("proxyEndpoint") or ""),
        )

    # --- repositories -------------------------------------------------------------------------

    def ensure_repository(self, name: str, *, policy: dict[str, Any] | None = None) -> bool:
        """Create repository ``name`` with a lifecycle policy if missing.

        Args:
            name: The repository path.
            policy: Its lifecycle policy; ``LIFECYCLE_POLICY`` (untagged expiry) when None,
                ``cache_lifecycle_policy(days)`` for a build-cache repository.

        Returns:
            True when it was created now, False when it existed.
        """
        if self.repository_exists(name):
            return False
        try:
            self._ecr.create_repository(
                repositoryName=name,
                imageScanningConfiguration={"scanOnPush": False},  # Trivy scans instead
                imageTagMutability="MUTABLE",  # pr-N moves with every push
            )
        except ClientError as exc:
            if _code(exc) != "RepositoryAlreadyExistsException":  # a concurrent first push
                raise _error(exc, f"create ECR repository {name}") from exc
        self._call(
            f"set the lifecycle policy of {name}",
            self._ecr.put_lifecycle_policy,
            repositoryName=name,
            lifecyclePolicyText=json.dumps(LIFECYCLE_POLICY if policy is None else policy),
        )
        return True

    def repository_exists(self, name: str) -> bool:
        try:
            self._ecr.describe_repositories(repositoryNames=[name])
        except _BOTO_ERRORS as exc:
            if _code(exc) == "RepositoryNotFoundException":
                return False
            raise _error(exc, f"describe ECR repository {name}") from exc
        return True

    def lifecycle_policy(self, name: str) -> dict[str, Any]:
        answer = self._call(
            f"read the lifecycle policy of {name}",
            self._ecr.get_lifecycle_policy,
            repositoryName=name,
        )
        policy: dict[str, Any] = json.loads(answer["lifecyclePolicyText"])
        return policy

    def ensure_lifecycle_policy(
        self, name: str, policy: dict[str, Any], *, dry_run: bool = False
    ) -> str:
        """Give the existing repository ``name`` this lifecycle policy; idempotent.

        Returns:
            ``"set"`` when it had another policy (or none) and has this one now (in a dry
            run: would have), ``"unchanged"`` when it had this one, ``"absent"`` when the
            repository does not exist (it gets its policy when a push creates it).

        Raises:
            RegistryError: ECR refused or could not be reached (the AWS error code only).
        """
        try:
            answer = self._ecr.get_lifecycle_policy(repositoryName=name)
            current = json.loads(answer["lifecyclePolicyText"])
        except _BOTO_ERRORS as exc:
            code = _code(exc)
            if code == "RepositoryNotFoundException":
                return "absent"
            if code != "LifecyclePolicyNotFoundException":
                raise _error(exc, f"read the lifecycle policy of {name}") from exc
            current = None
        except (KeyError, ValueError):
            current = None  # unreadable: replace it
        if current == policy:
            return "unchanged"
        if not dry_run:
            self._call(
                f"set the lifecycle policy of {name}",
                self._ecr.put_lifecycle_policy,
                repositoryName=name,
                lifecyclePolicyText=json.dumps(policy),
            )
        return "set"

    # --- tags ---------------------------------------------------------------------------------

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``; a missing repository has none."""
        tags: list[str] = []
        token = ""
        while True:
            kwargs: dict[str, Any] = {"repositoryName": repository, "maxResults": 1000}
            if token:
                kwargs["nextToken"] = token
            try:
                page = self._ecr.list_images(filter={"tagStatus": "TAGGED"}, **kwargs)
            except _BOTO_ERRORS as exc:
                if _code(exc) == "RepositoryNotFoundException":
                    return []
                raise _error(exc, f"list the tags of {repository}") from exc
            tags += [i["imageTag"] for i in page.get("imageIds", []) if i.get("imageTag")]
            token = page.get("nextToken") or ""
            if not token:
                return sorted(set(tags))

    def remove_tags(self, repository: str, tags: Sequence[str]) -> TagDeletion:
        """Delete ``tags`` with ``BatchDeleteImage``; best-effort and idempotent.

        ECR removes a tag from its image and deletes the image when no tag is left, so other
        tags on the same image survive. A missing tag or repository counts as absent.
        """
        if not tags:
            return TagDeletion()
        deleted: list[str] = []
        absent: list[str] = []
        failed: dict[str, str] = {}
        for start in range(0, len(tags), BATCH_DELETE_MAX):
            chunk = list(tags[start : start + BATCH_DELETE_MAX])
            try:
                answer = self._ecr.batch_delete_image(
                    repositoryName=repository, imageIds=[{"imageTag": t} for t in chunk]
                )
            except _BOTO_ERRORS as exc:
                if _code(exc) == "RepositoryNotFoundException":
                    absent += chunk
                    continue
                reason = _error(exc, f"delete tags of {repository}").message
                failed.update(dict.fromkeys(chunk, reason))
                continue
            deleted += [i["imageTag"] for i in answer.get("imageIds", []) if i.get("imageTag")]
            for failure in answer.get("failures", []):
                tag = str((failure.get("imageId") or {}).get("imageTag") or "")
                if failure.get("failureCode") in ("ImageNotFound", "ImageTagDoesNotMatchDigest"):
                    absent.append(tag)
                elif tag:
                    failed[tag] = f"ECR refused: {failure.get('failureCode', 'unknown')}"
        return TagDeletion(
            deleted=tuple(t for t in tags if t in deleted),
            absent=tuple(t for t in tags if t in absent and t not in deleted),
            failed=failed,
        )

    # --- plumbing -----------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except _BOTO_ERRORS as exc:
            raise _error(exc, what) from exc


_BOTO_ERRORS = (BotoCoreError, ClientError)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def _error(exc: BaseException, what: str) -> RegistryError:
    """A ``RegistryError`` from any boto3/botocore failure, with the AWS error code only."""
    code = _code(exc) or type(exc).__name__
    hint = "Check the worker's AWS identity (IRSA role) and registry.ecr_region."
    if code in ("AccessDeniedException", "UnrecognizedClientException", "NoCredentialsError"):
        hint = (
            "The worker's AWS identity may not do this: it needs ecr:GetAuthorizationToken, "
            "CreateRepository, Get/PutLifecyclePolicy, BatchDeleteImage and the push actions "
            '(docs/operations.md, "ECR permissions").'
        )
    elif code in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        hint = "The ECR API is not reachable; check registry.aws_endpoint_url and the network."
    return RegistryError(f"ECR could not {what} ({code}).", hint=hint)
