"""The registry build cache on buildah 1.28: anchors for ``ARG`` steps, pushes only if new.

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

Pushing only what is new: 1.28's ``--cache-to`` pushes every step's image on every build,
cache hits included. ``inputs_key`` names what a build's steps depend on (platform, build
arguments, the Dockerfile and the context's files); a storage that already pushed a build of
that key builds without ``--cache-to``, every step a local hit. ``steps_run`` reads the
output to check that: should a step have run all the same, the builder pushes after all.

The builder runs buildah; the anchor pulls and pushes here run through its ``Tool``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from k8see.integrations.process import ToolResult

__all__ = [
    "ANCHOR_PREFIX",
    "Tool",
    "arg_anchor_tags",
    "arg_step_images",
    "cache_push_failed",
    "cache_repository_for",
    "inputs_key",
    "pull_anchors",
    "push_anchors",
    "steps_run",
]

log = logging.getLogger(__name__)

#: Tags of the cache repository that k8see writes (buildah's own are 64 hex digits).
ANCHOR_PREFIX = "k8see-arg-"
#: buildah's line for a step, optionally with a ``[platform]`` or ``[stage]`` prefix.
STEP_LINE = re.compile(r"^(?:\[[^\]]*\] )?STEP \d+/\d+: (\S+)")
#: buildah's line naming the image a step produced (short id).
IMAGE_LINE = re.compile(r"^(?:\[[^\]]*\] )?--> ([0-9a-f]{11,64})$")
#: buildah's line for a step that reused an image, from local storage or the cache repository.
USING_CACHE_LINE = re.compile(r"^(?:\[[^\]]*\] )?--> Using cache [0-9a-f]{64}$")
#: What buildah 1.28 prints when ``--cache-to`` could not push (the build fails with it).
CACHE_PUSH_FAILED = "failed pushing cache to"
#: One quick retry for anchor pulls and pushes (buildah 1.28 reads ``--retry 0`` as its
#: default of 3 retries, 2 s apart).
ANCHOR_RETRY = ("--retry", "1", "--retry-delay", "10ms")


class Tool(Protocol):
    """Runs one buildah subcommand within the build's deadline (the builder's ``tool``).

    ``keep`` collects the output lines; ``echo`` (default) also sends them to the build log.
    """

    def __call__(
        self, args: list[str], what: str, *, keep: list[str] | None = None, echo: bool = True
    ) -> ToolResult: ...


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


def pull_anchors(
    tool: Tool, *, dockerfile: str, plat: str, cache: str, tls: Sequence[str], pull: bool = True
) -> dict[str, str]:
    """Pull the ``ARG`` steps' anchors into local storage: tag → image id ("" if absent).

    Stops at the first absent one: buildah stops looking for cache at that step anyway.
    One quick retry only: an anchor saves time, so an unreachable registry must not cost
    more than it saves. ``pull=False``: the tags only, none pulled.
    """
    anchors = dict.fromkeys(arg_anchor_tags(dockerfile, plat), "")
    for tag in anchors if pull else ():
        argv = ["pull", "--quiet", *ANCHOR_RETRY, *tls, f"docker://{cache}:{tag}"]
        result = tool(argv, "cache", echo=False)
        if not result.ok or not result.tail:
            break
        anchors[tag] = result.tail[-1].strip()
    return anchors


def push_anchors(
    tool: Tool, *, anchors: dict[str, str], images: list[str], cache: str, tls: Sequence[str]
) -> None:
    """Push each ``ARG`` step's image under its anchor, unless the anchor is it already."""
    if len(images) != len(anchors):  # e.g. a skipped stage; the cache then ends there
        log.info(
            "The build ran %d ARG steps where its Dockerfile has %d; no cache anchors.",
            len(images),
            len(anchors),
        )
        return
    for (tag, pulled), image_id in zip(anchors.items(), images, strict=True):
        if pulled.startswith(image_id):
            continue
        argv = ["push", "--quiet", *ANCHOR_RETRY, *tls, image_id, f"docker://{cache}:{tag}"]
        result = tool(argv, "cache", echo=False)
        if not result.ok:
            log.warning(
                "Could not push the cache anchor %s:%s: %s", cache, tag, result.tail_text(1)
            )


def steps_run(lines: Iterable[str]) -> list[str]:
    """The instructions of the steps a build ran rather than took from a cache, in order.

    ``FROM`` is not a step here (pulling a base image is not a cached step). A step counts
    as reused when buildah printed "Using cache" for it (after a pull from the cache
    repository too). The ``RUN`` steps' own output is read along: a step that prints such a
    line fools only this decision, for its own scope's cache.
    """
    ran: list[str] = []
    pending = ""
    for line in lines:
        step = STEP_LINE.match(line)
        if step:
            if pending:
                ran.append(pending)
            keyword = step.group(1).upper()
            pending = "" if keyword == "FROM" else keyword
        elif pending and USING_CACHE_LINE.match(line):
            pending = ""
    if pending:
        ran.append(pending)
    return ran


def inputs_key(
    platform: str, build_args: Mapping[str, str], dockerfile: Path, context_dir: Path, cache: str
) -> str:
    """A digest of what a build's cache keys depend on; "" when the context cannot be read.

    Covers the platform, the build arguments, the Dockerfile's text, every file of the
    context (path, mode, content; symlinks by target; ``.git`` left out) and the cache
    repository, but not where the context is: a worker keeps each commit in a directory of
    its own. Files ``.dockerignore`` excludes count too (a change there only costs a push).
    """
    digest = hashlib.sha256()
    for part in (platform, cache, *sorted(f"{k}={v}" for k, v in build_args.items())):
        digest.update(part.encode() + b"\0")
    try:
        digest.update(dockerfile.read_bytes() + b"\0")
        for path in _context_files(context_dir):
            info = path.lstat()
            name = str(path.relative_to(context_dir))
            digest.update(f"{name}\0{info.st_mode:o}\0".encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def _context_files(context_dir: Path) -> list[Path]:
    """Every entry under ``context_dir`` but ``.git``, in a stable order (links not followed)."""
    out: list[Path] = []
    for parent, dirs, files in os.walk(context_dir):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        out += [Path(parent, name) for name in sorted([*dirs, *files])]
    return out


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
