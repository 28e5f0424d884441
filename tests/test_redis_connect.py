"""Redis high availability: the connection factory, Celery's Sentinel URLs and ``WAIT``.

Covers:
- ``redis.sentinels`` entries are checked (a bad one is a settings error that names it);
- Celery gets one ``sentinel://`` URL per Sentinel with the master's credentials and db, and
  ``master_name`` (and the Sentinels' own password) as transport options, for the broker
  and the result backend; a ``rediss://`` master gets TLS options;
- against a real group (master, replica, three Sentinels): k8see's client finds the master,
  reaches the promoted replica after the master is SIGKILLed, and ``intake.confirm`` counts
  the replica's acknowledgement;
- ``min_replica_acks`` with no replica to confirm: ``k8see enqueue`` exits 3 with a hint and
  no traceback; the event stays admitted on the master, and the same enqueue retried with
  a replica up is queued exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from k8see import intake, redis_acl, state
from k8see.app import create_app
from k8see.redis_connect import celery_redis, celery_ssl, connect
from k8see.settings import load_settings
from tests.conftest import ROOT, require_tool
from tests.fixtures.sentinel import MASTER_NAME, SentinelGroup


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    found = SentinelGroup(
        tmp_path / "sentinel",
        redis_server=require_tool("redis-server"),
        redis_sentinel=require_tool("redis-sentinel"),
    )
    try:
        yield found.start()
    finally:
        found.stop()


@pytest.mark.parametrize("entry", ["sentinel", "host:port", "host:0", ":26379", "h:70000"])
def test_a_bad_sentinel_address_is_a_settings_error_naming_it(entry: str) -> None:
    with pytest.raises(ValidationError, match="is not host:port"):
        load_settings(redis={"sentinels": f"good:26379,{entry}"})


def test_celery_gets_sentinel_urls_with_the_masters_credentials() -> None:
    settings = load_settings(
        redis={
            "url": "redis://k8see-worker:p%40ss@ignored:6379/2",
            "sentinels": "s-0:26379, s-1:26380",
            "sentinel_master_name": "main",
            "sentinel_password": "sentinel-secret",
        }
    )
    url, options = celery_redis(settings.redis)
    assert url == (
        "sentinel://k8see-worker:p%40ss@s-0:26379/2;sentinel://k8see-worker:p%40ss@s-1:26380/2"
    )
    assert options == {"master_name": "main", "sentinel_kwargs": {"password": "sentinel-secret"}}
    app = create_app(settings, name="sentinel-conf")
    assert app.conf.broker_url == url and app.conf.result_backend == url
    assert app.conf.broker_transport_options["master_name"] == "main"
    assert app.conf.broker_transport_options["visibility_timeout"] > 0
    assert app.conf.result_backend_transport_options["master_name"] == "main"
    assert celery_ssl(settings.redis) is None


def test_a_tls_master_behind_sentinels_gets_tls_options() -> None:
    settings = load_settings(
        redis={"url": "rediss://:pw@x:6380/0?ssl_cert_reqs=required", "sentinels": "s:26379"}
    )
    assert celery_ssl(settings.redis) == {"ssl_cert_reqs": "required"}
    app = create_app(settings, name="sentinel-tls")
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": "required"}


def test_one_redis_without_sentinels_is_the_url_as_it_stands() -> None:
    settings = load_settings(redis={"url": "redis://127.0.0.1:6399/3"})
    assert celery_redis(settings.redis) == ("redis://127.0.0.1:6399/3", {})
    client = connect(settings.redis)
    assert client.connection_pool.connection_kwargs["port"] == 6399


def test_the_client_follows_the_master_through_a_failover(group: SentinelGroup) -> None:
    settings = load_settings(redis={"url": group.url, "sentinels": group.sentinels})
    client = connect(settings.redis, socket_timeout=2, socket_connect_timeout=2)
    # Given a write the replica confirmed
    client.set("k8see:probe", "before")
    assert intake.confirm(client, run_id="r1", replicas=1, timeout_seconds=5) == 1
    # When the master is SIGKILLed and the Sentinels promote the replica
    old = group.master_port()
    group.kill_master()
    group.wait_for_failover()
    assert group.master_port() != old
    # Then the same client reaches the new master (after at most a few refused tries)
    for _ in range(40):
        try:
            assert client.get("k8see:probe") == b"before"
            client.set("k8see:probe", "after")
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.25)
    assert client.get("k8see:probe") == b"after"
    # And with no replica left, a confirmation counts none
    assert intake.confirm(client, run_id="r2", replicas=1, timeout_seconds=0.3) == 0


def _enqueue(env: dict[str, str], pr: int = 7) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "k8see", "enqueue", "--repo", "acme/shop", "--pr", str(pr),
            "--action", "opened", "--sha", "a" * 40, "--ref", "feature", "--json"]  # fmt: skip
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_an_event_no_replica_confirmed_exits_3_and_a_retry_queues_it_once(
    redis_url: str, group: SentinelGroup
) -> None:
    # Given a single Redis (no replica) and an enqueue that wants one replica's confirmation
    env = {**os.environ, "K8SEE_REDIS__URL": redis_url, "K8SEE_REDIS__MIN_REPLICA_ACKS": "1",
           "K8SEE_REDIS__REPLICA_ACK_TIMEOUT_SECONDS": "0.5"}  # fmt: skip
    done = _enqueue(env)
    # Then the enqueue fails as "unreachable", with a hint, and no traceback
    assert done.returncode == 3, done.stdout + done.stderr
    assert "0 of the 1 Redis replica(s) required confirmed the event" in done.stderr
    assert "Hint: run the same enqueue again" in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["exit_code"] == 3
    # And the master kept the event: queued once, its record written
    client = redis.Redis.from_url(redis_url)
    assert client.llen("default") == 1
    assert (state.get(client, repo="acme/shop", pr=7) or {}).get("status") == "queued"
    # When the same event is enqueued again with the replica's confirmation on offer
    # (the master of a real group, holding the same data)
    ha = connect(load_settings(redis={"url": group.url, "sentinels": group.sentinels}).redis)
    for key in client.keys("*"):
        ha.restore(key, 0, client.dump(key), replace=True)
    again = _enqueue({**env, **group.env()})
    # Then it is accepted as the same run, and nothing is queued twice
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["duplicate_of"]
    assert ha.llen("default") == 1
    master = redis.Redis(port=group.master_port())
    assert master.llen("default") == 1


def test_sentinel_group_names_its_master() -> None:
    # The drill and the soak rely on this name; the chart and compose file use it too.
    assert load_settings().redis.sentinel_master_name == MASTER_NAME


def test_the_high_availability_defaults() -> None:
    # One Redis and no waiting unless an installation asks for Sentinel (the chart and the
    # compose override set min_replica_acks 1 with it).
    redis_settings = load_settings().redis
    assert redis_settings.sentinels == ""
    assert redis_settings.min_replica_acks == 0
    assert redis_settings.replica_ack_timeout_seconds == 2.0


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("K8SEE_REDIS__SENTINELS", "no-port-here", "entry 'no-port-here' is not host:port"),
        ("K8SEE_REDIS__MIN_REPLICA_ACKS", "-1", "redis.min_replica_acks"),
    ],
)  # fmt: skip
def test_bad_ha_settings_are_a_clear_error_without_a_traceback(
    variable: str, value: str, says: str
) -> None:
    env = {**os.environ, "K8SEE_REDIS__URL": "redis://:hunter2-secret@127.0.0.1:1/0",
           variable: value}  # fmt: skip
    argv = [sys.executable, "-m", "k8see", "enqueue", "--repo", "acme/shop", "--pr", "1",
            "--action", "opened", "--sha", "a" * 40]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "The platform settings are invalid" in done.stderr and says in done.stderr
    assert "Hint: check the K8SEE_* variables" in done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr


def test_a_submission_no_replica_confirmed_exits_3_and_a_retry_is_admitted_once(
    redis_urls: dict[str, str], group: SentinelGroup
) -> None:
    # Given the enqueue credential on a single Redis (no replica), wanting one confirmation
    env = {**os.environ, "K8SEE_REDIS__URL": redis_urls["enqueue"],
           "K8SEE_REDIS__MIN_REPLICA_ACKS": "1",
           "K8SEE_REDIS__REPLICA_ACK_TIMEOUT_SECONDS": "0.5"}  # fmt: skip
    done = _enqueue(env)
    # Then the submission fails as "unreachable", with a hint, and no traceback
    assert done.returncode == 3, done.stdout + done.stderr
    assert "0 of the 1 Redis replica(s) required confirmed the event" in done.stderr
    assert "Traceback" not in done.stderr
    # And the master kept the request on the intake list for a worker
    admin = redis.Redis.from_url(redis_urls["admin"])
    assert admin.llen("k8see:intake") == 1
    # When the same submission goes to a master with a replica (ACL users set on it; ACL
    # commands are not replicated, and only the master checks this credential)
    master = redis.Redis(port=group.master_port())
    redis_acl.apply(master, {"enqueue": "pw-enqueue"}, default_off=False)
    enqueue_url = redis_acl.url_for(f"redis://127.0.0.1:{group.master_port()}/0", "enqueue",
                                    "pw-enqueue")  # fmt: skip
    again = _enqueue({**env, "K8SEE_REDIS__URL": enqueue_url})
    # Then the replica's confirmation makes it a success, and the request is on the replica
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["progress"]
    replica = next(port for port in group.ports.values() if port != group.master_port())
    assert redis.Redis(port=replica).llen("k8see:intake") == 1
