"""The sandbox Kubernetes API server: real HTTP for kubectl, helm and the kubernetes client.

Importing this package has no side effects; ``KubeSandbox(...).start()`` listens. Modules:
``server`` (HTTP), ``routes`` (URL parsing), ``api`` (REST semantics), ``store`` (objects,
resourceVersions, events), ``resources`` (the kind table), ``discovery`` and ``openapi``,
``patching``, ``validation``, ``defaults``, ``admission`` and ``quota``, ``lifecycle``
(finalizers, garbage collection, namespaces), ``controllers`` with ``workloads``, ``pods`` and
``operators`` (the simulated cluster), ``proxy`` (service proxy), ``faults``.
"""

from k8see.sandbox.kubeapi.sandbox import KubeSandbox

__all__ = ["KubeSandbox"]
