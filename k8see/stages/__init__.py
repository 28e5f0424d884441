"""Pipeline stages: validate, build, scan, deploy, comment, destroy, cleanup, preserve.

The contract of a pipeline stage's module: ``run(run, ctx) -> Run``, taking a ``Run`` and a
``StageContext`` and returning a new ``Run`` with its result added, and, if its result changes
the environment record, ``record_changes(run, before) -> dict``. Its row in
``k8see.stage_table`` says where and how it runs (docs/architecture.md, "Adding a stage"). Stages never import each
other, never touch Celery and never write the environment record; the task layer does that.
"""
