"""Per-PR coordination against a real Redis.

Covers: generations grow per PR; the close mark; delivery dedupe; the lease is exclusive,
renewable, fenced (tokens grow), re-entrant for the same run after a crash, and lost leases
stop the holder.
"""

from __future__ import annotations

import time

import pytest
import redis

from k8see import coordination, intake
from k8see.errors import Superseded
from k8see.run import Action, Run


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_generations_grow_per_pr_and_repo_case_is_ignored(client: redis.Redis) -> None:
    assert coordination.current_generation(client, repo="acme/shop", pr=1) == 0
    assert coordination.next_generation(client, repo="acme/shop", pr=1) == 1
    assert coordination.next_generation(client, repo="Acme/Shop", pr=1) == 2
    assert coordination.next_generation(client, repo="acme/shop", pr=2) == 1
    assert coordination.current_generation(client, repo="acme/shop", pr=1) == 2


def test_close_mark_is_set_and_cleared(client: redis.Redis) -> None:
    assert not coordination.is_closed(client, repo="a/b", pr=3)
    coordination.mark_closed(client, repo="a/b", pr=3)
    assert coordination.is_closed(client, repo="a/b", pr=3)
    coordination.clear_closed(client, repo="a/b", pr=3)
    assert not coordination.is_closed(client, repo="a/b", pr=3)


def test_a_redelivered_event_maps_to_the_first_run(client: redis.Redis) -> None:
    def admit(run_id: str) -> intake.Admission:
        run = Run(repo="a/b", pr=1, sha="", generation=0, action=Action.DEPLOY, run_id=run_id)
        return intake.admit(
            client, run=run, command=False, fingerprint="x", mark_ttl_seconds=60,
            run_ttl_seconds=60,
        )  # fmt: skip

    first = admit("run1")
    again = admit("run2")
    assert first.stored is not None and first.duplicate_of is None
    assert again.duplicate_of == "run1" and again.stored is None
    earlier = intake.stored(client, run_id="run1")
    assert earlier is not None and earlier.run.generation == 1 == first.stored.run.generation
    # Only the first delivery bumped the generation.
    assert coordination.current_generation(client, repo="a/b", pr=1) == 1
    assert admit("run3").duplicate_of == "run1"


def test_the_lease_is_exclusive_and_fenced(client: redis.Redis) -> None:
    # Given one run holds the lease
    lease = coordination.acquire_lease(client, repo="a/b", pr=1, owner="r1:deploy", ttl_seconds=30)
    assert lease is not None
    # When another run asks, it is refused
    assert (
        coordination.acquire_lease(client, repo="a/b", pr=1, owner="r2:deploy", ttl_seconds=30)
        is None
    )
    # Then after release the other run gets a larger fencing token
    lease.release()
    second = coordination.acquire_lease(client, repo="a/b", pr=1, owner="r2:deploy", ttl_seconds=30)
    assert second is not None and second.token > lease.token


def test_the_same_run_takes_its_lease_over_after_a_crash(client: redis.Redis) -> None:
    crashed = coordination.acquire_lease(
        client, repo="a/b", pr=1, owner="r1:deploy", ttl_seconds=30
    )
    assert crashed is not None
    redelivered = coordination.acquire_lease(
        client, repo="a/b", pr=1, owner="r1:deploy", ttl_seconds=30
    )
    assert redelivered is not None and redelivered.token > crashed.token
    # The crashed holder is fenced off: renewing its old lease fails.
    with pytest.raises(Superseded):
        crashed.renew()
    redelivered.renew()


def test_an_expired_lease_is_free_and_its_holder_stops(client: redis.Redis) -> None:
    lease = coordination.acquire_lease(client, repo="a/b", pr=1, owner="r1:deploy", ttl_seconds=0.2)
    assert lease is not None
    time.sleep(0.3)
    other = coordination.acquire_lease(client, repo="a/b", pr=1, owner="r2:deploy", ttl_seconds=30)
    assert other is not None
    with pytest.raises(Superseded):
        lease.renew()
    assert coordination.lease_holder(client, repo="a/b", pr=1) == other.value


def test_one_delivery_of_a_stage_holds_it_until_done(client: redis.Redis) -> None:
    """A second delivery of a running stage finds it held; once done, later deliveries find
    it done; a released claim (a failure, a retry) lets the next delivery run it; a re-drive
    forgets the marks."""
    args = {"run_id": "r1", "stage": "build", "ttl_seconds": 20}
    assert coordination.claim_stage(client, token="a", **args) == "claimed"
    assert coordination.claim_stage(client, token="b", **args) == "held"
    assert coordination.claim_stage(client, token="a", **args) == "claimed"  # its own again
    coordination.release_stage(client, run_id="r1", stage="build", token="b")  # not b's
    assert coordination.claim_stage(client, token="b", **args) == "held"
    coordination.release_stage(client, run_id="r1", stage="build", token="a")
    assert coordination.claim_stage(client, token="b", **args) == "claimed"
    coordination.stage_done(client, run_id="r1", stage="build", token="b", ttl_seconds=60)
    assert coordination.claim_stage(client, token="c", **args) == "done"
    coordination.forget_stages(client, run_id="r1", stages=("validate", "build"))
    assert coordination.claim_stage(client, token="c", **args) == "claimed"
