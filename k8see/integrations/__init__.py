"""One module per external system (kube, helm, registry, builders, scanner, github, source).

Library exceptions are wrapped here, chained with ``from``, and never leave: callers see only
the ``k8see.errors`` tree. Functions are verb_noun and idempotent, so a redelivered stage
converges to the same end state.
"""
