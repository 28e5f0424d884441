"""GHCR tag deletion through the GitHub packages API.

Why not the registry API: GHCR does not implement ``DELETE /v2/<name>/manifests/<digest>``;
an image is a *package version* and is deleted with
``DELETE /orgs/{org}/packages/container/{package}/versions/{id}`` (``/user/...`` for a
user-owned package). A version carries all of its tags, so a version is deleted only when
every one of its tags is one we were asked to delete; a version that also carries another tag
(a commit shared with another PR) is kept, and its tags are reported as failed with why.
GitHub refuses to delete the last version of a package; then the package itself is deleted
(it held nothing but this PR's image).

The build cache (``<image>/cache``, the project's) is pruned by age instead:
``list_versions`` reads each version's ``updated_at`` and ``delete_versions`` deletes by id,
never the package (its settings and access grants stay).

Credentials: the packages API accepts personal access tokens (classic) with
``read:packages`` and ``delete:packages``, not GitHub App installation tokens, so this uses
the registry's own credential (``registry.password``, the token builds push with).
Requests go through the same transport as every GitHub call (retries, rate limits, errors
without the token).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from k8see.errors import GitHubError, RegistryError
from k8see.integrations.github import GitHubClient, StaticToken
from k8see.integrations.oci import TagDeletion, parse_created

__all__ = ["GhcrPackages", "PackageVersion"]

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
#: GitHub's answer when the last version of a package is deleted (it wants the package gone).
LAST_VERSION = "last tagged version"


@dataclass(frozen=True)
class PackageVersion:
    """One version (one image) of a container package, as GitHub lists it.

    Attributes:
        id: GitHub's version id (what a delete names).
        digest: The image digest (GitHub's ``name`` of a container version).
        tags: Its tags; empty for an untagged image.
        updated_at: Unix time GitHub last changed the version, None if it did not say.
    """

    id: int
    digest: str
    tags: tuple[str, ...]
    updated_at: float | None


class GhcrPackages:
    """Delete GHCR image tags by deleting package versions.

    Args:
        api_url: The GitHub API (``github.api_url``).
        token: A token allowed to delete packages (``registry.password``).
        log: Logger; gets paths, never the token.
        timeout_seconds: Per-request timeout.
        max_retries: Retries on 5xx and rate limits.
        backoff_seconds: First backoff.
    """

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        log: Log,
        timeout_seconds: float = 30.0,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
    ) -> None:
        if not token:
            raise RegistryError(
                "Deleting GHCR images needs a token.",
                hint="Set K8SEE_REGISTRY__PASSWORD to a token with delete:packages.",
            )
        self._token = token
        self.log = log
        self._gh = GitHubClient(
            api_url=api_url,
            token_provider=StaticToken(token),
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            backoff_seconds=backoff_seconds,
            log=log,
        )

    def remove_tags(self, repository: str, tags: Sequence[str]) -> TagDeletion:
        """Delete the package versions that carry only ``tags``; best-effort, idempotent.

        Args:
            repository: The image path without the host: ``owner/repo/project``.
            tags: The tags to delete.
        """
        owner, _, package = repository.partition("/")
        if not package:
            return TagDeletion(failed=dict.fromkeys(tags, "not an owner/package path"))
        wanted = set(tags)
        try:
            base, versions = self._versions(owner, package)
        except GitHubError as exc:
            return TagDeletion(failed=dict.fromkeys(tags, exc.message))
        if base is None:
            return TagDeletion(absent=tuple(tags))
        deleted: list[str] = []
        failed: dict[str, str] = {}
        remaining = len(versions)  # GitHub deletes the last version only with the package
        for version in versions:
            have = set(_tags(version)) & wanted
            if not have:
                continue
            others = sorted(set(_tags(version)) - wanted)
            if others:
                reason = f"kept: the image also has tag(s) {', '.join(others)}"
                failed.update(dict.fromkeys(have, reason))
                continue
            try:
                self._delete_version(base, int(version["id"]), last=remaining == 1)
            except GitHubError as exc:
                failed.update(dict.fromkeys(have, exc.message))
                continue
            remaining -= 1
            deleted += sorted(have)
        return TagDeletion(
            deleted=tuple(t for t in tags if t in deleted),
            absent=tuple(t for t in tags if t not in deleted and t not in failed),
            failed=failed,
        )

    def list_versions(self, repository: str) -> list[PackageVersion]:
        """Every version of the package of ``repository`` (``owner/path``); none if missing.

        Raises:
            GitHubError: GitHub could not be asked (rate limit, token refused, 5xx).
        """
        owner, _, package = repository.partition("/")
        if not package:
            return []
        _base, versions = self._versions(owner, package)
        return [_version(v) for v in versions]

    def delete_versions(self, repository: str, ids: Iterable[int]) -> dict[int, str]:
        """Delete versions of the package of ``repository`` by id; best-effort, idempotent.

        Never deletes the package itself: GitHub refuses its last version (a 400, reported as
        a failure), so a caller that wants the package kept leaves one version.

        Returns:
            The versions that could not be deleted, each with a reason (never the token).
        """
        wanted = list(ids)
        owner, _, package = repository.partition("/")
        try:
            base, versions = self._versions(owner, package) if package else (None, [])
        except GitHubError as exc:
            return dict.fromkeys(wanted, exc.message)
        present = {int(v["id"]) for v in versions}
        failed: dict[int, str] = {}
        for version_id in wanted:
            if base is None or version_id not in present:
                continue  # gone already
            try:
                self._delete_version(base, version_id, last=False)
            except GitHubError as exc:
                failed[version_id] = exc.message
        return failed

    def _versions(self, owner: str, package: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The package's API path and its versions; (None, []) when it does not exist.

        The org path is tried first; a 404 there means a user-owned package (or none).
        """
        name = quote(package, safe="")
        for base in (
            f"/orgs/{quote(owner, safe='')}/packages/container/{name}",
            f"/user/packages/container/{name}",
        ):
            versions: list[dict[str, Any]] = []
            url: str | None = self._gh.http.url(f"{base}/versions?per_page=100")
            while url:
                response = self._send("GET", url)
                if response.status_code == 404:
                    break
                page = response.json()
                if not isinstance(page, list):
                    raise GitHubError(f"GitHub answered GET {base}/versions with a non-list.")
                versions += page
                url = response.links.get("next", {}).get("url")
            else:
                return base, versions
        return None, []

    def _delete_version(self, base: str, version_id: int, *, last: bool) -> None:
        response = self._send("DELETE", self._gh.http.url(f"{base}/versions/{version_id}"))
        if response.status_code == 400 and last:
            # GitHub: "You cannot delete the last tagged version of a package. You must
            # delete the package instead."
            response = self._send("DELETE", self._gh.http.url(base))
        if response.status_code == 400:
            raise GitHubError(
                f"GitHub refused to delete version {version_id} of {base}: it is the last one "
                "(only the whole package can go)."
            )
        if response.status_code not in (204, 404):
            raise GitHubError(
                f"GitHub answered {response.status_code} to DELETE {base}/versions/{version_id}.",
                hint="The registry token needs delete:packages and admin on the package.",
            )
        self.log.info("Deleted GHCR package version %s of %s.", version_id, base)

    def _send(self, method: str, url: str) -> Any:
        return self._gh.http.send(method, url, token=lambda: self._token, accept=(400, 404))


def _version(raw: dict[str, Any]) -> PackageVersion:
    return PackageVersion(
        id=int(raw["id"]),
        digest=str(raw.get("name") or ""),
        tags=tuple(_tags(raw)),
        updated_at=parse_created(raw.get("updated_at") or raw.get("created_at")),
    )


def _tags(version: dict[str, Any]) -> list[str]:
    container = (version.get("metadata") or {}).get("container") or {}
    return [str(t) for t in container.get("tags") or []]
