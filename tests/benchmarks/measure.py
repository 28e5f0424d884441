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
class Result:
    """One benchmark figure: a summary of samples, or a single measured value."""

    name: str
    unit: str
    samples: list[float]
    parameters: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(summary(self.samples))
        data["samples"] = [round(s, 4) for s in self.samples]
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


def print_table(results: list[Result]) -> None:
    header = (
        f"{'benchmark':<46} {'median':>10} {'p95':>10} {'min':>10} {'max':>10} {'unit':<6} ratio"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r.skipped:
            print(f"{r.name:<46} SKIPPED: {r.skipped}")
            continue
        s = summary(r.samples)
        cells = " ".join(f"{_fmt(s[k]):>10}" for k in ("median", "p95", "min", "max"))
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        print(f"{r.name:<46} {cells} {r.unit:<6} {ratio}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def markdown_table(results: list[Result]) -> str:
    """The figures as the markdown table docs/benchmarks.md carries."""
    lines = [
        "| benchmark | median | p95 | min | max | unit | ratio | n |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.name} | skipped: {r.skipped} | | | | | | |")
            continue
        s = summary(r.samples)
        cells = " | ".join(_fmt(s[k]) for k in ("median", "p95", "min", "max"))
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        lines.append(f"| {r.name} | {cells} | {r.unit} | {ratio} | {len(r.samples)} |")
    return "\n".join(lines)
