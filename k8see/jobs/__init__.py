"""The beat jobs (beat → ``maintenance`` queue) and the preserve commands: one module per job.

- ``cleanup`` (``k8see.cleanup``, every ``cleanup.interval_seconds``): destroys environments
  whose PR is closed, merged or gone, or that were not deployed for ``cleanup.ttl_hours``,
  through the same destroy chain a close event uses (``destroy_chain``); marks records whose
  namespace vanished as destroyed. The same task then runs ``registry_gc``.
- ``registry_gc`` (part of ``k8see.cleanup``, under the ``registry-gc`` lock): deletes the image
  tags of PRs that are gone, then has ``cache_prune`` prune the build caches by age.
- ``preserve_expiry`` (``k8see.preserve_expiry``, every ``cleanup.expiry_interval_seconds``):
  warns before a preserve ends and, at the end, destroys at once when the PR is closed.
- ``watchdog`` (``k8see.watchdog``, every ``cleanup.watchdog_interval_seconds``): sends the
  outbox's runs whose enqueue stopped half-way, sends a lost run's chain again and fails it,
  saying so, after ``cleanup.watchdog_max_redrives``.
- ``pull_secret_refresh`` (``k8see.pull_secret_refresh``, every
  ``registry.pull_secret_refresh_seconds``): rewrites the registry pull secret in every
  k8see-managed namespace before the registry's token expires.
- ``preserve`` (``k8see.preserve``): ``/preserve [hours]`` and ``/unpreserve``.

Each job is a plain function (``run_*``) that tests and ``k8see cleanup`` call directly;
``tasks`` registers the thin Celery tasks over them (``k8see.app`` includes it). What jobs
share: ``connections`` (Redis, the kept GitHub client), ``pr_states`` (the cached PR state
lookups), ``destroy_chain`` (the destroy a job sends) and ``times``.

**One active beat.** Run beat as a single replica (the chart does). If two beats run anyway (a
rollout, a second install), each job body runs under a Redis lock (``k8see:lock:job:<name>``,
``SET NX PX``, expiring after the job's period): a duplicate finds the lock taken and returns
``{"skipped": "locked"}``, and every job is idempotent besides, so duplicates are harmless.
"""
