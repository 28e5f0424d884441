"""Container registries over the OCI distribution API (the generic registry, GHCR reads).

Why plain HTTP and not a tool: resolving a digest, listing and deleting tags are three small
requests, and the registry's answers (status codes, ``Docker-Content-Digest``) are exactly
what we need; ``requests`` is already installed with the worker extra.

``OciRegistry`` says what to ask of the distribution API; how each request goes (retries,
basic or bearer-token auth, errors that never carry a response body) is
``k8see.integrations.registry_session``, and the values it speaks (references, media types,
manifests) are ``k8see.integrations.oci``. Registries whose deletion is not part of that API
have deleters of their own with the same ``remove_tags``: GHCR deletes package versions
through the GitHub API (``ghcr``), ECR through boto3 (``ecr``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from typing import BinaryIO

from k8see.errors import RegistryError
from k8see.integrations.oci import (
    MANIFEST_ACCEPT,
    OCI_EMPTY,
    OCI_MANIFEST,
    ImageRef,
    Manifest,
    TagDeletion,
    digest_of,
    is_digest,
    is_tag,
    parse_created,
    parse_ref,
    platform_name,
)
from k8see.integrations.registry_session import RegistrySession

__all__ = ["OciRegistry"]

_EMPTY_BLOB = b"{}"
_EMPTY_DIGEST = digest_of(_EMPTY_BLOB)
#: A digest no manifest has: deleting it asks "may we delete?" and changes nothing.
_NO_DIGEST = "sha256:" + "0" * 64
_DEL_HINT = (
    "Check the registry credentials and that the registry allows deletion "
    "(REGISTRY_STORAGE_DELETE_ENABLED=true for docker-registry)."
)


class OciRegistry:
    """A registry reached over the OCI distribution API.

    Args: those of ``RegistrySession``: ``host`` (``host[:port]``), ``insecure`` (plain
    HTTP, the local test/demo registry only), ``username`` and ``password`` (empty:
    anonymous), ``timeout_seconds`` (per request), ``retries`` (of a failed or throttled one).
    """

    def __init__(
        self,
        *,
        host: str,
        insecure: bool = False,
        username: str = "",
        password: str | None = None,
        timeout_seconds: float = 30.0,
        retries: int = 3,
    ) -> None:
        self.host = host
        self.insecure = insecure
        self._http = RegistrySession(
            host=host,
            insecure=insecure,
            username=username,
            password=password,
            timeout_seconds=timeout_seconds,
            retries=retries,
        )
        self.url = self._http.url
        #: Whether ``DELETE manifests/<tag>`` works here (OCI 1.1); None until first tried.
        self._deletes_tags: bool | None = None
        self._may_delete = False

    def close(self) -> None:
        self._http.close()

    # --- reads ------------------------------------------------------------------------------

    def resolve_digest(self, image_ref: str) -> str:
        """The digest of a tag (for a multi-arch image: the manifest list's digest)."""
        ref = self._ref(image_ref)
        if ref.reference.startswith("sha256:"):
            return ref.reference
        resp = self._http.request(
            "HEAD", ref.repository, f"manifests/{ref.reference}", accept=MANIFEST_ACCEPT
        )
        if resp.status_code == 404:
            raise RegistryError(f"Image {ref} does not exist in the registry.")
        self._http.check(resp, f"resolve {ref}")
        digest = resp.headers.get("Docker-Content-Digest", "")
        if not is_digest(digest):
            # Some registries omit the header on HEAD; the body's hash is the digest.
            digest = self.get_manifest(str(ref)).digest
        return digest

    def get_manifest(self, image_ref: str) -> Manifest:
        """The manifest (or manifest list) that a tag or digest points to."""
        ref = self._ref(image_ref)
        resp = self._http.request(
            "GET", ref.repository, f"manifests/{ref.reference}", accept=MANIFEST_ACCEPT
        )
        if resp.status_code == 404:
            raise RegistryError(f"Image {ref} does not exist in the registry.")
        self._http.check(resp, f"read the manifest of {ref}")
        digest = digest_of(resp.content)
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            body = json.loads(resp.content)
        except ValueError as exc:
            raise RegistryError(f"The manifest of {ref} is not JSON.") from exc
        return Manifest(media_type=body.get("mediaType") or media_type, digest=digest, body=body)

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A blob (config or layer) by digest, verified against it."""
        resp = self._http.request("GET", repository, f"blobs/{digest}")
        self._http.check(resp, f"read blob {digest[:19]} of {repository}")
        if digest_of(resp.content) != digest:
            raise RegistryError(f"Blob {digest} of {repository} does not match its digest.")
        return resp.content

    def get_platforms(self, image_ref: str) -> list[str]:
        """``os/arch[/variant]`` of every image in a manifest list (or of a single image)."""
        ref = self._ref(image_ref)
        manifest = self.get_manifest(str(ref))
        if manifest.is_index:
            out = []
            for entry in manifest.body.get("manifests", []):
                plat = entry.get("platform") or {}
                if plat.get("os") == "unknown":  # attestation manifests, not images
                    continue
                out.append(platform_name(plat))
            return out
        config = json.loads(self.get_blob(ref.repository, manifest.body["config"]["digest"]))
        return [platform_name(config)]

    def image_created(self, repository: str, manifest: Manifest) -> float | None:
        """When the image of ``manifest`` was built: its config's ``created``, as Unix time.

        The distribution API keeps no push or tag times; ``created`` is what the builder
        wrote (buildah: when it built that step). For a manifest list it is the newest of
        its images. None when no image says (a config without ``created``).

        Raises:
            RegistryError: a manifest or config blob could not be read.
        """
        if not manifest.is_index:
            config = manifest.body.get("config") or {}
            if not isinstance(config.get("digest"), str):
                return None
            blob = self.get_blob(repository, config["digest"])
            try:
                created = json.loads(blob).get("created")
            except (ValueError, AttributeError):
                return None
            return parse_created(created)
        times = []
        for entry in manifest.body.get("manifests") or []:
            child = self.get_manifest(f"{self.host}/{repository}@{entry.get('digest', '')}")
            when = self.image_created(repository, child)
            if when is not None:
                times.append(when)
        return max(times, default=None)

    def platform_manifest(self, image_ref: str, platform: str) -> Manifest:
        """The single-platform manifest for ``platform`` inside a manifest list."""
        ref = self._ref(image_ref)
        index = self.get_manifest(str(ref))
        if not index.is_index:
            return index
        for entry in index.body.get("manifests", []):
            if platform_name(entry.get("platform") or {}) == platform:
                return self.get_manifest(f"{ref.host}/{ref.repository}@{entry['digest']}")
        raise RegistryError(f"Image {ref} has no {platform} image.")

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``; an unknown repository has none."""
        tags: list[str] = []
        path = "tags/list?n=1000"
        while path:
            resp = self._http.request("GET", repository, path)
            if resp.status_code == 404:
                return []
            self._http.check(resp, f"list the tags of {repository}")
            tags.extend(resp.json().get("tags") or [])
            path = _next_link(resp.headers.get("Link", ""), repository)
        return sorted(tags)

    # --- writes -----------------------------------------------------------------------------

    def delete_tags(self, repository: str, tags: Iterable[str]) -> list[str]:
        """Delete ``tags`` of ``repository``; idempotent (a missing tag counts as done).

        Returns:
            The tags that existed and are now gone.

        Raises:
            RegistryError: a tag could not be deleted (the first reason).
        """
        outcome = self.remove_tags(repository, list(tags))
        if outcome.failed:
            tag, reason = next(iter(outcome.failed.items()))
            raise RegistryError(f"Could not delete {repository}:{tag}: {reason}", hint=_DEL_HINT)
        return list(outcome.deleted)

    def remove_tags(self, repository: str, tags: Sequence[str]) -> TagDeletion:
        """Delete ``tags`` best-effort: every tag gets an outcome, none raises.

        Only the named tags go. Another tag on the same image (``sha-<commit>`` shared by two
        PRs of one commit, a tag pushed by hand) stays: see ``delete_tag``.
        """
        deleted: list[str] = []
        absent: list[str] = []
        failed: dict[str, str] = {}
        for tag in tags:
            try:
                (deleted if self.delete_tag(repository, tag) else absent).append(tag)
            except RegistryError as exc:
                failed[tag] = exc.message
        return TagDeletion(deleted=tuple(deleted), absent=tuple(absent), failed=failed)

    def delete_tag(self, repository: str, tag: str) -> bool:
        """Delete one tag and nothing else; idempotent.

        Registries that implement OCI 1.1's ``DELETE /v2/<name>/manifests/<tag>`` delete the tag
        alone. Others (docker-registry 2.x) delete only by digest, which removes every tag on
        that digest: there the tag is first pointed at a placeholder manifest of its own (an
        empty config and a unique annotation), and the placeholder's digest is deleted, taking
        only this tag with it. The image it pointed to stays for the registry's own garbage
        collection, or for its other tags. This is how regclient's ``tag rm`` works.

        Returns:
            True when the tag existed, False when it was already gone.

        Raises:
            RegistryError: the registry refused (deletion disabled, credentials) or failed.
        """
        if not is_tag(tag):
            raise RegistryError(f"{tag!r} is not a valid tag.")
        resp = self._http.request("HEAD", repository, f"manifests/{tag}", accept=MANIFEST_ACCEPT)
        if resp.status_code == 404:
            return False
        self._http.check(resp, f"resolve {repository}:{tag}")
        if self._deletes_tags is not False:
            resp = self._http.request("DELETE", repository, f"manifests/{tag}")
            if resp.status_code in (200, 202):
                self._deletes_tags = True
                return True
            if resp.status_code == 404:
                return False
            if resp.status_code not in (400, 405) or self._deletes_tags:
                self._http.check(resp, f"delete {repository}:{tag}")
            self._deletes_tags = False
        if not self._may_delete:
            # Never overwrite a tag where the placeholder could not be deleted afterwards.
            self.delete_manifest(repository, _NO_DIGEST)
            self._may_delete = True
        self.push_blob(repository, _EMPTY_DIGEST, _EMPTY_BLOB)
        placeholder = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_EMPTY, "digest": _EMPTY_DIGEST, "size": 2},
                "layers": [],
                "annotations": {"dev.k8see.untagged": f"{repository}:{tag}@{time.time_ns()}"},
            },
            sort_keys=True,
        ).encode()
        digest = self.put_manifest(repository, tag, placeholder, OCI_MANIFEST)
        self.delete_manifest(repository, digest)
        return True

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete the manifest ``digest`` and with it every tag on it; idempotent.

        Returns:
            True when it existed, False when it was already gone.

        Raises:
            RegistryError: the registry refused (deletion disabled, credentials) or failed.
        """
        resp = self._http.request("DELETE", repository, f"manifests/{digest}")
        if resp.status_code == 405:
            raise RegistryError(f"Registry {self.host} refuses to delete images.", hint=_DEL_HINT)
        if resp.status_code == 404:
            return False
        self._http.check(resp, f"delete {repository}@{digest[:19]}")
        return True

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest under a tag or digest; returns its digest."""
        resp = self._http.request(
            "PUT", repository, f"manifests/{reference}", data=body, content_type=media_type
        )
        self._http.check(resp, f"push manifest {repository}:{reference}")
        return digest_of(body)

    def push_blob(self, repository: str, digest: str, data: bytes | BinaryIO) -> None:
        """Upload a blob unless the registry has it already (monolithic upload).

        ``data`` may be an open file: it is sent from its start as it is read, never held
        whole, so a layer of gigabytes costs no more memory than a small one.
        """
        if self._http.request("HEAD", repository, f"blobs/{digest}").status_code == 200:
            return
        resp = self._http.request("POST", repository, "blobs/uploads/")
        self._http.check(resp, f"start a blob upload to {repository}")
        location = resp.headers.get("Location", "")
        url = location if location.startswith("http") else f"{self.url}{location}"
        sep = "&" if "?" in url else "?"
        resp = self._http.send(
            "PUT",
            f"{url}{sep}digest={digest}",
            repository,
            data=data,
            content_type="application/octet-stream",
        )
        self._http.check(resp, f"upload blob {digest[:19]} to {repository}")

    # --- plumbing ---------------------------------------------------------------------------

    def _ref(self, image_ref: str) -> ImageRef:
        first = image_ref.split("/", 1)[0]
        if "/" in image_ref and ("." in first or ":" in first or first == "localhost"):
            ref = parse_ref(image_ref)
            if ref.host != self.host:
                raise RegistryError(f"Image {image_ref!r} is not in registry {self.host}.")
            return ref
        # A bare repository[:tag] is relative to this registry.
        return parse_ref(f"{self.host}/{image_ref}")


def _next_link(link: str, repository: str) -> str:
    match = re.search(r"<([^>]+)>", link)
    if not match:
        return ""
    target = match.group(1)
    prefix = f"/v2/{repository}/"
    return target[len(prefix) :] if target.startswith(prefix) else ""
