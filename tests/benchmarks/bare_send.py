"""The enqueue cold start's baseline: a bare Celery ``send_task`` from a fresh process.

Run as a script (``python tests/benchmarks/bare_send.py REDIS_URL QUEUE``): it imports Celery
alone, nothing of k8see, and sends one message with a payload of the same size class as a
k8see run (a small JSON dict) to ``QUEUE`` on the same Redis.
"""

from __future__ import annotations

import sys

from celery import Celery


def main() -> int:
    url, queue = sys.argv[1], sys.argv[2]
    app = Celery("bare-send", broker=url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    payload = {"repo": "k8see-demo/bench", "pr": 1, "action": "opened", "sha": "0" * 40}
    app.send_task("bare.noop", args=[payload], queue=queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
