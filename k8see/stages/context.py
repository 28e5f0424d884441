"""What a stage receives besides the ``Run``: settings, a logger and the run's controls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from k8see.record import EnvironmentRecord
from k8see.settings import PlatformSettings


def _never() -> bool:
    return False


def _ignore(_line: str) -> None:
    return None


@dataclass
class StageContext:
    """Everything a stage may use, passed in by the task layer.

    Attributes:
        settings: The platform settings, read once at process start.
        log: A logger bound to the run (repo, PR, generation, stage).
        workdir: A private directory for this run's files (sources, build state, reports).
        should_stop: Returns True once the run is superseded or closed; long steps poll it
            and stop their subprocess (a superseded build is cancelled).
        renew_lease: Called by long cluster writes to keep the per-PR lease alive; raises
            ``Superseded`` if the lease was lost (fencing).
        record_log: Appends a line of tool output to the run's log (kept in Redis, redacted).
        record: The environment record as the stage started (``k8see.record``), read-only:
            stages never write it; the task layer puts ``record_changes`` on it.
    """

    settings: PlatformSettings
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    workdir: Path
    should_stop: Callable[[], bool] = _never
    renew_lease: Callable[[], None] = lambda: None
    record_log: Callable[[str], None] = _ignore
    record: EnvironmentRecord = field(default_factory=EnvironmentRecord)
