"""Pipeline stages: validate, build, scan, deploy, comment, destroy, cleanup, preserve.

The contract: each module exposes ``run(run, ctx) -> Run``, taking a ``Run`` and a
``StageContext`` and returning a new ``Run`` with its result added. Stages never import each
other, never touch Celery and never write the environment record; the task layer does that.
"""
