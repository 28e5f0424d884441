"""Benchmarks for ``make bench``: real Redis, real Celery worker processes, real tools, the
local Kubernetes cluster and the GitHub stand-in; each figure beside its baseline (bare
Celery, the direct call, the cold case) measured in the same run. Never run by pytest, never
asserted on: the figures go to the printed table, ``bench/results.json`` and
``docs/benchmarks.md``.
"""
