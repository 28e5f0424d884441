"""Container registries over the OCI distribution API (the generic registry, GHCR reads).

Why plain HTTP and not a tool: resolving a digest, listing and deleting tags are three small
requests, and the registry's answers (status codes, ``Docker-Content-Digest``) are exactly
what we need; ``requests`` is already installed with the worker extra. Every ``requests``
error stops here as a ``RegistryError`` without the response body (it can echo credentials).

``OciRegistry`` speaks the distribution API with basic or bearer-token auth, which is what
the local ``docker-registry``, GHCR and most registries accept. Registries whose deletion is
not part of that API (GHCR deletes package versions through the GitHub API, ECR through
boto3) subclass it and override ``delete_tags``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from k8see.errors import RegistryError

__all__ = [
    "INDEX_TYPES",
    "MANIFEST_ACCEPT",
    "ImageRef",
    "Manifest",
    "OciRegistry",
    "TagDeletion",
    "parse_created",
    "parse_ref",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
#: Ask for lists first: the digest we deploy by is the multi-arch list's.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

#: The OCI "empty" config blob (``{}``): what a placeholder manifest points to.
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
_EMPTY_BLOB = b"{}"
_EMPTY_DIGEST = "sha256:" + hashlib.sha256(_EMPTY_BLOB).hexdigest()
#: A digest no manifest has: deleting it asks "may we delete?" and changes nothing.
_NO_DIGEST = "sha256:" + "0" * 64
#: Answers worth asking again: throttling and a struggling registry or proxy in front of it.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Never POST: starting an upload twice leaves an orphaned upload session behind.
_RETRY_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_DEL_HINT = (
    "Check the registry credentials and that the registry allows deletion "
    "(REGISTRY_STORAGE_DELETE_ENABLED=true for docker-registry)."
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
#: RFC 3339 as Go writes it: up to nine fraction digits (Python reads six), ``Z`` or an offset.
_CREATED_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class ImageRef:
    """``host/repository`` plus a tag or a digest (``reference``)."""

    host: str
    repository: str
    reference: str

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.host}/{self.repository}{sep}{self.reference}"


@dataclass(frozen=True)
class TagDeletion:
    """The outcome of a best-effort tag deletion, per tag (same shape for every registry).

    Attributes:
        deleted: Tags that existed and are gone now.
        absent: Tags that did not exist (already deleted, or never pushed).
        failed: Tags that may still be there, each with a reason (never a response body).
    """

    deleted: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A fetched manifest: its media type, digest and parsed body."""

    media_type: str
    digest: str
    body: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or "manifests" in self.body


def parse_ref(image_ref: str) -> ImageRef:
    """Split ``host[:port]/repo[/...][:tag|@sha256:...]``, refusing anything else.

    Raises:
        RegistryError: the reference has no host, or an invalid repository, tag or digest.
    """
    rest, digest = image_ref.split("@", 1) if "@" in image_ref else (image_ref, "")
    host, _, path = rest.partition("/")
    tag = ""
    if ":" in path:
        path, tag = path.rsplit(":", 1)
    reference = digest or tag or "latest"
    ok_host = bool(host) and ("." in host or ":" in host or host == "localhost")
    ok_ref = bool(_DIGEST_RE.match(reference)) if digest else bool(_TAG_RE.match(reference))
    if not (ok_host and _REPO_RE.match(path) and ok_ref and not (digest and tag)):
        raise RegistryError(
            f"Image reference {image_ref!r} is not of the form HOST/REPOSITORY[:TAG|@DIGEST].",
            hint="Use a full reference such as 'ghcr.io/acme/shop/web:pr-1'.",
        )
    return ImageRef(host=host, repository=path, reference=reference)


class OciRegistry:
    """A registry reached over the OCI distribution API.

    Args:
        host: ``host[:port]`` of the registry.
        insecure: Plain HTTP (the local test/demo registry only).
        username: For basic auth or the token exchange; empty for anonymous.
        password: The password or token; never logged or put into messages.
        timeout_seconds: Per-request timeout.
        retries: How often a request that met a connection error, a timeout or a
            429/5xx answer is sent again (exponential backoff with jitter, honouring
            ``Retry-After``); file bodies are rewound by urllib3 before each attempt.
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
        self.url = f"{'http' if insecure else 'https'}://{host}"
        self._auth = (username, password) if username and password else None
        self._timeout = timeout_seconds
        self._session = requests.Session()
        policy = Retry(
            total=retries,
            backoff_factor=0.5,
            backoff_jitter=0.25,
            backoff_max=10.0,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=_RETRY_METHODS,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=policy)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._tokens: dict[str, str] = {}
        #: Whether ``DELETE manifests/<tag>`` works here (OCI 1.1); None until first tried.
        self._deletes_tags: bool | None = None
        self._may_delete = False

    def close(self) -> None:
        self._session.close()

    # --- reads ------------------------------------------------------------------------------

    def resolve_digest(self, image_ref: str) -> str:
        """The digest of a tag (for a multi-arch image: the manifest list's digest)."""
        ref = self._ref(image_ref)
        if ref.reference.startswith("sha256:"):
            return ref.reference
        resp = self._request(
            "HEAD", ref.repository, f"manifests/{ref.reference}", accept=MANIFEST_ACCEPT
        )
        if resp.status_code == 404:
            raise RegistryError(f"Image {ref} does not exist in the registry.")
        self._check(resp, f"resolve {ref}")
        digest = resp.headers.get("Docker-Content-Digest", "")
        if not _DIGEST_RE.match(digest):
            # Some registries omit the header on HEAD; the body's hash is the digest.
            digest = self.get_manifest(str(ref)).digest
        return digest

    def get_manifest(self, image_ref: str) -> Manifest:
        """The manifest (or manifest list) that a tag or digest points to."""
        ref = self._ref(image_ref)
        resp = self._request(
            "GET", ref.repository, f"manifests/{ref.reference}", accept=MANIFEST_ACCEPT
        )
        if resp.status_code == 404:
            raise RegistryError(f"Image {ref} does not exist in the registry.")
        self._check(resp, f"read the manifest of {ref}")
        digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            body = json.loads(resp.content)
        except ValueError as exc:
            raise RegistryError(f"The manifest of {ref} is not JSON.") from exc
        return Manifest(media_type=body.get("mediaType") or media_type, digest=digest, body=body)

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A blob (config or layer) by digest, verified against it."""
        resp = self._request("GET", repository, f"blobs/{digest}")
        self._check(resp, f"read blob {digest[:19]} of {repository}")
        if "sha256:" + hashlib.sha256(resp.content).hexdigest() != digest:
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
                out.append(_platform(plat))
            return out
        config = json.loads(self.get_blob(ref.repository, manifest.body["config"]["digest"]))
        return [_platform(config)]

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
            if _platform(entry.get("platform") or {}) == platform:
                return self.get_manifest(f"{ref.host}/{ref.repository}@{entry['digest']}")
        raise RegistryError(f"Image {ref} has no {platform} image.")

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository``; an unknown repository has none."""
        tags: list[str] = []
        path = "tags/list?n=1000"
        while path:
            resp = self._request("GET", repository, path)
            if resp.status_code == 404:
                return []
            self._check(resp, f"list the tags of {repository}")
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
        if not _TAG_RE.match(tag):
            raise RegistryError(f"{tag!r} is not a valid tag.")
        resp = self._request("HEAD", repository, f"manifests/{tag}", accept=MANIFEST_ACCEPT)
        if resp.status_code == 404:
            return False
        self._check(resp, f"resolve {repository}:{tag}")
        if self._deletes_tags is not False:
            resp = self._request("DELETE", repository, f"manifests/{tag}")
            if resp.status_code in (200, 202):
                self._deletes_tags = True
                return True
            if resp.status_code == 404:
                return False
            if resp.status_code not in (400, 405) or self._deletes_tags:
                self._check(resp, f"delete {repository}:{tag}")
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
        resp = self._request("DELETE", repository, f"manifests/{digest}")
        if resp.status_code == 405:
            raise RegistryError(f"Registry {self.host} refuses to delete images.", hint=_DEL_HINT)
        if resp.status_code == 404:
            return False
        self._check(resp, f"delete {repository}@{digest[:19]}")
        return True

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Store a manifest under a tag or digest; returns its digest."""
        resp = self._request(
            "PUT", repository, f"manifests/{reference}", data=body, content_type=media_type
        )
        self._check(resp, f"push manifest {repository}:{reference}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def push_blob(self, repository: str, digest: str, data: bytes | BinaryIO) -> None:
        """Upload a blob unless the registry has it already (monolithic upload).

        ``data`` may be an open file: it is sent from its start as it is read, never held
        whole, so a layer of gigabytes costs no more memory than a small one.
        """
        if self._request("HEAD", repository, f"blobs/{digest}").status_code == 200:
            return
        resp = self._request("POST", repository, "blobs/uploads/")
        self._check(resp, f"start a blob upload to {repository}")
        location = resp.headers.get("Location", "")
        url = location if location.startswith("http") else f"{self.url}{location}"
        sep = "&" if "?" in url else "?"
        resp = self._send(
            "PUT",
            f"{url}{sep}digest={digest}",
            repository,
            data=data,
            content_type="application/octet-stream",
        )
        self._check(resp, f"upload blob {digest[:19]} to {repository}")

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

    def _request(
        self,
        method: str,
        repository: str,
        path: str,
        *,
        accept: str | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> requests.Response:
        url = f"{self.url}/v2/{repository}/{path}"
        return self._send(
            method, url, repository, accept=accept, data=data, content_type=content_type
        )

    def _send(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        accept: str | None = None,
        data: bytes | BinaryIO | None = None,
        content_type: str | None = None,
    ) -> requests.Response:
        headers = {}
        if accept:
            headers["Accept"] = accept
        if content_type:
            headers["Content-Type"] = content_type
        for _attempt in range(2):
            token = self._tokens.get(repository)
            auth = None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            elif self._auth:
                auth = self._auth
            if not isinstance(data, bytes | None):
                data.seek(0)  # a file body is sent again after the token exchange
            try:
                resp = self._session.request(
                    method, url, headers=headers, data=data, auth=auth, timeout=self._timeout
                )
            except requests.RequestException as exc:
                raise RegistryError(
                    f"Registry {self.host} is not reachable ({type(exc).__name__}).",
                    hint="Check registry.host and that the registry is running.",
                ) from exc
            challenge = resp.headers.get("WWW-Authenticate", "")
            if resp.status_code != 401 or not challenge.lower().startswith("bearer"):
                return resp
            # No token yet, or the one we hold expired (tokens live minutes): exchange once.
            self._tokens[repository] = self._fetch_token(challenge, repository)
        return resp

    def _fetch_token(self, challenge: str, repository: str) -> str:
        """The bearer-token exchange GHCR and Docker Hub use (``WWW-Authenticate: Bearer``)."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        params.setdefault("scope", f"repository:{repository}:pull,push,delete")
        try:
            resp = self._session.get(realm, params=params, auth=self._auth, timeout=self._timeout)
        except requests.RequestException as exc:
            raise RegistryError(f"Registry {self.host} token service is not reachable.") from exc
        if resp.status_code != 200:
            raise RegistryError(
                f"Registry {self.host} refused the credentials (HTTP {resp.status_code}).",
                hint="Check registry.username and registry.password.",
            )
        body = resp.json()
        return str(body.get("token") or body.get("access_token") or "")

    def _check(self, resp: requests.Response, what: str) -> None:
        if resp.status_code < 300:
            return
        # Only the structured error codes, never the raw body: it may echo credentials.
        codes = []
        with contextlib.suppress(ValueError, AttributeError):
            codes = [e.get("code", "") for e in resp.json().get("errors", [])]
        detail = f" ({', '.join(c for c in codes if c)})" if any(codes) else ""
        hint = None
        if resp.status_code in (401, 403):
            hint = "Check the registry credentials and that they may push to this repository."
        raise RegistryError(
            f"Registry {self.host} could not {what}: HTTP {resp.status_code}{detail}.", hint=hint
        )


def parse_created(value: object) -> float | None:
    """Unix time of an image config's ``created`` (RFC 3339, nanoseconds allowed), or None."""
    if not isinstance(value, str):
        return None
    match = _CREATED_RE.match(value.strip())
    if not match:
        return None
    date, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.fromisoformat(f"{date}{(fraction or '')[:7]}{zone}")
    except ValueError:
        return None
    return moment.timestamp()


def _platform(plat: dict[str, Any]) -> str:
    parts = [plat.get("os", ""), plat.get("architecture", "")]
    if plat.get("variant"):
        parts.append(plat["variant"])
    return "/".join(parts)


def _next_link(link: str, repository: str) -> str:
    match = re.search(r"<([^>]+)>", link)
    if not match:
        return ""
    target = match.group(1)
    prefix = f"/v2/{repository}/"
    return target[len(prefix) :] if target.startswith(prefix) else ""


# --- OCI layouts: how the local base-image mirror gets into a registry ------------------------
