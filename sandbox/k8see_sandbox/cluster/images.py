"""The node's local images, built here from our own binaries, and their import into containerd.

Every pod's sandbox runs the pause image, and tests that only need *a* container run it too;
tests that need a container answering HTTP run ``testapp`` (``tools/go/testapp``). No image
host is reachable from these machines, so each image is assembled locally as an OCI archive
(one layer holding the static binary) and imported under the names clusters expect, pinned so
the kubelet's image collection never removes it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

PAUSE_IMAGES = ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.9")
TESTAPP_IMAGE = "k8see.test/testapp:v1"


def _blob(archive: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def image_archive(binary: Path, path: Path, *, name: str) -> str:
    """An OCI archive of a one-layer image whose entrypoint is ``binary`` (as ``/<its name>``),
    run as an unprivileged user; returns the manifest digest."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as layer:
        info = tarfile.TarInfo(binary.name)
        info.size = binary.stat().st_size
        info.mode = 0o755
        with binary.open("rb") as handle:
            layer.addfile(info, handle)
    raw = layer_tar.getvalue()
    compressed = gzip.compress(raw, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [f"/{binary.name}"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
    }
    with tarfile.open(path, "w") as archive:
        config_digest, config_size = _blob(archive, json.dumps(config).encode())
        layer_digest, layer_size = _blob(archive, compressed)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
        manifest_digest, manifest_size = _blob(archive, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "annotations": {"io.containerd.image.name": name},
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
        for member, data in (
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return manifest_digest


def import_images(
    *, ctr: str, address: str, pause: Path, testapp: Path, workdir: Path
) -> dict[str, str]:
    """Import the pause image under every name in ``PAUSE_IMAGES`` and the test app, pinned;
    returns each name's manifest digest."""
    digests: dict[str, str] = {}
    wanted = [(name, pause) for name in PAUSE_IMAGES] + [(TESTAPP_IMAGE, testapp)]
    for name, binary in wanted:
        archive = workdir / "image.tar"
        digests[name] = image_archive(binary, archive, name=name)
        for argv in (
            ["images", "import", str(archive)],
            ["images", "label", name, "io.cri-containerd.pinned=pinned"],
        ):
            subprocess.run(
                [ctr, "--address", address, "-n", "k8s.io", *argv], check=True, capture_output=True
            )
    return digests


def archive_blobs(path: Path) -> tuple[dict[str, bytes], str]:
    """The blobs of an archive ``image_archive`` wrote, and its manifest digest: what a push
    to a registry sends."""
    blobs: dict[str, bytes] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if member.name.startswith("blobs/sha256/"):
                handle = archive.extractfile(member)
                assert handle is not None
                blobs["sha256:" + member.name.rsplit("/", 1)[1]] = handle.read()
            elif member.name == "index.json":
                handle = archive.extractfile(member)
                assert handle is not None
                index = json.load(handle)
    return blobs, str(index["manifests"][0]["digest"])
