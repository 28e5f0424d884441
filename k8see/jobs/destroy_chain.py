"""The destroy a job sends: the PR's destroy chain, the same one a close event sends."""

from __future__ import annotations

import redis

from k8see import metrics
from k8see.client import enqueue
from k8see.events import Decision
from k8see.run import Action
from k8see.settings import PlatformSettings

__all__ = ["destroy_now"]


def destroy_now(
    *, settings: PlatformSettings, client: redis.Redis, repo: str, pr: int, reason: str
) -> str:
    """Send the PR's destroy chain the way a close event does; returns the run id.

    Through the enqueue client, as a close event: the generation is bumped, the close mark
    set and the record queued; the trigger is ``maintenance:<reason>``.
    """
    decision = Decision(
        action=Action.DESTROY,
        repo=repo,
        pr=pr,
        sha="",
        ref="",
        reason=f"k8see maintenance: {reason}.",
        merged=reason == "merged",
    )
    sent = enqueue(decision, settings=settings, trigger=f"maintenance:{reason}", client=client)
    metrics.cleanup_action(reason)
    return sent.run_id
