"""The platform's registry, from the settings: its host, its credentials, how tags go.

Why a module of its own: three registry types (GHCR, ECR, a generic OCI registry) differ in
exactly three places: where the host comes from (ECR: the AWS account and region), what the
login is (ECR: a 12-hour token from the API) and how a tag is deleted (GHCR: package versions
through the GitHub API; ECR: ``BatchDeleteImage``; generic: the distribution API). The build,
scan, untag and deploy stages ask here instead of each knowing all three.

``registry_credentials(settings)`` is the one login of the platform's registry: the build
pushes with it, the scan pulls with it, and the image pull secret (``ghcr-pull-secret`` /
``ecr-pull-secret``) that the deploy stage writes and the refresh job rewrites carries it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from pydantic import SecretStr

from k8see.integrations.oci import TagDeletion
from k8see.integrations.registry import OciRegistry
from k8see.settings import PlatformSettings

__all__ = [
    "RegistryCredentials",
    "TagRemover",
    "ensure_repository",
    "registry_credentials",
    "registry_host",
    "tag_digest",
    "tag_remover",
]

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class TagRemover(Protocol):
    """Best-effort, idempotent tag deletion in one registry."""

    def remove_tags(self, repository: str, tags: Sequence[str]) -> TagDeletion: ...


def _ecr(settings: PlatformSettings) -> Any:
    from k8see.integrations.ecr import EcrRegistry  # boto3: a worker-only dependency

    reg = settings.registry
    return EcrRegistry(region=reg.ecr_region, endpoint_url=reg.aws_endpoint_url)


def registry_host(settings: PlatformSettings) -> str:
    """``registry.host``; for ECR left empty (or at the GHCR default), the account's host."""
    reg = settings.registry
    if reg.type == "ecr" and reg.host in ("", "ghcr.io"):
        return str(_ecr(settings).host())
    return reg.host


class RegistryCredentials(NamedTuple):
    """A registry login and when it stops working; unpacks as ``(username, password, expires_at)``.

    Attributes:
        username: The registry login (``AWS`` for ECR); empty when no login is needed.
        password: The password or token; a secret, so ``repr`` leaves it out.
        expires_at: When the password stops working, or None for a static one.
    """

    username: str
    password: str
    expires_at: datetime | None = None

    @property
    def needed(self) -> bool:
        """Whether there is a login at all (a registry without one needs no pull secret)."""
        return bool(self.username and self.password)

    def __repr__(self) -> str:
        return (
            f"RegistryCredentials(username={self.username!r}, password='***', "
            f"expires_at={self.expires_at!r})"
        )


def registry_credentials(settings: PlatformSettings) -> RegistryCredentials:
    """The login for pushing and pulling, and for the pull secret.

    ECR: ``("AWS", <token>, <expiry, about 12 h ahead>)`` from ``GetAuthorizationToken`` with
    the ambient AWS identity; refresh the pull secret before ``expires_at``. GHCR and generic
    registries: ``registry.username``/``registry.password`` and ``None`` (no expiry);
    ``("", "", None)`` when the registry needs no login. The password is a secret: never log
    it or put it into a message.

    Raises:
        RegistryError: the ECR API refused or could not be reached.
    """
    reg = settings.registry
    if reg.type == "ecr":
        auth = _ecr(settings).authorization()
        return RegistryCredentials(auth.username, auth.password, auth.expires_at)
    password = reg.password.get_secret_value() if reg.password else ""
    return RegistryCredentials(reg.username, password) if password else RegistryCredentials("", "")


def with_login(settings: PlatformSettings, *, username: str, password: str) -> PlatformSettings:
    """Settings whose registry host and login are the ones to use now (an ECR token, say),
    for builders of pull secrets that read ``settings.registry``."""
    registry = settings.registry.model_copy(
        update={
            "host": registry_host(settings),
            "username": username,
            "password": SecretStr(password) if password else None,
        }
    )
    return settings.model_copy(update={"registry": registry})


def ensure_repository(settings: PlatformSettings, *, repository: str, cache: bool = False) -> bool:
    """Create the image repository before the first push where the registry needs it.

    Only ECR does (GHCR and registries create repositories on push). ``repository`` is the
    path without the host; ``cache`` marks a build-cache repository, which gets the age rule
    (``cleanup.build_cache_max_age_days``) from the start rather than at the next registry GC.
    Returns True when it was created now.
    """
    if settings.registry.type != "ecr":
        return False
    from k8see.integrations.ecr import cache_lifecycle_policy  # boto3: worker-only

    days = settings.cleanup.build_cache_max_age_days
    policy = cache_lifecycle_policy(days) if cache else None
    return bool(_ecr(settings).ensure_repository(repository, policy=policy))


def tag_digest(settings: PlatformSettings, image_ref: str) -> str:
    """The digest the platform's registry has for ``image_ref`` (``host/repo:tag``), asked
    with the platform's own login: what the registry says, not what a message says.

    Raises:
        RegistryError: the tag does not exist ("does not exist" in the message), or the
            registry refused or could not be reached.
    """
    reg = settings.registry
    username, password, _expires = registry_credentials(settings)
    registry = OciRegistry(
        host=registry_host(settings),
        insecure=reg.insecure,
        username=username,
        password=password or None,
    )
    try:
        return registry.resolve_digest(image_ref)
    finally:
        registry.close()


def tag_remover(settings: PlatformSettings, *, log: Log) -> TagRemover:
    """The deleter for the configured registry type."""
    reg = settings.registry
    if reg.type == "ecr":
        remover: TagRemover = _ecr(settings)
        return remover
    password = reg.password.get_secret_value() if reg.password else ""
    if reg.type == "ghcr":
        from k8see.integrations.ghcr import GhcrPackages

        token = password or (
            settings.github.token.get_secret_value() if settings.github.token else ""
        )
        return GhcrPackages(
            api_url=settings.github.api_url,
            token=token,
            log=log,
            timeout_seconds=settings.github.timeout_seconds,
            max_retries=settings.queues.max_retries,
            backoff_seconds=settings.queues.retry_backoff_seconds,
        )
    return OciRegistry(
        host=reg.host, insecure=reg.insecure, username=reg.username, password=password or None
    )
