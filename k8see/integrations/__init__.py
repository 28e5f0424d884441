"""The external systems: Kubernetes (``kube`` over ``kubeapi``; ``kubeproxy`` for helm), helm,
registries (``registry`` over ``registry_session`` and ``oci``; ``ghcr``, ``ecr``), image
builders (``buildah`` and ``dockerbuild`` over ``builders``), the scanner, GitHub, sources.

Library exceptions are wrapped here, chained with ``from``, and never leave: callers see only
the ``k8see.errors`` tree. Functions are verb_noun and idempotent, so a redelivered stage
converges to the same end state.
"""
