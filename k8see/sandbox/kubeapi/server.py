"""The HTTP layer: stdlib ``ThreadingHTTPServer`` speaking the Kubernetes REST API in JSON.

One thread per connection (watches hold theirs open). Requests are parsed into a route and
handed to ``Api``; every refusal becomes a ``Status`` body with its code. Only this module knows
HTTP; nothing here decides Kubernetes semantics.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from k8see.sandbox.kubeapi import (
    discovery,
    openapi,
    protobuf,
    proxy,
    routes,
    subresources,
    tables,
)
from k8see.sandbox.kubeapi.api import Api
from k8see.sandbox.kubeapi.apierrors import ApiError, bad_request, gone, method_not_allowed
from k8see.sandbox.kubeapi.faults import Faults
from k8see.sandbox.kubeapi.selectors import field_matcher, label_matcher

log = logging.getLogger(__name__)
Obj = dict[str, Any]
#: Paths that answer without a token and without injected faults, like the real health checks.
OPEN_PATHS = {"/healthz", "/readyz", "/livez", "/version"}


@dataclass
class Context:
    """What request handlers share: the API, the knobs, and the registered proxy backends."""

    api: Api
    faults: Faults
    token: str
    stopping: threading.Event = field(default_factory=threading.Event)
    backends: dict[tuple[str, str, str], str] = field(default_factory=dict)
    address: str = ""


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], context: Context) -> None:
        super().__init__(address, Handler)
        self.context = context

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-request (a stopped worker) is routine, not a traceback."""
        log.debug("Connection from %s ended abruptly.", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    """One request; ``do_*`` methods all go through ``_dispatch``."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY each response waits for
    # the client's delayed ACK (about 40 ms per request).
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ------------------------------------------------------------------------

    @property
    def ctx(self) -> Context:
        return self.server.context

    def _body_bytes(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body(self, raw: bytes, *, yaml_ok: bool = False) -> Any:
        if not raw:
            return None
        if (self.headers.get("Content-Type") or "").startswith(protobuf.CONTENT_TYPE):
            if self.command == "DELETE":
                return None  # DeleteOptions in protobuf: the defaults (Background) apply
            return protobuf.decode(raw)
        try:
            return yaml.safe_load(raw) if yaml_ok else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the object provided is unrecognized: {type(exc).__name__}") from exc

    def send_bytes(
        self, code: int, body: bytes, *, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(
            code, json.dumps(obj).encode(), content_type="application/json", headers=headers
        )

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self._body_bytes()
        try:
            if url.path not in OPEN_PATHS:
                self._authenticate()
                if not url.path.startswith("/openapi"):
                    self.ctx.faults.check()
            self._route(method, url.path, query, raw)
        except ApiError as err:
            self.send_json(err.code, err.status(), headers=err.headers)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("Client went away during %s %s.", method, url.path)
        except Exception as exc:
            log.exception("Sandbox API failed on %s %s.", method, url.path)
            failure = ApiError(
                code=500, reason="InternalError", message=f"sandbox error: {type(exc).__name__}"
            )
            self.send_json(500, failure.status())

    def _authenticate(self) -> None:
        # client-go (kubectl, helm) sends credentials only over TLS, so a request without an
        # Authorization header is served, like the old insecure port; a wrong token is refused.
        header = self.headers.get("Authorization")
        if header is not None and header != f"Bearer {self.ctx.token}":
            raise ApiError(code=401, reason="Unauthorized", message="Unauthorized")

    # -- routing -------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        registry = self.ctx.api.registry
        if path in ("/healthz", "/readyz", "/livez"):
            self.send_bytes(200, b"ok", content_type="text/plain; charset=utf-8")
            return
        simple = self._discovery(path)
        if simple is not None:
            if method != "GET":
                raise method_not_allowed(
                    f"the server does not allow this method on the requested resource ({method})"
                )
            self.send_json(200, simple)
            return
        if path == "/openapi/v2":
            if openapi.V2_PROTOBUF in self.headers.get("Accept", ""):
                self.send_bytes(
                    200, openapi.openapi_v2_protobuf(), content_type=openapi.V2_PROTOBUF
                )
            else:
                self.send_json(200, openapi.openapi_v2_json())
            return
        if path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/") :].split("/")
            group, version = (
                ("", gv[1])
                if gv[0] == "api" and len(gv) == 2
                else (gv[1] if len(gv) == 3 else "", gv[-1])
            )
            doc = openapi.v3_document(registry, group, version) if len(gv) in (2, 3) else None
            if doc is None:
                raise ApiError(code=404, reason="NotFound", message="404 page not found")
            self.send_json(200, doc)
            return
        route = routes.parse(registry, path)
        self._resource(method, route, query, raw)

    def _discovery(self, path: str) -> Obj | None:
        registry = self.ctx.api.registry
        path = path.rstrip("/") or "/"
        if path == "/version":
            return discovery.KUBE_VERSION
        if path == "/api":
            return discovery.api_versions(self.ctx.address)
        if path == "/apis":
            return discovery.api_group_list(registry)
        if path == "/openapi/v3":
            return openapi.v3_root(registry)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return _or_404(discovery.api_resource_list(registry, "", parts[1]))
        if parts[0] == "apis" and len(parts) == 2:
            return _or_404(discovery.api_group(registry, parts[1]))
        if parts[0] == "apis" and len(parts) == 3:
            return _or_404(discovery.api_resource_list(registry, parts[1], parts[2]))
        return None

    def _resource(
        self, method: str, route: routes.Route, query: dict[str, str], raw: bytes
    ) -> None:
        api, rt, ns = self.ctx.api, route.rt, route.namespace or ""
        dry_run = query.get("dryRun") == "All"
        if route.subresource == "proxy":
            proxy.forward(self, route=route, method=method, query=query, body=raw)
            return
        if route.subresource == "log":
            subresources.pod_log(self, api=api, route=route, query=query)
            return
        if route.subresource == "scale":
            subresources.scale(self, api=api, route=route, method=method, body=self._body(raw))
            return
        if route.name is None:
            if method == "GET":
                if (query.get("watch") or "").lower() in ("true", "1") or route.legacy_watch:
                    self._watch(route, query)
                    return
                listed = api.list(
                    rt,
                    route.namespace,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                )
                self._send_object(200, listed, query)
            elif method == "POST":
                created = api.create(rt, ns, self._body(raw), dry_run=dry_run)
                self.send_json(201, created)
            elif method == "DELETE":
                result = api.delete_collection(
                    rt,
                    route.namespace,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                )
                self.send_json(200, result)
            else:
                raise method_not_allowed(
                    f"the server does not allow this method on the requested resource ({method})"
                )
            return
        name, sub = route.name, route.subresource
        if method == "GET":
            self._send_object(200, api.get(rt, ns, name), query)
        elif method == "PUT":
            self.send_json(
                200, api.replace(rt, ns, name, self._body(raw), subresource=sub, dry_run=dry_run)
            )
        elif method == "PATCH":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            body = self._body(raw, yaml_ok=ctype == "application/apply-patch+yaml")
            patched, was_created = api.patch(
                rt,
                ns,
                name,
                content_type=ctype,
                patch=body,
                subresource=sub,
                dry_run=dry_run,
                field_manager=query.get("fieldManager"),
            )
            self.send_json(201 if was_created else 200, patched)
        elif method == "DELETE":
            options = self._body(raw) or {}
            pre = options.get("preconditions") or {}
            dry_run = dry_run or "All" in (options.get("dryRun") or [])
            propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
            if options.get("orphanDependents") is True:
                propagation = "Orphan"
            result = api.delete(
                rt,
                ns,
                name,
                propagation=propagation,
                dry_run=dry_run,
                precondition_rv=pre.get("resourceVersion"),
                precondition_uid=pre.get("uid"),
            )
            self.send_json(200, result)
        else:
            raise method_not_allowed(
                f"the server does not allow this method on the requested resource ({method})"
            )

    def _send_object(self, code: int, obj: Obj, query: dict[str, str]) -> None:
        accept = self.headers.get("Accept", "")
        if "as=Table" in accept:
            obj = tables.to_table(obj, include_object=query.get("includeObject", "Metadata"))
        self.send_json(code, obj)

    # -- watch ---------------------------------------------------------------------------

    def _watch(self, route: routes.Route, query: dict[str, str]) -> None:
        store, rt = self.ctx.api.store, route.rt
        labels = label_matcher(query.get("labelSelector"))
        fields = field_matcher(query.get("fieldSelector"), kind=rt.kind)
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        namespace = route.namespace if rt.namespaced else None
        rv = query.get("resourceVersion") or ""

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            if namespace is not None and obj["metadata"].get("namespace") != namespace:
                return False
            return labels(obj) and fields(obj)

        initial: list[Obj] = []
        with store.locked():
            if rv in ("", "0"):
                since = store.resource_version
                initial = [o for o in store.list(rt.key, namespace) if matches(o)]
            else:
                since = int(rv) if rv.isdigit() else 0
                if store.events_since(since) is None:
                    self._start_stream()
                    status = gone(
                        f"too old resource version: {rv} ({store.resource_version})"
                    ).status()
                    self._chunk({"type": "ERROR", "object": status})
                    self._end_stream()
                    return
        self._start_stream()
        for obj in initial:
            self._chunk({"type": "ADDED", "object": self.ctx.api._versioned(rt, obj)})
        while not self.ctx.stopping.is_set():
            events = store.events_since(since) or []
            for event in events:
                since = event.rv
                if event.key != rt.key:
                    continue
                kind = _event_type(event.type, matches(event.obj), matches(event.old))
                if kind:
                    self._chunk(
                        {"type": kind, "object": self.ctx.api._versioned(rt, dict(event.obj))}
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            store.wait(after_rv=since, timeout=min(remaining, 1.0))
        self._end_stream()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, event: Obj) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _event_type(kind: str, new_matches: bool, old_matches: bool) -> str | None:
    """Translate a stored event for a filtered watch: moving in or out of the selector is an
    ADDED or DELETED for that watcher, as the real watch cache reports it."""
    if kind == "ADDED":
        return "ADDED" if new_matches else None
    if kind == "DELETED":
        return "DELETED" if old_matches else None
    if new_matches and old_matches:
        return "MODIFIED"
    if new_matches:
        return "ADDED"
    if old_matches:
        return "DELETED"
    return None


def _or_404(doc: Obj | None) -> Obj:
    if doc is None:
        raise ApiError(
            code=404,
            reason="NotFound",
            message="the server could not find the requested resource",
            details={},
        )
    return doc
