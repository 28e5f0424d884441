"""The OCI image vocabulary: media types, image references, manifests, digests, platforms.

Why apart from the registry client (``k8see.integrations.registry``): these are plain values
and parsing, with no HTTP. The stages and jobs that only name images (``parse_ref``), the
GHCR and ECR deleters (``TagDeletion``, ``parse_created``) and the Docker builder's upload
(``k8see.integrations.dockersave``) use them without the client.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from k8see.errors import RegistryError

__all__ = [
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "INDEX_TYPES",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "ImageRef",
    "Manifest",
    "TagDeletion",
    "digest_of",
    "is_digest",
    "is_tag",
    "parse_created",
    "parse_ref",
    "platform_name",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The OCI "empty" config blob (``{}``): what a placeholder manifest points to.
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
#: Ask for lists first: the digest we deploy by is the multi-arch list's.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
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


def digest_of(data: bytes) -> str:
    """The content digest of a blob or manifest, ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    """Whether ``value`` is a ``sha256:`` digest."""
    return bool(_DIGEST_RE.fullmatch(value))


def is_tag(value: str) -> bool:
    """Whether ``value`` is a valid tag."""
    return bool(_TAG_RE.fullmatch(value))


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
    ok_ref = is_digest(reference) if digest else is_tag(reference)
    if not (ok_host and _REPO_RE.fullmatch(path) and ok_ref and not (digest and tag)):
        raise RegistryError(
            f"Image reference {image_ref!r} is not of the form HOST/REPOSITORY[:TAG|@DIGEST].",
            hint="Use a full reference such as 'ghcr.io/acme/shop/web:pr-1'.",
        )
    return ImageRef(host=host, repository=path, reference=reference)


def parse_created(value: object) -> float | None:
    """Unix time of an image config's ``created`` (RFC 3339, nanoseconds allowed), or None."""
    if not isinstance(value, str):
        return None
    match = _CREATED_RE.fullmatch(value.strip())
    if not match:
        return None
    date, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.fromisoformat(f"{date}{(fraction or '')[:7]}{zone}")
    except ValueError:
        return None
    return moment.timestamp()


def platform_name(plat: dict[str, Any]) -> str:
    """``os/arch[/variant]`` of a manifest list entry's ``platform`` or an image config."""
    parts = [plat.get("os", ""), plat.get("architecture", "")]
    if plat.get("variant"):
        parts.append(plat["variant"])
    return "/".join(parts)
