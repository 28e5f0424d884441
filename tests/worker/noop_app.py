"""k8see's own app with one stage more: the ``noop`` row below and ``tests.worker.noop_stage``.

Run as ``celery -A tests.worker.noop_app worker -Q noop``; nothing else of k8see changes.
"""

from __future__ import annotations

from k8see import stage_table
from k8see.app import create_app
from k8see.run import Status
from k8see.settings import load_settings
from k8see.stage_table import StageSpec

stage_table.add(
    StageSpec(
        "noop", queue="noop", module="tests.worker.noop_stage", time_limit=lambda _: 2,
        limit_setting="K8SEE_NOOP_SECONDS", running=Status.DEPLOYING, holds_lease=True,
        stopped_by_close=True,
    )
)  # fmt: skip

# Created after the row: its routes come from the table (the queue is created on first use).
app = create_app(load_settings(), name="k8see-noop")
