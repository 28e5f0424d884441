"""Figures and the clocks behind them: summaries, Celery task events, waiting on records."""

from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Baseline:
    """What a figure is judged against, measured in the same run: bare Celery, the tools run
    back to back, the same call made directly. ``name`` says what was measured."""

    name: str
    samples: list[float]
    parameters: dict[str, Any] = field(default_factory=dict)

    def median(self) -> float | None:
        return summary(self.samples)["median"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(summary(self.samples))
        data["samples"] = [round(s, 4) for s in self.samples]
        return data


@dataclass
class Result:
    """One benchmark figure: a summary of samples, or a single measured value.

    ``baseline``, when there is one, was measured in the same run; the ratio is then this
    figure's median over the baseline's median unless ``ratio`` is set explicitly.
    """

    name: str
    unit: str
    samples: list[float]
    parameters: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""
    baseline: Baseline | None = None

    def effective_ratio(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        if self.baseline is None or not self.samples:
            return None
        base = self.baseline.median()
        if not base:
            return None
        return statistics.median(self.samples) / base

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(summary(self.samples))
        data["samples"] = [round(s, 4) for s in self.samples]
        data["baseline"] = self.baseline.to_dict() if self.baseline is not None else None
        ratio = self.effective_ratio()
        data["ratio"] = round(ratio, 4) if ratio is not None else None
        return data


def summary(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"median": None, "p95": None, "min": None, "max": None}
    ordered = sorted(samples)
    rank = max(0, math.ceil(0.95 * len(ordered)) - 1)  # nearest-rank p95
    return {
        "median": round(statistics.median(ordered), 4),
        "p95": round(ordered[rank], 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
    }


def skipped(name: str, reason: str) -> Result:
    return Result(name=name, unit="", samples=[], skipped=reason)


def wait_until(predicate: Callable[[], bool], *, timeout: float, poll: float = 0.05) -> float:
    """Poll until ``predicate`` holds; returns the monotonic time it was first seen true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError(f"not reached within {timeout}s")


class TaskEvents:
    """Celery task events (sent, received, started, succeeded) captured in a thread.

    Workers send them because the app sets ``worker_send_task_events``, and the enqueuing side
    because of ``task_send_sent_event``; every timestamp is the sender's ``time.time()`` on
    this one machine, so they compare.
    """

    KINDS = ("task-sent", "task-received", "task-started", "task-succeeded", "task-failed")

    def __init__(self, app: Any):
        self.app = app
        self.tasks: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._ready = threading.Event()

    def __enter__(self) -> TaskEvents:
        self._thread.start()
        self._ready.wait(10)
        time.sleep(0.5)  # the event queue is bound once the consumer declared it
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=5)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind not in self.KINDS:
            return
        with self._lock:
            task = self.tasks.setdefault(event["uuid"], {"uuid": event["uuid"]})
            task[kind] = float(event["timestamp"])
            if event.get("name"):
                task["name"] = event["name"]

    def _capture(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Tasks started within [start, end] (wall-clock seconds), by start time."""
        with self._lock:
            found = [
                dict(t)
                for t in self.tasks.values()
                if start <= t.get("task-started", -1) <= end and "name" in t
            ]
        return sorted(found, key=lambda t: t["task-started"])

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self.tasks.values()]


def handoffs(tasks: list[dict[str, Any]]) -> dict[str, float]:
    """For consecutive tasks of one chain: when the next one started minus when the previous
    stage's worker sent it (both events carry the sender's clock), in seconds.

    The previous task's ``task-succeeded`` is not used: Celery sends a chain's next task
    before it emits that event, so the difference can be negative.
    """
    out: dict[str, float] = {}
    for prev, nxt in itertools.pairwise(tasks):
        if "task-sent" in nxt and "task-started" in nxt:
            key = f"{prev['name'].split('.')[-1]}->{nxt['name'].split('.')[-1]}"
            out[key] = nxt["task-started"] - nxt["task-sent"]
    return out


def _row(r: Result) -> list[str]:
    """benchmark, median, p95, baseline, baseline median, ratio, n."""
    label = f"{r.name} ({r.unit})" if r.unit else r.name
    if r.skipped:
        reason = r.skipped if len(r.skipped) <= 300 else r.skipped[:300] + " ..."
        return [label, "skipped", "", reason.replace("|", "/"), "", "", ""]
    s = summary(r.samples)
    ratio = r.effective_ratio()
    base = r.baseline
    return [
        label,
        _fmt(s["median"]),
        _fmt(s["p95"]),
        base.name if base is not None else "-",
        _fmt(base.median()) if base is not None else "-",
        f"{ratio:.2f}" if ratio is not None else "-",
        str(len(r.samples)) + (f"/{len(base.samples)}" if base is not None else ""),
    ]


def print_table(results: list[Result]) -> None:
    header = (
        f"{'benchmark':<58} {'median':>9} {'p95':>9}  {'base median':>11} {'ratio':>6} {'n':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        name, median, p95, base, base_median, ratio, n = _row(r)
        if r.skipped:
            print(f"{name:<58} SKIPPED: {r.skipped}")
            continue
        print(f"{name:<58} {median:>9} {p95:>9}  {base_median:>11} {ratio:>6} {n:>7}")
        if r.baseline is not None:
            print(f"{'':<4}baseline: {base}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def markdown_table(results: list[Result]) -> str:
    """The figures as the markdown table docs/benchmarks.md carries (n: figure/baseline)."""
    lines = [
        "| benchmark | median | p95 | baseline | baseline median | ratio | n |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append("| " + " | ".join(_row(r)) + " |")
    return "\n".join(lines)
