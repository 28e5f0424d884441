"""``deploy.database_wait_images``: the platform names the images of the wait init containers.

Covers: through ``helm_values`` and the real chart, a database named there gets its wait
container from that image while the others keep the chart's; with the setting empty the
chart's images are untouched; an unknown database key or an image with whitespace is refused
when the settings load.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from k8see import names
from k8see.config.model import RepoConfig
from k8see.integrations import helm
from k8see.manifests.release import helm_values
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from tests.charts.test_database_subcharts import CHART, DIGEST, app_pod
from tests.conftest import require_tool


def wait_images(settings: PlatformSettings) -> dict[str, str]:
    """The app pod's wait containers and their images, for PostgreSQL and Redis."""
    data = RepoConfig.model_validate(
        {"projectId": "shop", "databases": {"postgresql": True, "redis": True}}
    ).to_dict()
    validated = {
        "config": data,
        "project_id": "shop",
        "namespace": "shop-pr-42",
        "preview_url": names.preview_url("shop", 42, "preview.test"),
        "databases": ["postgresql", "redis"],
    }
    run = Run(repo="acme/shop", pr=42, sha="a" * 40, generation=1, action=Action.DEPLOY, ref="main")
    build = {"image": f"reg.test/acme/shop@{DIGEST}", "digest": DIGEST}
    values = helm_values(run, validated=validated, build=build, settings=settings)
    objects = helm.template(release="app", chart=CHART, namespace="shop-pr-42", values=values)
    return {c["name"]: c["image"] for c in app_pod(objects)["initContainers"]}


def test_a_named_database_waits_with_the_platforms_image() -> None:
    require_tool("helm")
    settings = PlatformSettings(deploy={"database_wait_images": {"redis": "mirror.test/redis:7"}})
    assert wait_images(settings) == {
        "wait-for-postgresql": "postgres:16-alpine",
        "wait-for-redis": "mirror.test/redis:7",
    }
    assert wait_images(PlatformSettings()) == {
        "wait-for-postgresql": "postgres:16-alpine",
        "wait-for-redis": "redis:7-alpine",
    }


@pytest.mark.parametrize("images", [{"oracle": "x:1"}, {"redis": "a b"}])
def test_unknown_keys_and_bad_images_are_refused(images: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        PlatformSettings(deploy={"database_wait_images": images})
