"""The service proxy subresource: ``/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/...``.

The real server forwards to a ready endpoint of the Service. The sandbox forwards to the
backend URL a test registered for ``(namespace, service, port)`` (a real local HTTP server),
with the method, query and body. Without one it answers 503 ``no endpoints available for
service``, which is what a real server says when no pod is ready.
"""

from __future__ import annotations

import http.client
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from k8see.sandbox.kubeapi.apierrors import ApiError, not_found
from k8see.sandbox.kubeapi.routes import Route

if TYPE_CHECKING:
    from k8see.sandbox.kubeapi.server import Handler

#: Request headers passed on to the backend; hop-by-hop and auth headers are not.
FORWARDED = ("Content-Type", "Accept", "User-Agent")


def split_service(ref: str) -> tuple[str, str, str]:
    """``name``, ``name:port`` or ``scheme:name:port`` into (scheme, name, port)."""
    parts = ref.split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return "", parts[0], ""


def backend_for(handler: Handler, namespace: str, service: str, port: str) -> str | None:
    backends = handler.ctx.backends
    for key in ((namespace, service, port), (namespace, service, "")):
        if key in backends:
            return backends[key]
    if port == "":
        matches = [
            url for (ns, svc, _), url in backends.items() if (ns, svc) == (namespace, service)
        ]
        if len(matches) == 1:
            return matches[0]
    return None


def forward(
    handler: Handler, *, route: Route, method: str, query: dict[str, str], body: bytes
) -> None:
    namespace = route.namespace or ""
    _, service, port = split_service(route.name or "")
    if handler.ctx.api.store.get(route.rt.key, namespace, service) is None:
        raise not_found(route.rt, service)
    target = backend_for(handler, namespace, service, port)
    if target is None:
        raise ApiError(
            code=503,
            reason="ServiceUnavailable",
            message=f'no endpoints available for service "{route.name}"',
        )
    url = urlsplit(target)
    path = (url.path.rstrip("/") + "/" + route.rest) if route.rest else (url.path or "/")
    if query:
        path += "?" + urlencode(query)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
    try:
        headers = {h: handler.headers[h] for h in FORWARDED if handler.headers.get(h)}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type") or "application/octet-stream"
        handler.send_bytes(resp.status, data, content_type=ctype)
    except OSError as exc:
        raise ApiError(
            code=503,
            reason="ServiceUnavailable",
            message=f"error trying to reach service: {type(exc).__name__}",
        ) from exc
    finally:
        conn.close()
