"""Pushing OCI layouts into a registry: the local base-image mirror and test images.

``make bootstrap`` builds the busybox mirror as OCI layouts in ``.tools/mirror``; the sandbox
platform, the tests and the benchmarks push it into their registry with ``push_mirror``. The
product never pushes a layout (its builds push with buildah or Docker), so this lives here,
on the product's registry client.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from k8see.errors import RegistryError
from k8see.integrations.oci import INDEX_TYPES
from k8see.integrations.registry import OciRegistry

__all__ = ["push_mirror", "push_oci_layout"]


def push_oci_layout(
    registry: OciRegistry, *, layout_dir: Path, repository: str, tags: Sequence[str]
) -> str:
    """Push the image (or manifest list) of an OCI layout directory under ``tags``.

    Returns:
        The digest of the pushed top-level manifest.
    """
    index = json.loads((layout_dir / "index.json").read_text())
    entries = index.get("manifests") or []
    if len(entries) != 1:
        raise RegistryError(f"OCI layout {layout_dir} must hold exactly one image.")
    top = entries[0]
    _push_tree(registry, layout_dir, repository, top["digest"], top["mediaType"])
    body = _layout_blob(layout_dir, top["digest"])
    for tag in tags:
        registry.put_manifest(repository, tag, body, top["mediaType"])
    return str(top["digest"])


def _push_tree(
    registry: OciRegistry, layout: Path, repository: str, digest: str, media_type: str
) -> None:
    body = _layout_blob(layout, digest)
    manifest = json.loads(body)
    if media_type in INDEX_TYPES:
        for child in manifest.get("manifests", []):
            _push_tree(registry, layout, repository, child["digest"], child["mediaType"])
    else:
        for blob in [manifest["config"], *manifest.get("layers", [])]:
            algo, _, hexdigest = blob["digest"].partition(":")
            with (layout / "blobs" / algo / hexdigest).open("rb") as fh:
                registry.push_blob(repository, blob["digest"], fh)
    registry.put_manifest(repository, digest, body, media_type)


def _layout_blob(layout: Path, digest: str) -> bytes:
    algo, _, hexdigest = digest.partition(":")
    return (layout / "blobs" / algo / hexdigest).read_bytes()


def push_mirror(registry: OciRegistry, *, mirror_dir: Path) -> list[str]:
    """Push every image of the local base-image mirror (``make bootstrap`` builds it).

    Args:
        registry: The registry that builds will use as the mirror of docker.io.
        mirror_dir: ``.tools/mirror``, holding ``mirror.json`` and one OCI layout per image.

    Returns:
        The pushed references, e.g. ``127.0.0.1:5000/library/busybox:latest``.
    """
    spec_file = mirror_dir / "mirror.json"
    if not spec_file.is_file():
        raise RegistryError(
            f"The base-image mirror is missing ({spec_file}).",
            hint="Run `make bootstrap`: it builds the busybox mirror into .tools/mirror.",
        )
    pushed = []
    for image in json.loads(spec_file.read_text())["images"]:
        push_oci_layout(
            registry,
            layout_dir=mirror_dir / image["layout"],
            repository=image["repository"],
            tags=image["tags"],
        )
        pushed += [f"{registry.host}/{image['repository']}:{tag}" for tag in image["tags"]]
    return pushed
