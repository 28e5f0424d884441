"""Pipeline stages: validate, build, scan, deploy, comment, destroy, untag, and command.

The contract of each of those modules: ``run(run, ctx) -> Run``, taking a ``Run`` and a
``StageContext`` and returning a new ``Run`` with its result added, and, if its result changes
the environment record, ``record_changes(run, before) -> dict``. Its row in
``k8see.stage_table`` says where and how it runs (docs/architecture.md, "Adding a stage").
(``command`` is the comment-command task's body: it has no row.) Stages never import each
other, never touch Celery and never write the environment record; the task layer does that.
The other modules are what stages share: ``context`` (the ``StageContext``), ``trust`` and
``provenance`` (what a stage may believe), ``served_kinds`` (the deploy's pre-flight),
``deploy_failures`` (why a rollout failed, in the author's words), ``comment_body`` (the sticky
comment rendered from the record). Stages read each other's results through the typed models
of ``k8see.results``. The beat
jobs are not stages: they live in ``k8see.jobs``; what a deploy applies is ``k8see.manifests``.
"""
