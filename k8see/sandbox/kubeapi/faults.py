"""Fault injection for retry tests: a fraction or a fixed sequence of 500/429 answers, latency.

Faults apply to API requests (not to /version, /healthz or OpenAPI), so a client's discovery
still works while its resource calls fail. 429 answers carry ``Retry-After: 1`` as the real
server's priority-and-fairness rejections do.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from k8see.sandbox.kubeapi.apierrors import ApiError

_REASONS = {
    500: ("InternalError", "Internal error occurred: injected by the k8see sandbox"),
    429: (
        "TooManyRequests",
        "the server has received too many requests and has asked us to try again later "
        "(injected by the k8see sandbox)",
    ),
    503: (
        "ServiceUnavailable",
        "the server is currently unable to handle the request (injected by the k8see sandbox)",
    ),
}


DEFAULT_STATUSES = (500, 429)


@dataclass
class Faults:
    """Knobs a test turns; ``injected`` counts the faults answered so far."""

    error_rate: float = 0.0
    statuses: tuple[int, ...] = DEFAULT_STATUSES
    latency_seconds: float = 0.0
    sequence: list[int | None] = field(default_factory=list)
    injected: int = 0
    injected_by_status: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        """Every knob back to its default, so one test's faults never leak into the next."""
        with self._lock:
            self.error_rate, self.latency_seconds, self.sequence = 0.0, 0.0, []
            self.statuses = DEFAULT_STATUSES
            self.injected, self.injected_by_status = 0, {}

    def check(self) -> None:
        """Sleep the latency, then raise the next injected fault, if any."""
        if self.latency_seconds > 0:
            time.sleep(self.latency_seconds)
        with self._lock:
            status: int | None = None
            if self.sequence:
                status = self.sequence.pop(0)
            elif self.error_rate > 0 and random.random() < self.error_rate:
                status = random.choice(self.statuses)
            if status is None:
                return
            self.injected += 1
            self.injected_by_status[status] = self.injected_by_status.get(status, 0) + 1
        reason, message = _REASONS.get(status, ("InternalError", f"injected status {status}"))
        headers = {"Retry-After": "1"} if status == 429 else {}
        details = {"retryAfterSeconds": 1} if status == 429 else {}
        raise ApiError(
            code=status, reason=reason, message=message, details=details, headers=headers
        )
