"""How old an image is, and deleting it by digest, over the distribution API (local registry).

Covers: ``parse_created`` reads Go's RFC 3339 (nanoseconds, ``Z`` or an offset) and refuses
anything else; ``image_created`` is the config's ``created`` of an image, the newest of a
manifest list's images, and None for a config without it; ``delete_manifest`` deletes a
digest with every tag on it, and a second delete is a no-op.
"""

from __future__ import annotations

import time
import uuid

import pytest

from k8see.integrations.oci import parse_created
from tests.fixtures.images import LocalRegistry
from tests.jobs.test_cache_prune import push_image, push_list


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05Z", 1704164645.0),
        ("2024-01-02T03:04:05.123456789Z", 1704164645.123456),
        ("2024-01-02T05:04:05+02:00", 1704164645.0),
        ("2024-01-02 03:04:05", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_created_is_read_as_go_writes_it(text: str | None, expected: float | None) -> None:
    assert parse_created(text) == expected


def test_ages_and_deletion_by_digest(registry: LocalRegistry) -> None:
    client = registry.client()
    repository = f"k8see-tests/ages{uuid.uuid4().hex[:6]}/cache"
    old_at, young_at = time.time() - 30 * 86400, time.time() - 86400
    old = push_image(client, repository, ["old", "old-anchor"], created=old_at, seed="o")
    young = push_image(client, repository, ["young"], created=young_at, seed="y")
    push_image(client, repository, ["undated"], created=None, seed="u")
    push_list(client, repository, "both", [old, young])
    # The age of an image is its config's; a list's is its newest image's.
    age = {t: client.image_created(repository, client.get_manifest(f"{repository}:{t}"))
           for t in ("old", "young", "both", "undated")}  # fmt: skip
    assert age["old"] == pytest.approx(old_at, abs=0.001)
    assert age["both"] == age["young"] == pytest.approx(young_at, abs=0.001)
    assert age["undated"] is None
    # Deleting the old digest takes both its tags; again, it is already gone.
    assert client.delete_manifest(repository, old[0]) is True
    assert client.delete_manifest(repository, old[0]) is False
    assert client.list_tags(repository) == ["both", "undated", "young"]
    client.close()
