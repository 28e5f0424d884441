"""Benchmarks for ``make bench``: real Redis, real Celery worker processes, real tools, the
sandbox Kubernetes and GitHub servers. Never run by pytest, never asserted on: the figures go
to the printed table, ``bench/results.json`` and ``docs/benchmarks.md``.
"""
