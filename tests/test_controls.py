"""``controls.tolerant``: a lease renewal that Redis does not answer skips its turn, loudly once.

A renewal runs on every helm poll (about every 2 s); during a 30-second Redis stall the old
code logged fifteen identical warnings. Now an outage is one warning, and its end one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis

from k8see import controls
from k8see.errors import Superseded


def renewal(outcomes: list[BaseException | None]) -> Callable[[], None]:
    def renew() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    return renew


def test_an_outage_is_one_warning_and_its_end_one_line(caplog: pytest.LogCaptureFixture) -> None:
    rlog = logging.LoggerAdapter(logging.getLogger("k8see.test.controls"))
    stalled = redis.exceptions.TimeoutError("Timeout reading from socket")
    outcomes: list[BaseException | None] = [None, stalled, stalled, stalled, None, None, stalled]
    renew = controls.tolerant(renewal(outcomes), rlog, "the lease renewal")
    with caplog.at_level(logging.INFO, logger="k8see.test.controls"):
        for _ in range(7):
            renew()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Redis did not answer the lease renewal (Timeout reading from socket); "
                    "going on."),
        ("INFO", "Redis answered the lease renewal again, after 3 skipped."),
        # A second outage warns again
        ("WARNING", "Redis did not answer the lease renewal (Timeout reading from socket); "
                    "going on."),
    ]  # fmt: skip


def test_a_taken_lease_still_stops_the_stage() -> None:
    rlog = logging.LoggerAdapter(logging.getLogger("k8see.test.controls"))
    taken = Superseded("the lease is held by run b")
    renew = controls.tolerant(renewal([taken]), rlog, "the lease renewal")
    with pytest.raises(Superseded):
        renew()
