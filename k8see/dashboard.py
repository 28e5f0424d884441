"""Flower, configured for k8see: its ``/metrics`` behind the same authentication as its pages.

Flower 2.2 serves ``/metrics`` (task counts and runtimes, worker names) to anyone: its
``Metrics`` handler lacks the ``authenticated`` check every page has. ``protect_metrics``
swaps that one route in Flower's URL table for a subclass that has it, before ``k8see
flower`` hands over to Flower's own command, so basic auth or OAuth guard it like the UI.
A Prometheus job that scrapes it sends the basic-auth credentials (the platform chart's
ServiceMonitor scrapes the workers' own metrics, not Flower's); ``/healthcheck`` stays open
for probes and says only ``OK``.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from flower import urls
from flower.views.monitor import Metrics


class AuthenticatedMetrics(Metrics):  # type: ignore[misc]
    """Flower's ``/metrics``, for authenticated users only (as every Flower page)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        await super().get()


def protect_metrics(handlers: list[Any] | None = None) -> None:
    """Route ``/metrics`` in Flower's URL table to ``AuthenticatedMetrics``; idempotent."""
    table = urls.handlers if handlers is None else handlers
    for index, route in enumerate(table):
        if isinstance(route, tuple) and route[0] == r"/metrics":
            table[index] = (r"/metrics", AuthenticatedMetrics, *route[2:])
