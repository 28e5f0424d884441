"""A retrying proxy between helm and the Kubernetes API server.

helm (client-go) retries a throttled or failed request only when the answer carries
Retry-After. A plain 500 (an etcd timeout, a webhook or aggregated API restarting) fails the
whole ``helm upgrade``, which ``--atomic`` then rolls back, and the deploy stage starts over
from the beginning. k8see's own API calls retry such answers (``kubeapi.call``); this proxy
gives helm's calls the same treatment. helm talks to it over TLS on 127.0.0.1, and it forwards
each request to the real API server with the worker's credentials, retrying 429 and 5xx
answers and failed connections with backoff before helm sees them.

What is retried: a 429 always, since the server refused the request before acting on it. A
5xx or a failed connection is retried for every request except a create whose object asks
for a generated name (``metadata.generateName``): that is the one request whose repetition
could make a duplicate. A create of a named object that was in fact stored before its 500
meets AlreadyExists on the retry; helm reports it and the stage retries as a whole.

Who may use it: every deploy or destroy opens a ``Session``. The session has its own bearer
token, valid until it closes, and a kubeconfig (mode 0600) that holds the token and the
proxy's self-signed certificate. The worker's real credentials never leave this process.
Build steps share the worker's network namespace, so a request without a live token is
refused.

There is one listener per worker process, on one port for the process's life. helm caches
API discovery per server address (``~/.kube/cache/discovery``), and a new port for every run
would throw that cache away.

Why one module of about 480 lines: it is one small server. The listener, its sessions, the
request handler and its TLS certificate share one state (the session table, the upstream
pool, the port in each kubeconfig), and the retry rules above are the handler's; apart, each
piece would only be read against the others.
"""

from __future__ import annotations

import atexit
import base64
import ipaddress
import json
import logging
import os
import random
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client import rest

from k8see.integrations import kubeapi
from k8see.settings import PlatformSettings

__all__ = ["RETRY_STATUSES", "ApiProxy", "Session", "for_helm"]

log = logging.getLogger(__name__)

#: Answers worth another try: throttling, and the server or a gateway failing.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Backoff between tries: doubled from the first, with jitter, up to the cap.
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 3.0
#: Longest Retry-After honoured; a longer one is shortened to this.
MAX_RETRY_AFTER_SECONDS = 10.0
#: Read timeout of a request that is not a watch (watches stream for as long as they last).
READ_TIMEOUT_SECONDS = 300.0
#: A kept-alive connection from helm with no request for this long is closed.
IDLE_SECONDS = 120.0
#: Headers that belong to one connection, or that the proxy sets itself.
_NOT_FORWARDED = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: A connection error counts under this pseudo-status.
CONNECTION_FAILED = 0


@dataclass
class Session:
    """One stage's use of the proxy: helm's kubeconfig, and what the proxy did for it.

    Attributes:
        kubeconfig: The file to hand helm (``--kubeconfig``).
        requests: Requests helm sent through the proxy.
        retried: Retries by the status that caused them (0: the connection failed).
    """

    kubeconfig: str
    token: str = ""
    requests: int = 0
    retried: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def retries(self) -> int:
        return sum(self.retried.values())

    def summary(self) -> dict[str, Any]:
        """For the run record: requests, retries, and retries by cause."""
        with self._lock:
            by = {
                ("connection" if k == CONNECTION_FAILED else str(k)): v
                for k, v in self.retried.items()
            }
            return {
                "requests": self.requests,
                "retries": self.retries,
                "retried": dict(sorted(by.items())),
            }

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self, status: int) -> None:
        with self._lock:
            self.retried[status] += 1


class ApiProxy:
    """The listener: TLS on 127.0.0.1, forwarding to ``configuration.host`` with retries.

    Args:
        configuration: The API server and the worker's credentials
            (``kubeapi.load_configuration``).
        max_retries: Retries of one request before its last answer goes back to helm.
    """

    def __init__(self, configuration: client.Configuration, *, max_retries: int) -> None:
        self.configuration = configuration
        self.max_retries = max_retries
        self.upstream = str(configuration.host).rstrip("/")
        self.pool = rest.RESTClientObject(configuration).pool_manager
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.directory = Path(tempfile.mkdtemp(prefix="k8see-kubeproxy-"))
        self._certificate = _write_certificate(self.directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.directory / "tls.crt", self.directory / "tls.key")
        self.server = _Server(self)
        # The handshake happens in the connection's own thread, not in the accept loop.
        self.server.socket = context.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = int(self.server.server_address[1])
        self.pid = os.getpid()
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="k8see-kubeproxy", daemon=True
        )
        self._thread.start()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A token and kubeconfig for one stage, revoked and removed when it ends."""
        token = secrets.token_urlsafe(32)
        path = self.directory / f"kubeconfig-{secrets.token_hex(8)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(self._kubeconfig(token), handle, sort_keys=False)
        session = Session(kubeconfig=str(path), token=token)
        with self._lock:
            self._sessions[token] = session
        try:
            yield session
        finally:
            with self._lock:
                self._sessions.pop(token, None)
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.pool.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def session_for(self, authorization: str) -> Session | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        with self._lock:
            return self._sessions.get(token.strip())

    def upstream_headers(self) -> dict[str, str]:
        """The worker's own credentials, as the kubernetes client itself would send them.

        ``auth_settings()`` is the client's own answer for every credential kind it loads (a
        service-account token file, a token kubeconfig, an exec plugin), under whichever
        ``api_key`` name its version keeps it, and calls the refresh hook, so rotated and
        expiring tokens are fresh. Client certificates travel in the TLS connection instead.
        """
        headers: dict[str, str] = {}
        for auth in self.configuration.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"]).title()] = str(auth["value"])
        return headers

    def _kubeconfig(self, token: str) -> dict[str, Any]:
        ca = base64.b64encode(self._certificate).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "k8see",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.port}",
                        "certificate-authority-data": ca,
                    },
                }
            ],
            "users": [{"name": "k8see", "user": {"token": token}}],
            "contexts": [{"name": "k8see", "context": {"cluster": "k8see", "user": "k8see"}}],
            "current-context": "k8see",
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: ApiProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("API proxy connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_SECONDS
    # Headers and body go out in separate writes; with Nagle on, each response would wait for
    # helm's delayed ACK (measured: 44 ms per request instead of about 1 ms).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("API proxy: " + format, *args)

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _forward(self) -> None:
        proxy = self.server.proxy
        session = proxy.session_for(self.headers.get("Authorization", ""))
        body = self._read_body()
        if session is None:
            self._status(401, "Unauthorized", "k8see's API proxy: no valid session token")
            return
        session.count_request()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
        repeatable = _may_repeat(self.command, body)
        for attempt in range(proxy.max_retries + 1):
            final = attempt == proxy.max_retries
            try:
                response = proxy.pool.urlopen(
                    self.command,
                    proxy.upstream + self.path,
                    body=body or None,
                    headers={**headers, **proxy.upstream_headers()},
                    retries=False,
                    redirect=False,
                    preload_content=False,
                    decode_content=False,
                    timeout=urllib3.Timeout(connect=10.0, read=self._read_timeout()),
                )
            except urllib3.exceptions.HTTPError as exc:
                if final or not repeatable:
                    self._status(
                        503,
                        "ServiceUnavailable",
                        f"k8see's API proxy could not reach the API server: {type(exc).__name__}",
                    )
                    return
                session.count_retry(CONNECTION_FAILED)
                time.sleep(_backoff(attempt))
                continue
            if (
                response.status in RETRY_STATUSES
                and not final
                and (repeatable or response.status == 429)
            ):
                delay = _retry_after(response.headers.get("Retry-After")) or _backoff(attempt)
                response.drain_conn()
                response.release_conn()
                session.count_retry(response.status)
                log.debug(
                    "API proxy: %s %s answered %s; retrying",
                    self.command,
                    self.path,
                    response.status,
                )
                time.sleep(delay)
                continue
            self._relay(response)
            return

    def _read_timeout(self) -> float | None:
        query = parse_qs(urlsplit(self.path).query)
        watching = query.get("watch", [""])[0] in ("true", "1") or "/watch/" in self.path
        return None if watching else READ_TIMEOUT_SECONDS

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _relay(self, response: urllib3.BaseHTTPResponse) -> None:
        try:
            self.send_response_only(response.status, response.reason)
            length = response.headers.get("Content-Length")
            bodiless = self.command == "HEAD" or response.status in (204, 304)
            chunked = length is None and not bodiless
            for name, value in response.headers.items():
                if name.lower() not in _NOT_FORWARDED:
                    self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", length)
            elif chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if bodiless:
                return
            for piece in response.stream(64 * 1024, decode_content=False):
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (OSError, urllib3.exceptions.HTTPError):
            self.close_connection = True  # helm went away, or the API server did mid-stream
        finally:
            response.release_conn()

    def _status(self, code: int, reason: str, message: str) -> None:
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            }
        ).encode()
        self.send_response_only(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _may_repeat(method: str, body: bytes) -> bool:
    """Whether sending the request twice is harmless: all but a create with a generated name."""
    if method != "POST" or b"generateName" not in body:
        return True
    try:
        document = json.loads(body)
    except ValueError:
        return False
    metadata = document.get("metadata") if isinstance(document, dict) else None
    return not (isinstance(metadata, dict) and metadata.get("generateName"))


def _backoff(attempt: int) -> float:
    delay = min(FIRST_BACKOFF_SECONDS * 2.0**attempt, MAX_BACKOFF_SECONDS)
    return delay * random.uniform(0.5, 1.0)


def _retry_after(value: str | None) -> float | None:
    try:
        return min(max(0.0, float(value)), MAX_RETRY_AFTER_SECONDS) if value else None
    except ValueError:
        return None  # an HTTP date: rare from an API server; use the backoff


def _write_certificate(directory: Path) -> bytes:
    """A self-signed certificate for 127.0.0.1 (its own CA); returns the PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k8see helm API proxy")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_path = directory / "tls.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    (directory / "tls.crt").write_bytes(pem)
    return pem


_proxies: dict[tuple[str, int], ApiProxy] = {}
_proxies_lock = threading.Lock()


def _proxy_for(settings: PlatformSettings) -> ApiProxy:
    key = (settings.deploy.kubeconfig, settings.deploy.helm_api_retries)
    with _proxies_lock:
        proxy = _proxies.get(key)
        if proxy is None or proxy.pid != os.getpid():  # a forked child starts its own
            proxy = ApiProxy(
                kubeapi.load_configuration(settings), max_retries=settings.deploy.helm_api_retries
            )
            _proxies[key] = proxy
        return proxy


@contextmanager
def for_helm(settings: PlatformSettings) -> Iterator[Session]:
    """The kubeconfig helm should use for one stage, through this process's proxy.

    With ``deploy.helm_api_retries`` 0 the session is the worker's own kubeconfig (helm
    talks to the API server directly) and counts nothing.

    Raises:
        KubeError: the worker's credentials cannot be loaded.
    """
    if settings.deploy.helm_api_retries == 0:
        yield Session(kubeconfig=settings.deploy.kubeconfig)
        return
    with _proxy_for(settings).session() as session:
        yield session


@atexit.register
def _close_all() -> None:
    for proxy in list(_proxies.values()):
        if proxy.pid == os.getpid():
            shutil.rmtree(proxy.directory, ignore_errors=True)
