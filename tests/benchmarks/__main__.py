"""``make bench``: every benchmark, a table on stdout, ``bench/results.json``.

Usage: ``python -m tests.benchmarks [--only NAME ...] [--fanout-prs N]
[--cleanup-environments N] [--quick]``. Every row shows its baseline, measured in the same
run, where it has one (docs/benchmarks.md says which and why not).
Names: enqueue, frontdoor (signed webhooks through ``k8see api`` beside enqueues straight to
Redis), throughput, build (examples/hello cold, warm, fresh worker with the registry
cache), kubeproxy (what helm's retrying API proxy costs), pipeline (overhead, time to URL,
storm, fan-out), cleanup.
The drills' figures, when ``make test`` wrote them (bench/drills.json), are included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.benchmarks.measure import Result, TaskEvents, markdown_table, print_table, skipped

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results.json"
DRILLS = ROOT / "bench" / "drills.json"
GROUPS = ("enqueue", "frontdoor", "throughput", "build", "kubeproxy", "pipeline", "cleanup")
#: Parts of a group that can run alone (not by default: their group runs them).
PARTS = ("github",)


def _machine() -> dict[str, object]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": host.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _pipeline(args: argparse.Namespace, workdir: Path) -> list[Result]:
    from k8see.app import create_app
    from k8see.settings import load_settings
    from tests.benchmarks import bench_pipeline as bp
    from tests.e2e.harness import running_platform

    with running_platform(workdir / "pipeline") as h:
        app = create_app(load_settings(redis={"url": h.platform.redis_url}))
        with TaskEvents(app) as events:
            b = bp.Bench(h, events)
            b.wait_workers()
            results = bp.time_to_url(
                b, cold_runs=1 if args.quick else 2, warm_runs=2 if args.quick else 3
            )
            warm = next(r for r in results if r.name.startswith("time to URL: warm rebuild"))
            results += bp.orchestration_overhead(b, runs=2 if args.quick else 5)
            bare = bp.bare_handoffs(h.platform.redis_url, workdir, chains=2 if args.quick else 5)
            for r in results:
                if r.name.startswith("hand-off latency"):
                    r.baseline = bare
            results += bp.github_calls(b, cycles=1 if args.quick else 2)
            results += bp.push_storm(b)
            per_pr = statistics.median(warm.samples)
            results += bp.fan_out(b, prs=args.fanout_prs, per_pr_seconds=per_pr)
    return results


def _github(args: argparse.Namespace, workdir: Path) -> list[Result]:
    """The GitHub-calls part of the pipeline group alone, on its own platform."""
    from k8see.app import create_app
    from k8see.settings import load_settings
    from tests.benchmarks import bench_pipeline as bp
    from tests.e2e.harness import running_platform

    with running_platform(workdir / "github") as h:
        app = create_app(load_settings(redis={"url": h.platform.redis_url}))
        with TaskEvents(app) as events:
            b = bp.Bench(h, events)
            b.wait_workers()
            return bp.github_calls(b, cycles=1 if args.quick else 2)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks")
    # ``github``: only the pipeline group's GitHub calls per event, on a platform of its own.
    parser.add_argument("--only", nargs="*", choices=GROUPS + PARTS, default=list(GROUPS))
    # The 100 PRs: about 450 s of the ~12.5-minute run on a quiet 2-core machine.
    parser.add_argument("--fanout-prs", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for trying)")
    # 1,000 by default (about a minute); 10,000 is the scale, 30 % of them closed.
    parser.add_argument("--cleanup-environments", type=int, default=1000)
    args = parser.parse_args()
    from tests.benchmarks import bench_cleanup, bench_client

    machine = _machine()
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="k8see-bench-") as tmp:
        workdir = Path(tmp)
        for group in args.only:
            t0 = time.monotonic()
            print(f"== {group} ...", flush=True)
            try:
                if group == "enqueue":
                    results += bench_client.enqueue_cold_start(runs=5 if args.quick else 20)
                elif group == "frontdoor":
                    from tests.benchmarks import bench_front_doors

                    results += bench_front_doors.front_door(deliveries=100 if args.quick else 300)
                elif group == "throughput":
                    results += bench_client.throughput(
                        pipelines=30 if args.quick else 100, repeats=1 if args.quick else 3
                    )
                elif group == "build":
                    from tests.benchmarks import bench_build

                    results += bench_build.build_times(runs=1 if args.quick else 3)
                elif group == "kubeproxy":
                    from tests.benchmarks import bench_kubeproxy

                    results += bench_kubeproxy.proxy_overhead(
                        requests=50 if args.quick else 200, upgrades=2 if args.quick else 5
                    )
                elif group == "pipeline":
                    results += _pipeline(args, workdir)
                elif group == "github":
                    results += _github(args, workdir)
                elif group == "cleanup":
                    envs = args.cleanup_environments
                    results += bench_cleanup.cleanup_at_scale(
                        workdir / "cleanup", environments=envs, closed=envs * 3 // 10
                    )
            except Exception as exc:  # noqa: BLE001 - one group's failure must not lose the others
                traceback.print_exc()
                results.append(skipped(f"{group}: failed", f"{type(exc).__name__}: {exc}"))
            print(f"   {group} took {time.monotonic() - t0:.0f}s", flush=True)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["bench_seconds"] = round(time.monotonic() - started, 1)
    print()
    print_table(results)
    drills = json.loads(DRILLS.read_text()) if DRILLS.exists() else {}
    if drills:
        print("\nFault drills (from the last `make test`, bench/drills.json):")
        for name, figures in sorted(drills.items()):
            print(f"  {name}: {json.dumps(figures, sort_keys=True)}")
    print(f"\nmachine: {json.dumps(machine)}")
    OUT.parent.mkdir(exist_ok=True)
    payload = {"machine": machine, "benchmarks": [r.to_dict() for r in results], "drills": drills}
    OUT.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    (OUT.parent / "results.md").write_text(markdown_table(results) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} and bench/results.md (the table for docs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
