"""The registry build cache's workaround for buildah 1.28: anchors for ``ARG`` steps.

buildah's ``--cache-to``/``--cache-from`` push each step's image to a cache repository under
a key of the step and its parent, and a build in an empty storage pulls them instead of
running the steps. In buildah 1.28 the chain breaks at the first ``ARG`` step: buildah runs
an ``ARG`` before looking it up (its history needs the argument values), and after running
it 1.28 looks only in local storage (a remote lookup there is what buildah PR #4326 added,
October 2022). Once one step missed, buildah stops looking, so every later step runs. For
``FROM busybox`` + ``ARG TARGETARCH`` + ``RUN`` + ``COPY`` (examples/hello) that is all of
them (measured: ``--log-level debug`` shows no request for the cache repository at all;
without the ``ARG`` line every step is pulled).

The fix here: after a build, each ``ARG`` step's image is also pushed to the cache
repository under an *anchor* tag that the next build can name before it starts
(``k8see-arg-<platform>-<hash of the Dockerfile up to that ARG>``); a build pulls its
anchors first, so the ``ARG`` steps hit in local storage and buildah's own remote lookups
carry on from there. An anchor of another Dockerfile has another name; a stale one (a
changed base image) is pulled but not matched, and the step simply runs.

Only pure functions here: the builder runs buildah.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = [
    "ANCHOR_PREFIX",
    "arg_anchor_tags",
    "arg_step_images",
    "cache_push_failed",
    "cache_repository_for",
]

#: Tags of the cache repository that k8see writes (buildah's own are 64 hex digits).
ANCHOR_PREFIX = "k8see-arg-"
#: buildah's line for a step, optionally with a ``[platform]`` or ``[stage]`` prefix.
STEP_LINE = re.compile(r"^(?:\[[^\]]*\] )?STEP \d+/\d+: (\S+)")
#: buildah's line naming the image a step produced (short id).
IMAGE_LINE = re.compile(r"^(?:\[[^\]]*\] )?--> ([0-9a-f]{11,64})$")
#: What buildah 1.28 prints when ``--cache-to`` could not push (the build fails with it).
CACHE_PUSH_FAILED = "failed pushing cache to"


def cache_repository_for(template: str, image: str) -> str:
    """``template`` with ``{image}`` replaced by the image repository; empty: no cache."""
    return template.replace("{image}", image) if template else ""


def arg_anchor_tags(dockerfile: str, platform: str) -> list[str]:
    """The anchor tag of each ``ARG`` step of ``dockerfile``, in build order.

    The hash covers the instructions up to and including that ``ARG`` (comments, blank
    lines and line continuations normalised away), so anchors of other Dockerfiles, or of
    this one before a change above the ``ARG``, never match. ``ARG`` before the first
    ``FROM`` is not a step and gets none.
    """
    slug = platform.replace("/", "-")
    tags: list[str] = []
    seen: list[str] = []
    in_stage = False
    for instruction in _instructions(dockerfile):
        seen.append(instruction)
        keyword = instruction.split(None, 1)[0].upper()
        in_stage = in_stage or keyword == "FROM"
        if keyword == "ARG" and in_stage:
            digest = hashlib.sha256("\n".join(seen).encode()).hexdigest()[:24]
            tags.append(f"{ANCHOR_PREFIX}{slug}-{digest}")
    return tags


def arg_step_images(lines: Iterable[str]) -> list[str]:
    """The (short) image id each ``ARG`` step produced, from buildah's build output."""
    images: list[str] = []
    waiting = False
    for line in lines:
        step = STEP_LINE.match(line)
        if step:
            waiting = step.group(1).upper() == "ARG"
            continue
        image = IMAGE_LINE.match(line)
        if image and waiting:
            images.append(image.group(1))
            waiting = False
    return images


def cache_push_failed(lines: Iterable[str]) -> bool:
    """Whether a failed ``buildah build`` failed because ``--cache-to`` could not push."""
    return any(CACHE_PUSH_FAILED in line for line in lines)


def _instructions(dockerfile: str) -> list[str]:
    """Logical instructions: continuations joined, comments and blank lines dropped."""
    escape = "\\"
    first = dockerfile.lstrip().splitlines()[:1]
    if first and re.match(r"#\s*escape\s*=\s*`", first[0]):
        escape = "`"
    out: list[str] = []
    current = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith(escape):
            current += line[:-1].strip() + " "
            continue
        out.append((current + line).strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out
