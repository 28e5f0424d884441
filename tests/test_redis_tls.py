"""Redis over TLS, against a real redis-server listening with TLS only.

A throwaway CA signs the server's certificate (``k8see_sandbox.cluster.pki``, the local
cluster's CA code); the server runs with ``--port 0 --tls-port`` (``tests.conftest.RedisServer``).
Through k8see's own code paths:

- ``rediss://...?ssl_ca_certs=<ca>`` works: ``connect`` (SET/GET), and Celery's broker (a
  message published and consumed) and result backend (a result stored and read back) from
  ``create_app``, and a real worker process answers a ping. Without ``ssl_cert_reqs`` in the
  URL Celery's result backend refused a ``rediss://`` URL outright until ``celery_ssl`` gave it
  the verified default;
- certificate verification is on by default, on the plain (non-Sentinel) path too: a
  certificate signed by another CA, a URL that names no CA, or a host name the certificate
  does not hold is refused by ``connect``,
  by the broker and by the backend; ``ssl_cert_reqs=none`` is what turns it off;
- the CLI (a real ``k8see`` process) turns a refused certificate and a plain ``redis://`` URL
  against the TLS port into one error with a hint that says what to change, exit 3, no
  traceback, and never the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu.exceptions import OperationalError

from k8see.app import create_app
from k8see.cli import EXIT_UNREACHABLE
from k8see.redis_connect import connect
from k8see.settings import load_settings
from k8see_sandbox.cluster.pki import Pki
from tests.conftest import REDIS_PASSWORDS, RedisServer, RedisTls, celery_worker

TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 5}


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with TLS only, its certificate signed by a CA of its own."""
    pki = Pki(tmp_path_factory.mktemp("redis-tls-ca"))
    pair = pki.issue("redis", common_name="redis", hosts=("127.0.0.1",), server=True)
    server = RedisServer(
        tmp_path_factory.mktemp("redis-tls"),
        tls=RedisTls(cert=pair.cert, key=pair.key, ca=pki.ca.cert),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of a CA that did not sign the server's certificate."""
    return Pki(tmp_path_factory.mktemp("other-ca")).ca.cert


def _with_ca(server: RedisServer, query: str) -> str:
    """The worker's URL with ``query`` in place of the server's own ``ssl_ca_certs``."""
    return server.url_for("worker").split("?", 1)[0] + (f"?{query}" if query else "")


def test_a_rediss_url_with_the_ca_connects_and_round_trips(tls_redis: RedisServer) -> None:
    client = connect(load_settings(redis={"url": tls_redis.url_for("admin")}).redis, **TIMEOUTS)
    try:
        client.set("k8see:tls-check", "over tls")
        assert client.get("k8see:tls-check") == b"over tls"
    finally:
        client.close()


def test_celery_broker_and_backend_work_over_tls(tls_redis: RedisServer) -> None:
    settings = load_settings(redis={"url": tls_redis.url_for("admin")})
    app = create_app(settings, name="tls-round-trip")
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == "required"
    queue_name = f"k8see-tls-{uuid.uuid4().hex}"
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        queue = conn.SimpleQueue(queue_name)
        try:
            queue.put({"hello": "tls"})
            message = queue.get(timeout=10)
            assert message.payload == {"hello": "tls"}
            message.ack()
        finally:
            queue.close()
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, {"answer": 42}, "SUCCESS")
    assert app.AsyncResult(task_id).get(timeout=10) == {"answer": 42}


def test_a_real_worker_answers_over_tls(tls_redis: RedisServer, tmp_path: Path) -> None:
    """A ``celery worker`` process (k8see's app) started with the ``rediss://`` URL answers a
    broadcast ping: its broker, result backend and control channel all run over TLS."""
    env = {**os.environ, "K8SEE_REDIS__URL": tls_redis.url_for("worker"),
           "K8SEE_BUILD__WORKDIR": str(tmp_path)}  # fmt: skip
    app = create_app(load_settings(redis={"url": tls_redis.url_for("admin")}), name="tls-ping")
    log = tmp_path / "worker.log"
    with celery_worker(
        "tests.worker.noop_app", queues="noop", concurrency=1, env=env, log=log
    ) as proc:
        deadline = time.monotonic() + 90
        replies: list[dict[str, object]] = []
        while not replies and proc.poll() is None and time.monotonic() < deadline:
            replies = app.control.ping(timeout=2)
        assert replies, log.read_text()
    assert "CERTIFICATE_VERIFY_FAILED" not in log.read_text()


@pytest.mark.parametrize(
    "query", ["", "ssl_ca_certs=OTHER", "NAME"], ids=["no-ca", "another-ca", "not-its-name"]
)
def test_a_certificate_the_client_cannot_verify_is_refused(
    tls_redis: RedisServer, other_ca: Path, query: str
) -> None:
    if query == "NAME":  # the right CA, but a host name the certificate does not hold
        url = tls_redis.url_for("worker").replace("127.0.0.1", "localhost", 1)
    else:
        url = _with_ca(tls_redis, query.replace("OTHER", str(other_ca)))
    settings = load_settings(redis={"url": url})
    with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        connect(settings.redis, **TIMEOUTS).ping()
    app = create_app(settings, name="tls-refused")
    with (
        app.connection_for_write() as conn,
        pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        conn.ensure_connection(max_retries=1)
    with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        app.backend.client.ping()


def test_ssl_cert_reqs_none_turns_verification_off(tls_redis: RedisServer, other_ca: Path) -> None:
    url = _with_ca(tls_redis, f"ssl_cert_reqs=none&ssl_ca_certs={other_ca}")
    settings = load_settings(redis={"url": url})
    assert connect(settings.redis, **TIMEOUTS).ping()
    app = create_app(settings, name="tls-unverified")
    assert app.backend.client.ping()


def _cli(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K8SEE_REDIS__URL": url}
    return subprocess.run(
        [sys.executable, "-m", "k8see", "status", "--progress", "no-such-token"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _clean(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == EXIT_UNREACHABLE, out.stderr
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert REDIS_PASSWORDS["worker"] not in out.stderr + out.stdout
    assert "Hint:" in out.stderr, out.stderr
    return out.stderr


def test_the_cli_says_how_to_trust_a_refused_certificate(
    tls_redis: RedisServer, other_ca: Path
) -> None:
    err = _clean(_cli(_with_ca(tls_redis, f"ssl_ca_certs={other_ca}")))
    assert "cannot reach Redis" in err and "CERTIFICATE_VERIFY_FAILED" in err
    assert "ssl_ca_certs=" in err and "Redis over TLS" in err


def test_the_cli_says_a_plain_url_meets_a_tls_only_redis(tls_redis: RedisServer) -> None:
    plain = tls_redis.url_for("worker").split("?", 1)[0].replace("rediss://", "redis://", 1)
    err = _clean(_cli(plain))
    assert "cannot reach Redis" in err and "rediss://" in err
