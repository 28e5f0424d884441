"""URL parsing: which resource, namespace, name and subresource a request path names.

Paths follow the real layout: ``/api/v1/...`` for the core group and
``/apis/{group}/{version}/...`` otherwise, then ``[namespaces/{ns}/]{plural}[/{name}[/{sub}]]``
(``/api/v1/namespaces/{name}[/status]`` is the Namespace itself). Legacy ``/watch/`` prefixes
are accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8see.sandbox.kubeapi.apierrors import plain_not_found
from k8see.sandbox.kubeapi.resources import ResourceRegistry, ResourceType


@dataclass(frozen=True)
class Route:
    """A resource request: ``name`` None means the collection; ``rest`` is a proxy path."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    rest: str
    legacy_watch: bool


def parse(registry: ResourceRegistry, path: str) -> Route:
    """The resource route for ``path``; unknown paths are 404 as on the real server."""
    parts = [p for p in path.split("/") if p != ""]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise plain_not_found()
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    if not rest:
        raise plain_not_found()
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = registry.lookup(group=group, version=version, plural=rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = registry.lookup(group=group, version=version, plural=rest[0])
    if rt is None or (rt.namespaced and namespace is None and len(rest) > 1):
        raise plain_not_found()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rt.subresources and sub != "finalize":
        raise plain_not_found()
    if sub != "proxy" and len(rest) > 3:
        raise plain_not_found()
    return Route(
        rt=rt,
        namespace=namespace,
        name=name,
        subresource=sub,
        rest="/".join(rest[3:]),
        legacy_watch=legacy_watch,
    )
