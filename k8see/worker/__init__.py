"""The worker side of a stage: ``StageTask`` (everything cross-cutting about running one), the
failure classification it retries by, and the comment-command task.

``k8see.tasks`` registers a task per row of ``k8see.stage_table`` on ``StageTask``; nothing in
this package names a stage.
"""
