"""OciRegistry's behaviour where registries differ or misbehave, against real docker-registry.

- Deleting a tag deletes that tag only: docker-registry 2.x deletes by digest, which would take
  every other tag on the image (``sha-<commit>`` shared by two PRs of one commit) with it.
- A registry that refuses deletion keeps the tag as it was (no placeholder left behind).
- Throttling and 5xx answers are retried with backoff, a streamed file body included.
- A bearer token the registry no longer accepts (expired, or its issuer rotated keys) is
  exchanged for a new one instead of failing with 401.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k8see.errors import RegistryError
from k8see.integrations.registry import OciRegistry
from k8see_sandbox.mirror import push_oci_layout
from tests.fixtures.images import MIRROR_DIR, LocalRegistry
from tests.fixtures.kubefaults import FaultProxy

REPOSITORY = "k8see-tests/untag/app"


def _push_busybox(client: OciRegistry, repository: str, tags: list[str]) -> str:
    return push_oci_layout(
        client, layout_dir=MIRROR_DIR / "busybox", repository=repository, tags=tags
    )


def test_deleting_a_tag_keeps_the_other_tags_of_the_same_image(registry: LocalRegistry) -> None:
    # Given one image under three tags: two PRs built the same commit
    client = registry.client()
    sha_tag = "sha-" + "c" * 40
    digest = _push_busybox(client, REPOSITORY, ["pr-7", "pr-8", sha_tag])
    # When PR 7 closes and deletes its own tag (twice: a redelivered untag)
    first = client.remove_tags(REPOSITORY, ["pr-7"])
    again = client.remove_tags(REPOSITORY, ["pr-7"])
    # Then only pr-7 is gone; PR 8's tag and the shared commit tag still name the image
    assert (first.deleted, first.failed) == (("pr-7",), {})
    assert (again.deleted, again.absent) == ((), ("pr-7",))
    assert client.list_tags(REPOSITORY) == sorted(["pr-8", sha_tag])
    assert client.resolve_digest(f"{REPOSITORY}:pr-8") == digest
    assert client.resolve_digest(f"{REPOSITORY}:{sha_tag}") == digest
    assert client.get_platforms(f"{REPOSITORY}:pr-8") == ["linux/amd64", "linux/arm64"]


@pytest.fixture
def undeletable_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(workdir=tmp_path, delete=False)
    reg.start()
    yield reg
    reg.stop()


def test_a_registry_that_refuses_deletion_keeps_the_tag_untouched(
    undeletable_registry: LocalRegistry,
) -> None:
    client = undeletable_registry.client()
    digest = _push_busybox(client, REPOSITORY, ["pr-3"])
    outcome = client.remove_tags(REPOSITORY, ["pr-3"])
    assert outcome.deleted == ()
    assert "refuses to delete images" in outcome.failed["pr-3"]
    # No placeholder was written over the tag before the refusal was known
    assert client.resolve_digest(f"{REPOSITORY}:pr-3") == digest
    with pytest.raises(RegistryError, match="refuses to delete images"):
        client.delete_tags(REPOSITORY, ["pr-3"])


@pytest.fixture
def faulty(registry: LocalRegistry) -> Iterator[tuple[FaultProxy, OciRegistry]]:
    proxy = FaultProxy(upstream=registry.url, ca_file="", preserve_host=True)
    host = proxy.url.removeprefix("http://")
    yield proxy, OciRegistry(host=host, insecure=True, timeout_seconds=10)
    proxy.close()


def test_throttling_and_server_errors_are_retried(
    faulty: tuple[FaultProxy, OciRegistry], registry: LocalRegistry
) -> None:
    proxy, client = faulty
    _push_busybox(registry.client(), REPOSITORY, ["pr-11"])
    proxy.faults.sequence = [503, 429, 502]
    assert "pr-11" in client.list_tags(REPOSITORY)
    assert proxy.faults.injected_by_status == {503: 1, 429: 1, 502: 1}


def test_retries_end_with_the_registry_error(faulty: tuple[FaultProxy, OciRegistry]) -> None:
    proxy, client = faulty
    proxy.faults.sequence = [500] * 10
    with pytest.raises(RegistryError, match="HTTP 500"):
        client.list_tags(REPOSITORY)
    assert proxy.faults.injected == 4  # the first attempt and three retries


def test_a_streamed_blob_is_sent_whole_again_after_a_failed_upload(
    faulty: tuple[FaultProxy, OciRegistry], tmp_path: Path
) -> None:
    proxy, client = faulty
    data = (b"k8see layer " * 100_000)[:1_000_003]
    blob = tmp_path / "layer"
    blob.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    # HEAD (absent) and POST (start the upload) pass; the PUT with the body fails once
    proxy.faults.sequence = [None, None, 503]
    with blob.open("rb") as handle:
        client.push_blob("k8see-tests/stream/app", digest, handle)
    assert proxy.faults.injected == 1
    # The registry verified the digest of what arrived: the retry sent the file from its start
    assert client.get_blob("k8see-tests/stream/app", digest) == data


class TokenService:
    """A token server as docker-registry's ``auth: token`` expects (JWT with an x5c chain).

    ``rotate()`` replaces the signing key and the bundle file: a registry restarted on the
    new bundle refuses every token signed before, as it refuses an expired one (401,
    ``invalid_token``). ``issued`` counts the tokens.
    """

    def __init__(self, workdir: Path) -> None:
        self.bundle = workdir / "token-ca.pem"
        self.issued = 0
        self.rotate()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                body = json.dumps({"token": service.token(query.get("scope", [""])[0])})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rotate(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k8see test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def token(self, scope: str) -> str:
        self.issued += 1
        now = int(time.time())
        _, name, actions = [*scope.split(":"), "", "", ""][:3]
        claims = {
            "iss": "k8see-tests",
            "sub": "tester",
            "aud": "k8see-test-registry",
            "iat": now,
            "nbf": now - 10,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "access": [{"type": "repository", "name": name, "actions": actions.split(",")}],
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": [self.x5c]})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_token_the_registry_no_longer_accepts_is_exchanged_for_a_new_one(
    tmp_path: Path,
) -> None:
    tokens = TokenService(tmp_path)
    reg = LocalRegistry(
        workdir=tmp_path,
        extra_config=(
            "auth:\n  token:\n"
            f"    realm: {tokens.realm}\n"
            "    service: k8see-test-registry\n"
            "    issuer: k8see-tests\n"
            f"    rootcertbundle: {tokens.bundle}\n"
        ),
    )
    reg.start()
    client = reg.client()
    try:
        # Given a client holding a token it used successfully
        assert client.list_tags("k8see-tests/token/app") == []
        assert client.list_tags("k8see-tests/token/app") == []
        assert tokens.issued == 1
        # When the registry stops accepting that token (here: its issuer rotated the key;
        # an expired token gets the same 401 invalid_token)
        tokens.rotate()
        reg.stop()
        reg.start()
        # Then the client exchanges it once and goes on
        assert client.list_tags("k8see-tests/token/app") == []
        assert tokens.issued == 2
    finally:
        reg.stop()
        tokens.close()
