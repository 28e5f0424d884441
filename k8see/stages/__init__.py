"""Pipeline stages: validate, build, scan, deploy, comment, destroy, untag, and command.

The contract: each of those modules exposes ``run(run, ctx) -> Run``, taking a ``Run`` and a
``StageContext`` and returning a new ``Run`` with its result added. Stages never import each
other, never touch Celery and never write the environment record; the task layer does that.
The other modules are what stages share: ``context`` (the ``StageContext``), ``trust`` and
``provenance`` (what a stage may believe), ``served_kinds`` (the deploy's pre-flight). The beat
jobs are not stages: they live in ``k8see.jobs``; what a deploy applies is ``k8see.manifests``.
"""
