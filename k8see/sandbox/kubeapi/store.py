"""The object store: every object by resource and name, one resourceVersion counter, events.

Like etcd behind the real server, the store knows nothing about kinds: it keeps JSON objects,
stamps each write with the next resourceVersion, and records an event per write so watches can
resume from a resourceVersion. Semantics (validation, admission, defaults) live in ``api.py``.
"""

from __future__ import annotations

import builtins
import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]

#: How many events a watch can resume from; older resourceVersions answer 410 Gone.
EVENT_HISTORY = 50_000


@dataclass(frozen=True)
class Event:
    """One write: ADDED, MODIFIED or DELETED, with the object before it (for selector moves)."""

    rv: int
    type: str
    key: Key
    obj: Obj
    old: Obj | None


class Store:
    """In-memory objects and their event history, safe to use from many threads."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self._rv = 1000
        self._objects: dict[Key, dict[tuple[str, str], Obj]] = {}
        self._events: list[Event] = []

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store lock across a read-modify-write so it is atomic."""
        with self.cond:
            yield

    @property
    def resource_version(self) -> int:
        with self.cond:
            return self._rv

    def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        with self.cond:
            obj = self._objects.get(key, {}).get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, key: Key, namespace: str | None = None) -> list[Obj]:
        with self.cond:
            items = self._objects.get(key, {})
            return [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(items.items())
                if namespace is None or ns == namespace
            ]

    def owned_by(self, owner_uid: str) -> builtins.list[tuple[Key, Obj]]:
        """Copies of the objects whose ownerReferences name ``owner_uid``, with their kind.

        Scans without copying what does not match: a namespace sweep asks this once per
        object it deletes, and copying every object each time made that quadratic in copies.
        """
        with self.cond:
            return [
                (key, copy.deepcopy(obj))
                for key, items in self._objects.items()
                for obj in items.values()
                if any(
                    r.get("uid") == owner_uid for r in obj["metadata"].get("ownerReferences") or ()
                )
            ]

    def kinds(self) -> builtins.list[Key]:
        with self.cond:
            return [k for k, v in self._objects.items() if v]

    def put(self, key: Key, obj: Obj) -> Obj:
        """Store ``obj`` with the next resourceVersion; return the stored copy."""
        meta = obj["metadata"]
        ident = (meta.get("namespace", ""), meta["name"])
        with self.cond:
            old = self._objects.get(key, {}).get(ident)
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            stored = copy.deepcopy(obj)
            self._objects.setdefault(key, {})[ident] = stored
            self._record(Event(self._rv, "MODIFIED" if old else "ADDED", key, stored, old))
            return copy.deepcopy(stored)

    def remove(self, key: Key, namespace: str, name: str) -> Obj | None:
        with self.cond:
            old = self._objects.get(key, {}).pop((namespace, name), None)
            if old is None:
                return None
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._record(Event(self._rv, "DELETED", key, gone, old))
            return copy.deepcopy(gone)

    def _record(self, event: Event) -> None:
        self._events.append(event)
        if len(self._events) > 2 * EVENT_HISTORY:
            del self._events[:EVENT_HISTORY]
        self.cond.notify_all()

    def events_since(self, rv: int) -> builtins.list[Event] | None:
        """Events after ``rv``, or None when ``rv`` is older than the kept history.

        Every write takes the next resourceVersion and records one event, so events are
        consecutive and the start is found by arithmetic, not by a scan.
        """
        with self.cond:
            if rv >= self._rv:
                return []
            if not self._events or rv < self._events[0].rv - 1:
                return None
            return self._events[rv - self._events[0].rv + 1 :]

    def wait(self, *, after_rv: int, timeout: float) -> None:
        """Block until something newer than ``after_rv`` is written or ``timeout`` passes."""
        with self.cond:
            if self._rv <= after_rv:
                self.cond.wait(timeout)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def dump(self) -> dict[str, Any]:
        with self.cond:
            return {
                "resourceVersion": self._rv,
                "objects": [
                    {"group": g, "plural": p, "object": obj}
                    for (g, p), items in self._objects.items()
                    for obj in items.values()
                ],
            }

    def load(self, data: dict[str, Any]) -> None:
        with self.cond:
            self._rv = int(data.get("resourceVersion", self._rv))
            for item in data.get("objects", []):
                obj = item["object"]
                meta = obj["metadata"]
                key = (item["group"], item["plural"])
                self._objects.setdefault(key, {})[(meta.get("namespace", ""), meta["name"])] = obj
