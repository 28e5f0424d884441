"""The sandbox GitHub API server: real HTTP, the endpoints k8see calls, GitHub's shapes.

k8see's real client (``k8see.integrations.github``) talks to it exactly as it talks to
api.github.com: token or GitHub App (JWT → installation token) auth, ``Link`` pagination,
conditional requests (``ETag`` / ``304``), rate-limit answers and injected faults. State lives
in memory (``github_state``); the endpoints are in ``github_routes``. Tests drive it in-process::

    hub = GitHubSandbox()
    hub.start()
    hub.add_repo("acme/shop", collaborators={"alice": "write"})
    hub.add_pull("acme/shop", 7, head_sha="a" * 40, head_ref="feature")

``python -m k8see_sandbox.github --port 0`` serves it as a process (``k8see sandbox up``); that
process is seeded over HTTP with ``POST /_sandbox/{repos,pulls,sources}`` (static token only).

Every exchange is handed to the sandbox's ``observer`` (``GitHubSandbox.default_observer`` for
every sandbox made without one): the test suite sets one for the whole session that holds each
request and answer to GitHub's published OpenAPI description (``tests/contracts``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging as _logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from k8see_sandbox.github_identity import OidcIssuer, WebhookSender
from k8see_sandbox.github_routes import ROUTES, Reply, Request, error, not_found
from k8see_sandbox.github_state import Actor, Faults, GitHubState
from k8see_sandbox.github_webhooks import issue_comment_event, pull_request_event

__all__ = ["Exchange", "Faults", "GitHubSandbox", "Observer", "main"]

#: GitHub's primary rate limit of an installation at its floor (requests per hour).
RATE_LIMIT = 5000
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID sandbox."
)


@dataclass(frozen=True)
class Exchange:
    """One request the sandbox answered, as it went over the wire."""

    method: str
    #: Path and query as sent.
    target: str
    headers: dict[str, str]
    body: bytes
    status: int
    reply_headers: dict[str, str]
    #: The JSON value answered (None without a body), or the bytes of a binary answer.
    reply_body: Any


#: Sees every exchange after it is answered (in the server's thread; must not raise).
Observer = Callable[[Exchange], None]


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up mid-request (a worker stopped) is routine, not a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        _logging.getLogger(__name__).debug(
            "Connection from %s ended abruptly.", client_address, exc_info=True
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sandbox: GitHubSandbox  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        return None  # the sandbox is quiet; ``calls`` records what happened

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            reply = self.sandbox.handle(method, self.path, dict(self.headers.items()), raw)
        except Exception as exc:  # noqa: BLE001 - a sandbox bug must answer 500, not hang
            reply = error(500, f"sandbox error: {type(exc).__name__}: {exc}")
        data, content_type = _encode(reply)
        observer = self.sandbox.observer
        if observer is not None:  # before answering: the client sees nothing unchecked
            # The JSON as it goes over the wire: a copy, whatever the route still holds.
            binary = isinstance(reply.body, bytes)
            body = reply.body if binary else (json.loads(data) if data else None)
            observer(
                Exchange(method, self.path, dict(self.headers.items()), raw, reply.status,
                         dict(reply.headers), body)
            )  # fmt: skip
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if not (name == "Content-Type" and isinstance(reply.body, bytes)):
                self.send_header(name, value)
        if reply.status != 304:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if reply.status != 304 and data:
            self.wfile.write(data)


def _encode(reply: Reply) -> tuple[bytes, str]:
    """The body bytes and content type of an answer."""
    if isinstance(reply.body, bytes):
        return reply.body, reply.headers.get("Content-Type", "application/octet-stream")
    if reply.body is None:
        return b"", "application/json; charset=utf-8"
    return json.dumps(reply.body).encode(), "application/json; charset=utf-8"


class GitHubSandbox:
    """A GitHub API stand-in on a loopback port.

    Args:
        port: TCP port; 0 picks a free one (read ``url`` after ``start``).
        token: The static token clients authenticate with (``Bearer`` or ``token`` scheme).
        observer: Sees every exchange; ``default_observer`` when None.
    """

    #: The observer of sandboxes made without one (the tests' OpenAPI check, session-wide).
    default_observer: ClassVar[Observer | None] = None

    def __init__(
        self, *, port: int = 0, token: str = "sandbox-token", observer: Observer | None = None
    ) -> None:
        self.observer = observer if observer is not None else GitHubSandbox.default_observer
        self.state = GitHubState(token=token)
        #: The GitHub Actions OIDC issuer (its ``url`` is this server's).
        self.oidc = OidcIssuer()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"sandbox": self})
        self._server = _QuietServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self.state.base_url = self.url
        self.oidc.url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:40123``."""
        if self._server is None:
            raise RuntimeError("the GitHub sandbox is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- state helpers -------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def installation_token_ttl_seconds(self) -> int:
        """Lifetime of the installation tokens it mints (GitHub's is one hour)."""
        return self.state.installation_token_ttl_seconds

    @installation_token_ttl_seconds.setter
    def installation_token_ttl_seconds(self, value: int) -> None:
        self.state.installation_token_ttl_seconds = value

    @property
    def calls(self) -> list[tuple[str, str]]:
        """Every request as ``(method, path)`` (no query), oldest first."""
        with self.state.lock:
            return list(self.state.calls)

    @property
    def not_modified(self) -> int:
        """How many conditional GETs were answered 304 Not Modified."""
        with self.state.lock:
            return self.state.not_modified

    @property
    def rate_limited_calls(self) -> int:
        """Requests counted against the primary rate limit (every credential): all
        authenticated requests but the 304 answers to conditional ones."""
        with self.state.lock:
            return sum(self.state.rate_used.values())

    def reset(self) -> None:
        self.state.reset()

    def add_repo(
        self, full_name: str, *, private: bool = False, collaborators: dict[str, str] | None = None
    ) -> None:
        self.state.add_repo(full_name, private=private, collaborators=collaborators or {})

    def add_pull(
        self,
        full_name: str,
        number: int,
        *,
        head_sha: str,
        head_ref: str,
        state: str = "open",
        merged: bool = False,
        fork: bool = False,
        base_ref: str = "main",
        author: str = "",
        pushed_at: float | None = None,
    ) -> dict[str, Any]:
        return self.state.add_pull(
            full_name, number, head_sha=head_sha, head_ref=head_ref, state=state,
            merged=merged, fork=fork, base_ref=base_ref, author=author, pushed_at=pushed_at,
        )  # fmt: skip

    def ensure_pull(
        self, full_name: str, number: int, *, head_sha: str, head_ref: str
    ) -> dict[str, Any]:
        """The open PR ``number``, creating its (public) repository and the PR if missing.

        For demos that enqueue an event for a PR nobody registered; the head is updated to
        ``head_sha`` / ``head_ref`` when the PR exists, like a push.
        """
        with self.state.lock:
            if self.state.repo(full_name) is None:
                self.add_repo(full_name)
            if number in self.state._need(full_name).pulls:
                self.set_pull_state(full_name, number, head_sha=head_sha, head_ref=head_ref)
                return dict(self.state._need(full_name).pulls[number])
            return self.add_pull(full_name, number, head_sha=head_sha, head_ref=head_ref)

    def set_pull_state(
        self,
        full_name: str,
        number: int,
        *,
        state: str | None = None,
        merged: bool | None = None,
        head_sha: str | None = None,
        head_ref: str | None = None,
        pushed_at: float | None = None,
    ) -> None:
        """Change a pull; a new ``head_sha`` is a push (``pushed_at``: its Unix time, now by
        default)."""
        self.state.set_pull_state(
            full_name, number, state=state, merged=merged, head_sha=head_sha, head_ref=head_ref,
            pushed_at=pushed_at,
        )  # fmt: skip

    def add_comment(
        self,
        full_name: str,
        number: int,
        body: str,
        *,
        login: str = "octocat",
        at: float | None = None,
    ) -> dict[str, Any]:
        """Seed a comment written by someone else (a human reviewer, by default); ``at`` is
        its ``created_at`` as Unix time (now by default)."""
        return self.state.add_comment(full_name, number, body, actor=Actor(login=login), at=at)

    def add_source(self, full_name: str, git_dir: str | Path) -> None:
        """Serve ``GET /repos/{full_name}/tarball/{ref}`` from this local git repository."""
        with self.state.lock:
            self.state._need(full_name).source = Path(git_dir)

    def add_tarball(self, full_name: str, ref: str, data: bytes) -> None:
        """Serve these exact bytes as the tarball of ``ref`` (for hostile-archive tests)."""
        with self.state.lock:
            self.state._need(full_name).tarballs[ref] = data

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        return self.state.issue_comments(full_name, number)

    def reactions(self, comment_id: int) -> list[dict[str, Any]]:
        return self.state.reactions(comment_id)

    def deployments(self, full_name: str) -> list[dict[str, Any]]:
        """Deployments, oldest first, each with its ``statuses`` oldest first."""
        with self.state.lock:
            out = []
            for d in self.state._need(full_name).deployments:
                item = {k: v for k, v in d.items() if not k.startswith("_")}
                item["statuses"] = [dict(s) for s in d["_statuses"]]
                out.append(item)
            return out

    def commit_statuses(self, full_name: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(s) for s in self.state._need(full_name).commit_statuses]

    def add_app(self, app_id: str, *, repos: dict[str, int]) -> bytes:
        """Register a GitHub App installed on ``repos`` ({full_name: installation id}).

        Returns:
            The App's new private key (PEM), for the client's ``app_private_key_path``.
        """
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with self.state.lock:
            self.state.apps[str(app_id)] = (public_pem, {k.lower(): v for k, v in repos.items()})
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    # -- webhooks ------------------------------------------------------------------------------

    def webhook_sender(self, secret: str, *, app_id: str = "1") -> WebhookSender:
        """Sends this App's deliveries, signed with ``secret``, as GitHub does."""
        return WebhookSender(secret=secret, app_id=app_id)

    def pull_request_event(
        self, full_name: str, number: int, action: str, *, installation_id: int = 0
    ) -> dict[str, Any]:
        """The ``pull_request`` payload GitHub would send for this pull as it is now (every
        field ``@octokit/webhooks-schemas`` requires; ``github_webhooks``)."""
        return pull_request_event(
            self.state, full_name, number, action=action, installation_id=installation_id
        )

    def issue_comment_event(
        self, full_name: str, number: int, comment: dict[str, Any], *, installation_id: int = 0
    ) -> dict[str, Any]:
        """The ``issue_comment`` (``created``) payload for ``comment`` (as ``add_comment``
        returned it) on pull request ``number``."""
        with self.state.lock:
            stored = self.state.comments.get(int(comment["id"]))
            if stored is None or stored["_issue"] != number:
                raise KeyError(f"no comment {comment['id']} on {full_name}#{number}")
        return issue_comment_event(
            self.state, full_name, int(comment["id"]), installation_id=installation_id
        )

    # -- request handling ----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query))
        lower = {k.lower(): v for k, v in headers.items()}
        with self.state.lock:
            self.state.calls.append((method, path))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return error(400, "Problems parsing JSON")
            if path.startswith("/_sandbox/"):
                return self._admin(method, path, lower, body)
            identity = self._identity(method, path, query, lower)
            if identity is not None:
                return identity
            for route_method, pattern, func, auth in ROUTES:
                match = pattern.fullmatch(path)
                if not match or route_method != method:
                    continue
                groups = dict(match.groupdict())
                actor: Actor | None = None
                if auth == "token":
                    actor = self.state.actor(_credential(lower))
                    if actor is None:
                        return _bad_credentials()
                    limited = self._rate_limited()
                    if limited is not None:
                        return limited
                elif auth == "jwt":
                    app_id = self._verify_jwt(_credential(lower))
                    if app_id is None:
                        return error(401, "A JSON web token could not be decoded")
                    groups["_app_id"] = app_id
                if self._comment_write_fails(method, path):
                    return Reply(502, {"message": "Server Error"})
                request = Request(self.state, method, path, groups, query, body, actor, self.url)
                reply = func(request)
                if (
                    self._comment_write(method, path)
                    and self.state.faults.lose_comment_write_responses
                ):
                    self.state.faults.lose_comment_write_responses -= 1
                    return Reply(502, {"message": "Server Error"})
                if method == "GET" and reply.status == 200 and isinstance(reply.body, list | dict):
                    credential = _credential(lower) if auth == "token" else ""
                    reply = _conditional(reply, lower.get("if-none-match"), credential)
                    self.state.not_modified += reply.status == 304
                if auth == "token":
                    self._count(_credential(lower), reply)
                return reply
            return not_found()

    def _identity(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> Reply | None:
        """The OIDC issuer's documents, and the runner's token endpoint for jobs."""
        if method != "GET":
            return None
        if path == "/.well-known/openid-configuration":
            return Reply(200, self.oidc.configuration())
        if path == "/.well-known/jwks":
            return Reply(200, self.oidc.jwks())
        if path == "/_actions/idtoken":
            token = self.oidc.request_token(_credential(headers), query.get("audience", ""))
            if token is None:
                return _bad_credentials()
            return Reply(200, {"count": 1, "value": token})
        return None

    def _count(self, credential: str, reply: Reply) -> None:
        """GitHub's primary rate-limit accounting: every authenticated request but a 304
        counts, and every answer says what is left (``x-ratelimit-*``)."""
        key = hashlib.sha256(credential.encode()).hexdigest()
        used = self.state.rate_used.get(key, 0) + (reply.status != 304)
        self.state.rate_used[key] = used
        reset = int(time.time()) // 3600 * 3600 + 3600
        reply.headers.update(
            {
                "x-ratelimit-limit": str(RATE_LIMIT),
                "x-ratelimit-remaining": str(max(0, RATE_LIMIT - used)),
                "x-ratelimit-used": str(used),
                "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": "core",
            }
        )

    def _rate_limited(self) -> Reply | None:
        faults = self.state.faults
        wait = faults.retry_after_seconds
        if faults.secondary_rate_limit_next > 0:
            faults.secondary_rate_limit_next -= 1
            body = {"message": SECONDARY_LIMIT_MESSAGE, "documentation_url": _SECONDARY_DOCS}
            headers = {} if faults.omit_retry_after else {"Retry-After": str(wait)}
            return Reply(403, body, headers)
        if faults.primary_rate_limit_next > 0:
            faults.primary_rate_limit_next -= 1
            reset = int(time.time()) + wait
            headers = {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-used": "5000",
                "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": "core",
            }
            return Reply(403, {"message": "API rate limit exceeded.", "documentation_url":
                               _PRIMARY_DOCS}, headers)  # fmt: skip
        return None

    @staticmethod
    def _comment_write(method: str, path: str) -> bool:
        if method not in ("POST", "PATCH") or "/issues/" not in path:
            return False
        if path.endswith("/reactions"):
            return False
        return path.endswith("/comments") or "/issues/comments/" in path

    def _comment_write_fails(self, method: str, path: str) -> bool:
        if not self._comment_write(method, path):
            return False
        faults = self.state.faults
        if faults.fail_comment_writes_count > 0:
            faults.fail_comment_writes_count -= 1
            return True
        return time.time() < faults.fail_comment_writes_until

    def _verify_jwt(self, token: str) -> str | None:
        """The App id of a valid RS256 App JWT (iss, iat, exp ≤ 10 minutes), else None."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        try:
            head_b64, payload_b64, sig_b64 = token.split(".")
            header = json.loads(_b64decode(head_b64))
            payload = json.loads(_b64decode(payload_b64))
            signature = _b64decode(sig_b64)
        except ValueError:
            return None
        if header.get("alg") != "RS256":
            return None
        app_id = str(payload.get("iss", ""))
        app = self.state.apps.get(app_id)
        now = time.time()
        iat, exp = payload.get("iat"), payload.get("exp")
        if app is None or not isinstance(iat, int) or not isinstance(exp, int):
            return None
        if not (iat <= now + 60 and now < exp <= iat + 660):
            return None
        public_key = serialization.load_pem_public_key(app[0])
        if not isinstance(public_key, rsa.RSAPublicKey):
            return None
        try:
            public_key.verify(
                signature,
                f"{head_b64}.{payload_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return None
        return app_id

    def _admin(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        """Seeding over HTTP for the process mode; the static token only."""
        if _credential(headers) != self.state.static_token:
            return _bad_credentials()
        if method != "POST" or not isinstance(body, dict):
            return not_found()
        try:
            if path == "/_sandbox/repos":
                self.add_repo(
                    body["full_name"],
                    private=bool(body.get("private", False)),
                    collaborators=dict(body.get("collaborators") or {}),
                )
            elif path == "/_sandbox/pulls":
                args = {k: v for k, v in body.items() if k not in ("full_name", "number")}
                return Reply(201, self.add_pull(body["full_name"], int(body["number"]), **args))
            elif path == "/_sandbox/sources":
                self.add_source(body["full_name"], body["git_dir"])
            else:
                return not_found()
        except (KeyError, TypeError, ValueError) as exc:
            return error(422, f"Validation Failed: {exc}")
        return Reply(201, {"ok": True})


_SECONDARY_DOCS = (
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
)
_PRIMARY_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"


def _credential(headers: dict[str, str]) -> str:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") else ""


def _bad_credentials() -> Reply:
    return error(401, "Bad credentials")


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _conditional(reply: Reply, if_none_match: str | None, credential: str) -> Reply:
    """Add a weak ETag to a JSON answer; answer 304 (no body) when the client already has it.

    As on GitHub, the ETag depends on the credential that read it: another token's ETag does
    not match (GitHub support: "ETags are auth token specific").
    """
    encoded = json.dumps(reply.body, sort_keys=True).encode()
    digest = hashlib.sha256(credential.encode() + b"\0" + encoded).hexdigest()[:32]
    etag = f'W/"{digest}"'
    reply.headers["ETag"] = etag
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Reply(304, None, {"ETag": etag, **{k: v for k, v in reply.headers.items()
                                                  if k == "Link"}})  # fmt: skip
    return reply


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the sandbox until SIGTERM or SIGINT; prints ``listening on URL`` first."""
    parser = argparse.ArgumentParser(prog="python -m k8see_sandbox.github")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--token", default="sandbox-token", help="the static token to accept")
    args = parser.parse_args(argv)
    sandbox = GitHubSandbox(port=args.port, token=args.token)
    sandbox.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"listening on {sandbox.url}", flush=True)
    done.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
