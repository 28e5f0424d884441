"""A ``docker save`` archive pushed to a registry as one OCI image, over the registry API.

Why: the Docker builder's classic builder (``k8see.integrations.dockerbuild``) pushes one
manifest per tag and cannot make a multi-arch list, so each platform's image is exported
from the daemon and uploaded here; the builder then stores one OCI index of the uploaded
manifests under every tag. Layers are gzipped a chunk at a time into temporary files (a
layer can be gigabytes), with no file name and no time in the gzip header, so the same
layer always has the same digest and a registry that has it already skips the upload.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from typing import IO, Any

from k8see.errors import IntegrationError, RegistryError
from k8see.integrations.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, digest_of
from k8see.integrations.registry import OciRegistry

__all__ = ["gzip_into", "push_saved_image"]

#: Read and compress layers this much at a time.
CHUNK_BYTES = 1 << 20


def push_saved_image(
    archive_chunks: Iterable[bytes], registry: OciRegistry, repository: str, plat: str
) -> dict[str, Any]:
    """Upload one image (the chunks of ``docker save``) as an OCI manifest; its index entry.

    Raises:
        RegistryError: an upload failed, or the image is not of ``plat``'s architecture.
        IntegrationError: the archive lacks a file its manifest names.
    """
    with tempfile.TemporaryFile() as archive:
        for chunk in archive_chunks:
            archive.write(chunk)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            saved = json.loads(_member(tar, "manifest.json"))[0]
            config = _member(tar, saved["Config"])
            layers = []
            for name in saved["Layers"]:
                with tempfile.TemporaryFile() as blob:
                    digest, size = gzip_into(_open_member(tar, name), blob)
                    registry.push_blob(repository, digest, blob)
                layers.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size})
    config_digest = digest_of(config)
    registry.push_blob(repository, config_digest, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": layers,
        },
        separators=(",", ":"),
    ).encode()
    digest = registry.put_manifest(repository, digest_of(manifest), manifest, OCI_MANIFEST)
    info = json.loads(config)
    os_name, arch, *variant = plat.split("/")
    if info.get("architecture") != arch:
        raise RegistryError(
            f"Docker built a {info.get('architecture')} image where {plat} was asked for."
        )
    platform = {
        "os": os_name,
        "architecture": arch,
        **({"variant": variant[0]} if variant else {}),
    }
    return {
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": len(manifest),
        "platform": platform,
    }


def gzip_into(source: IO[bytes], target: IO[bytes]) -> tuple[str, int]:
    """Gzip ``source`` into ``target`` a chunk at a time; the blob's digest and size.

    No file name and no time go into the header, so the same layer always has the same
    digest and a registry that has it already skips the upload.
    """
    sink = _Digesting(target)
    with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as compressed:
        shutil.copyfileobj(source, compressed, CHUNK_BYTES)
    return f"sha256:{sink.sha.hexdigest()}", sink.size


class _Digesting:
    """A write-only file that hashes and counts what passes through to ``target``."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _open_member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    extracted = tar.extractfile(name)
    if extracted is None:
        raise IntegrationError(f"docker save produced no file {name!r}.")
    return extracted


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    return _open_member(tar, name).read()
