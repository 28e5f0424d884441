"""The API's Prometheus metrics (``k8see_api_*``), served on its own ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["ENQUEUES", "WEBHOOKS", "WEBHOOK_SECONDS"]

WEBHOOKS = Counter(
    "k8see_api_webhooks",
    "GitHub webhook deliveries by event and outcome (queued, duplicate, ignored, refused, "
    "unavailable).",
    ["event", "outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "k8see_api_webhook_seconds",
    "Time from a webhook's request to its answer.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ENQUEUES = Counter(
    "k8see_api_enqueues",
    "Workflow enqueues through POST /v1/enqueue by outcome (queued, duplicate, skipped, "
    "refused, unavailable).",
    ["outcome"],
)
