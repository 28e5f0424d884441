"""``k8see api``: the front doors, where who is asking is verified before anything is queued.

Two doors, one admission path (``k8see.client.enqueue`` and ``k8see.intake``):

- ``POST /github/webhooks``: a GitHub App's deliveries, admitted by their HMAC signature
  (``signatures``), deduplicated by delivery id and accepted into a durable inbox in Redis
  before the answer (``inbox``); the inbox is drained into the same runs ``k8see enqueue``
  makes (``webhooks``, ``inbox.Drainer``).
- ``POST /v1/enqueue``: a workflow step's event, admitted by its GitHub Actions OIDC token
  (``identity``) for the token's own repository only; ``GET /v1/runs/{run_id}`` lets that
  repository, and no other, follow the run (``workflow``).

``server`` builds the Starlette application and runs it on uvicorn. Redis is reached through
``connection`` only. The package imports no worker code (stages, integrations, tasks).
"""

from __future__ import annotations
