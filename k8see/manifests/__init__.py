"""What a deploy applies to a PR namespace, as plain manifests and Helm values.

Pure builders, computed without a cluster, shared by the deploy stage and ``k8see render``:

- ``guardrails``: the objects applied before the release, in order, from ``quota`` (the
  ResourceQuota and LimitRange, sized from the config) and ``network`` (the five
  NetworkPolicies and the address ranges their egress cuts out);
- ``release``: the namespace's labels and annotations, the registry pull secret and the app
  chart's values; ``render_manifests`` runs ``helm template`` (no cluster).

``guardrails``, ``quota`` and ``network`` import no settings and no integration, so the
admission check, the capacity ledger and the build network read them from low in the layers;
``release`` sits above the integrations (pyproject.toml ``[tool.importlinter]``).
"""
