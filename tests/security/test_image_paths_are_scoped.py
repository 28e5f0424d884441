"""Attack 6: one repository's config cannot write or delete another repository's images.

Covers: ``image.repository`` naming another repository's path on the platform registry (the
demo's ``k8see-demo/hello/hello``, or a prefix trick) is a ``ConfigError`` naming the field
and the repository's own path, while a path under its own is accepted; the untag stage never
deletes tags of an image outside the run's repository, whatever the record says.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from k8see.errors import ConfigError
from k8see.record import EnvironmentRecord
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import build, untag
from k8see.stages.context import StageContext

HOST = "registry.example.test"


@pytest.mark.parametrize(
    "custom",
    [
        f"{HOST}/k8see-demo/hello/hello",
        f"{HOST}/evil/app-hello/x",  # evil/app is a prefix of evil/app-hello as text
        f"{HOST}/evil/app",  # the bare path, where the cache of a project could collide
    ],
)
def test_a_repository_outside_its_own_path_is_refused(custom: str) -> None:
    settings = PlatformSettings(registry={"type": "generic", "host": HOST})
    with pytest.raises(ConfigError) as refused:
        build.image_repository(settings, "evil/app", "x", custom)
    assert refused.value.where is not None and refused.value.where.field == "image.repository"
    assert f"{HOST}/evil/app/" in refused.value.message


def test_a_repository_under_its_own_path_is_accepted() -> None:
    settings = PlatformSettings(registry={"type": "generic", "host": HOST})
    assert build.image_repository(settings, "Evil/App", "x", f"{HOST}/evil/app/web") == (
        f"{HOST}/evil/app/web"
    )


def test_untag_never_touches_another_repositorys_image(tmp_path: Path) -> None:
    # Given a record (Redis is writable by whoever reaches it) naming the victim's image
    settings = PlatformSettings(registry={"type": "generic", "host": HOST})
    record = {"image": f"{HOST}/k8see-demo/hello/hello@sha256:{'0' * 64}", "sha": "a" * 40}
    ctx = StageContext(
        settings=settings,
        log=logging.getLogger("test.untag"),
        workdir=tmp_path,
        record=EnvironmentRecord.of(record),
    )
    run = Run(repo="evil/app", pr=1, sha="a" * 40, generation=1, action=Action.DESTROY)
    # When the attacker's PR closes
    result = untag.run(run, ctx).result("untag")
    # Then nothing of the victim's was deleted: the stage skipped it, with the reason
    assert result.get("skipped") == "other-repository" and not result.get("deleted")
