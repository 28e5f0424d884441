"""Build times of examples/hello with ``BuildahBuilder`` alone (no pipeline, no Celery).

Two platforms (linux/amd64 + linux/arm64, the arm64 RUN under qemu), pushed under one tag to
a local registry holding the busybox mirror, in a trusted scope (a PR of the repository
itself: the registry cache is read and written, as in production). Per run, each in its own
image repository so the registry cache starts empty:

- cold: a new storage dir (base image pulled, every step run), registry cache on (so its
  pushes are included: what a first build pays);
- cold without registry cache: the same, cache off;
- warm: the cold build's storage again, nothing changed, without and with the registry
  cache (with it, every step is a hit and nothing is pushed to the cache);
- warm, page changed: the served page changed (the ``COPY`` step and the ones after it
  run), without and with the registry cache (with it, every step's cache image is pushed,
  hits included, as buildah 1.28 does);
- fresh worker with registry cache: a new storage dir, the registry cache filled by the
  cold build: ``ARG`` anchors and then every step pulled instead of run.

Ratios are to the cold median of the same cache setting. The "Using cache" lines of the
fresh builds are recorded as ``extra``. One caveat: containers/image keeps a blob-info
cache per user (/var/lib/containers/cache for root) that a separate storage dir does not
reset, so the fresh-worker build here knows which blobs the registry has; a new pod would
not.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

from k8see.integrations.buildah import BuildahBuilder, write_registries_conf
from k8see.integrations.buildstorage import BuildScope
from k8see_sandbox.mirror import push_mirror
from tests.benchmarks.measure import Baseline, Result
from tests.fixtures.images import HELLO_DIR, MIRROR_DIR, PLATFORMS, LocalRegistry

CACHE = "{image}/cache"
SCOPE = BuildScope.for_pull("bench/hello", 1, fork=False)


def _build(
    registry: LocalRegistry,
    conf: Path,
    storage: Path,
    repository: str,
    cache: str,
    context: Path = HELLO_DIR,
) -> tuple[float, list[str]]:
    builder = BuildahBuilder(
        storage_dir=storage,
        registries_conf=conf,
        insecure_registries=[registry.host],
        cache_repository=cache,
        scope=SCOPE,
        storage_max_idle_seconds=72 * 3600,
    )
    lines: list[str] = []
    started = time.monotonic()
    builder.build_and_push(
        context_dir=context,
        dockerfile=context / "Dockerfile",
        image=f"{registry.host}/{repository}",
        tags=["pr-1"],
        platforms=PLATFORMS,
        build_args={},
        timeout_seconds=900,
        should_stop=lambda: False,
        on_line=lines.append,
    )
    return time.monotonic() - started, lines


def _reused(lines: list[str]) -> tuple[int, int]:
    """(steps that used a cached image, steps in all) of one build's output."""
    steps = sum(
        bool(re.search(r"^\[linux/[^\]]+\] (\[[^\]]*\] )?STEP \d+/\d+: (?!FROM)", x)) for x in lines
    )
    return sum(x.startswith("[linux/") and " --> Using cache " in x for x in lines), steps


def _changed(base: Path, name: str, i: int) -> Path:
    """A copy of examples/hello whose served page differs from the original's."""
    context = base / name
    if not context.exists():
        shutil.copytree(HELLO_DIR, context)
    page = context / "www" / "index.html"
    page.write_text((HELLO_DIR / "www" / "index.html").read_text() + f"<!-- run {i} -->\n")
    return context


def build_times(*, runs: int = 3) -> list[Result]:
    """Cold, warm, warm-changed and fresh-worker builds of examples/hello."""
    names = {
        "cold": "build hello: cold (new storage, registry cache on)",
        "cold_plain": "build hello: cold (new storage, registry cache off)",
        "warm_plain": "build hello: warm (same storage, registry cache off)",
        "warm": "build hello: warm (same storage, registry cache on)",
        "changed_plain": "build hello: warm, page changed (registry cache off)",
        "changed": "build hello: warm, page changed (registry cache on)",
        "fresh": "build hello: fresh worker with registry cache",
    }
    samples: dict[str, list[float]] = {key: [] for key in names}
    reused: list[str] = []
    with tempfile.TemporaryDirectory(prefix="k8see-bench-build-") as tmp:
        base = Path(tmp)
        registry = LocalRegistry(workdir=base / "registry")
        registry.workdir.mkdir()
        registry.start()
        try:
            client = registry.client()
            push_mirror(client, mirror_dir=MIRROR_DIR)
            client.close()
            conf = write_registries_conf(
                base / "registries.conf",
                mirrors={"docker.io": registry.host},
                insecure=[registry.host],
            )
            for i in range(runs):
                cold, plain, fresh = (base / f"{name}-{i}" for name in ("cold", "plain", "fresh"))
                repo, plain_repo = f"bench/hello{i}", f"bench/plain{i}"
                samples["cold"].append(_build(registry, conf, cold, repo, CACHE)[0])
                samples["cold_plain"].append(_build(registry, conf, plain, plain_repo, "")[0])
                samples["warm_plain"].append(_build(registry, conf, plain, plain_repo, "")[0])
                samples["warm"].append(_build(registry, conf, cold, repo, CACHE)[0])
                context = _changed(base, "plain-src", i)
                seconds = _build(registry, conf, plain, plain_repo, "", context)[0]
                samples["changed_plain"].append(seconds)
                context = _changed(base, "cached-src", i)
                samples["changed"].append(_build(registry, conf, cold, repo, CACHE, context)[0])
                seconds, lines = _build(registry, conf, fresh, repo, CACHE)
                samples["fresh"].append(seconds)
                used, steps = _reused(lines)
                reused.append(f"{used}/{steps}")
                for storage in (cold, plain, fresh):
                    shutil.rmtree(storage, ignore_errors=True)
        finally:
            registry.stop()
    params = {"platforms": list(PLATFORMS), "runs": runs, "cache_repository": CACHE}
    results = [Result(names[key], "s", samples[key], dict(params)) for key in names]
    cold_base = Baseline(names["cold"], samples["cold"], dict(params))
    plain_base = Baseline(names["cold_plain"], samples["cold_plain"], dict(params))
    for result, key in zip(results, names, strict=True):
        if key in ("warm", "changed", "fresh"):
            result.baseline = cold_base
        elif key in ("warm_plain", "changed_plain"):
            result.baseline = plain_base
    results[-1].extra = {"steps_from_cache_per_run": reused}
    return results
