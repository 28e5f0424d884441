"""OciRegistry against a real docker-registry: the mirror push, digests, platforms of a
manifest list, tag listing, idempotent tag deletion, a large blob streamed from a file (and
gzipped a chunk at a time, as the Docker builder does), and errors that are RegistryError
without leaking library exceptions."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from k8see.errors import RegistryError
from k8see.integrations.dockersave import gzip_into
from k8see.integrations.oci import parse_ref
from k8see.integrations.registry import OciRegistry
from k8see_sandbox.mirror import push_oci_layout
from tests.conftest import free_port
from tests.fixtures.images import MIRROR_DIR, LocalRegistry


def test_the_mirror_holds_a_two_platform_busybox(registry: LocalRegistry) -> None:
    client = registry.client()
    spec = json.loads((MIRROR_DIR / "mirror.json").read_text())["images"][0]
    assert f"{registry.host}/library/busybox:latest" in registry.mirrored
    assert client.get_platforms("library/busybox:latest") == ["linux/amd64", "linux/arm64"]
    assert set(spec["tags"]) <= set(client.list_tags("library/busybox"))
    # Every tag names the same list, and a digest reference resolves to itself.
    digest = client.resolve_digest(f"{registry.host}/library/busybox:latest")
    assert digest == client.resolve_digest(f"library/busybox:{spec['version']}")
    assert client.resolve_digest(f"library/busybox@{digest}") == digest
    assert client.get_manifest(f"library/busybox@{digest}").is_index


def test_a_single_platform_image_reports_its_platform(registry: LocalRegistry) -> None:
    client = registry.client()
    arm = client.platform_manifest("library/busybox:latest", "linux/arm64")
    assert not arm.is_index
    assert client.get_platforms(f"library/busybox@{arm.digest}") == ["linux/arm64"]


def test_tags_are_listed_and_deleted_idempotently(registry: LocalRegistry) -> None:
    # Given an image pushed under two tags of a fresh repository
    client = registry.client()
    digest = push_oci_layout(
        client,
        layout_dir=MIRROR_DIR / "busybox",
        repository="k8see-tests/delete-me/app",
        tags=["pr-7", "sha-" + "b" * 40],
    )
    assert client.list_tags("k8see-tests/delete-me/app") == ["pr-7", "sha-" + "b" * 40]
    assert client.resolve_digest("k8see-tests/delete-me/app:pr-7") == digest
    # When both tags are deleted, twice
    deleted = client.delete_tags("k8see-tests/delete-me/app", ["pr-7", "sha-" + "b" * 40])
    again = client.delete_tags("k8see-tests/delete-me/app", ["pr-7", "sha-" + "b" * 40])
    # Then they are gone, and the second call is a no-op (a digest delete drops every tag
    # on that digest, so the second tag may already be gone in the first call)
    assert deleted[0] == "pr-7"
    assert again == []
    assert client.list_tags("k8see-tests/delete-me/app") == []
    with pytest.raises(RegistryError, match="does not exist"):
        client.resolve_digest("k8see-tests/delete-me/app:pr-7")


#: A layer much larger than what streaming keeps in memory at once (a 1 MiB chunk).
LARGE_BYTES = 32 << 20


def _peak_bytes(work: Callable[[], object]) -> int:
    """The most memory Python objects held at once while ``work`` ran."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_blob_is_pushed_from_a_file_without_reading_it_whole(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    data = os.urandom(LARGE_BYTES)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    (tmp_path / "blob").write_bytes(data)
    client = registry.client()
    with (tmp_path / "blob").open("rb") as fh:
        peak = _peak_bytes(lambda: client.push_blob("k8see-tests/large", digest, fh))
    # The registry checks the digest of what arrived; memory stayed far below the blob's size.
    assert client.get_blob("k8see-tests/large", digest) == data
    assert peak < LARGE_BYTES // 4  # reading it whole takes at least its size


def test_a_layer_is_gzipped_a_chunk_at_a_time_with_a_stable_digest(tmp_path: Path) -> None:
    data = os.urandom(LARGE_BYTES // 2) + bytes(LARGE_BYTES // 2)
    (tmp_path / "layer.tar").write_bytes(data)
    digests = []
    for _ in range(2):
        with (tmp_path / "layer.tar").open("rb") as src, tempfile.TemporaryFile() as out:
            peak = _peak_bytes(lambda src=src, out=out: digests.append(gzip_into(src, out)))
            out.seek(0)
            blob = out.read()
        assert peak < LARGE_BYTES // 4  # read whole and gzip.compress: 2.4 times
        assert gzip.decompress(blob) == data
        assert digests[-1] == (f"sha256:{hashlib.sha256(blob).hexdigest()}", len(blob))
    assert digests[0] == digests[1]


def test_an_unknown_repository_has_no_tags(registry: LocalRegistry) -> None:
    assert registry.client().list_tags("k8see-tests/never/pushed") == []


def test_an_unreachable_registry_is_a_registry_error() -> None:
    client = OciRegistry(host=f"127.0.0.1:{free_port()}", insecure=True, timeout_seconds=2)
    with pytest.raises(RegistryError) as info:
        client.list_tags("a/b")
    assert "is not reachable (ConnectionError)" in info.value.message
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "ghcr.io/Acme/x:tag",
        "ghcr.io/a/b:bad tag",
        "ghcr.io/a/b@sha256:short",
        "h.io/a:t@sha256:" + "0" * 64,
    ],
)
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(RegistryError, match="is not of the form"):
        parse_ref(ref)


def test_references_are_parsed() -> None:
    assert str(parse_ref("127.0.0.1:5000/a/b/c:pr-1")) == "127.0.0.1:5000/a/b/c:pr-1"
    ref = parse_ref("ghcr.io/acme/shop/web@sha256:" + "a" * 64)
    assert (ref.host, ref.repository, ref.reference) == (
        "ghcr.io",
        "acme/shop/web",
        "sha256:" + "a" * 64,
    )
    assert parse_ref("localhost/x").reference == "latest"
