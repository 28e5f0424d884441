"""Capacity admission decided in a real Redis (``k8see.capacity``) and its settings.

Covers: the ceilings (environment count, quota CPU) admit until full and then queue; the
queue is FIFO within a project and round robin across projects, and each waiter's position
says so; a released place admits the head; a newer run of a waiting PR keeps its place; a
closed PR leaves the queue and is never admitted; a redeploy of an admitted environment and
an environment that already runs pass over the ceiling; threads racing for the last slot
get it exactly once; bad settings values are a clear error.
"""

from __future__ import annotations

import json
import threading

import pytest
import redis
from pydantic import ValidationError

from k8see import capacity
from k8see.settings import CapacitySettings, PlatformSettings

SMALL = {"cpu_millicores": 100, "memory_mib": 128, "storage_mib": 0}


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def admit(
    client: redis.Redis,
    settings: CapacitySettings,
    project: str,
    pr: int,
    *,
    generation: int = 1,
    demand: dict[str, int] | None = None,
    exists: bool = False,
) -> capacity.Decision:
    run = json.dumps({"pr": pr, "project": project, "generation": generation})
    return capacity.admit(
        client,
        settings=settings,
        env=capacity.env_key(f"acme/{project}", pr),
        project=project,
        demand=demand or SMALL,
        run=run,
        generation=generation,
        exists=exists,
    )


def test_environments_are_admitted_until_the_ceiling_then_wait(client: redis.Redis) -> None:
    settings = CapacitySettings(max_environments=2)
    assert admit(client, settings, "shop", 1).admitted
    assert admit(client, settings, "shop", 2).admitted
    third = admit(client, settings, "shop", 3)
    assert not third.admitted
    assert third.position == 1
    # A redeploy of an admitted environment passes, however full the platform is.
    assert admit(client, settings, "shop", 1, generation=2).admitted


def test_quota_cpu_ceiling_counts_the_sum_of_hard_limits(client: redis.Redis) -> None:
    settings = CapacitySettings(max_cpu="250m")
    assert admit(client, settings, "shop", 1).admitted
    assert admit(client, settings, "shop", 2).admitted
    assert not admit(client, settings, "shop", 3).admitted  # 300m > 250m


def test_fair_queue_is_fifo_per_project_and_round_robin_across_projects(
    client: redis.Redis,
) -> None:
    # Given a full platform and waiters: a1 a2 a3 from project a, then b1 b2, then c1
    settings = CapacitySettings(max_environments=1)
    assert admit(client, settings, "zero", 1).admitted
    for project, pr in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)]:
        assert not admit(client, settings, project, pr).admitted
    # Then positions follow round robin across projects, FIFO within each
    expected = ["acme/a#1", "acme/b#1", "acme/c#1", "acme/a#2", "acme/b#2", "acme/a#3"]
    assert capacity.order(client, settings=settings) == expected
    assert capacity.positions(client, settings=settings)["acme/c#1"] == 3
    # And each release admits exactly the next one, in that order
    admitted = []
    holder = "acme/zero#1"
    for _ in expected:
        runs = capacity.release(client, settings=settings, env=holder)
        assert len(runs) == 1
        run = json.loads(runs[0])
        holder = f"acme/{run['project']}#{run['pr']}"
        admitted.append(holder)
    assert admitted == expected
    assert capacity.order(client, settings=settings) == []


def test_a_newcomer_never_jumps_a_waiting_queue(client: redis.Redis) -> None:
    settings = CapacitySettings(max_cpu="250m")
    assert admit(client, settings, "shop", 1, demand={"cpu_millicores": 200}).admitted
    assert not admit(client, settings, "shop", 2, demand={"cpu_millicores": 200}).admitted
    # 50m are free, but the head (200m) waits, so a small newcomer waits behind it.
    late = admit(client, settings, "blog", 1, demand={"cpu_millicores": 10})
    assert not late.admitted
    assert late.position == 2


def test_a_newer_push_keeps_the_waiting_place_and_replaces_the_run(client: redis.Redis) -> None:
    settings = CapacitySettings(max_environments=1)
    assert admit(client, settings, "zero", 1).admitted
    assert not admit(client, settings, "shop", 7).admitted
    assert not admit(client, settings, "blog", 1).admitted
    # When PR 7 gets a newer push while it waits
    again = admit(client, settings, "shop", 7, generation=2)
    # Then it keeps position 1, and the run admitted later is the newer one
    assert again.position == 1
    assert capacity.order(client, settings=settings) == ["acme/shop#7", "acme/blog#1"]
    # An older generation delivered late does not replace it
    admit(client, settings, "shop", 7, generation=1)
    runs = capacity.release(client, settings=settings, env="acme/zero#1")
    assert [json.loads(r)["generation"] for r in runs] == [2]


def test_a_pr_closed_while_waiting_leaves_the_queue_and_is_never_admitted(
    client: redis.Redis,
) -> None:
    settings = CapacitySettings(max_environments=1)
    assert admit(client, settings, "zero", 1).admitted
    assert not admit(client, settings, "shop", 1).admitted
    assert not admit(client, settings, "shop", 2).admitted
    # PR 1 closes while waiting: its destroy releases it, and nothing is admitted for it
    assert capacity.release(client, settings=settings, env="acme/shop#1") == []
    assert capacity.order(client, settings=settings) == ["acme/shop#2"]
    runs = capacity.release(client, settings=settings, env="acme/zero#1")
    assert [json.loads(r)["pr"] for r in runs] == [2]
    assert set(capacity.admitted(client)) == {"acme/shop#2"}


def test_a_running_environment_is_counted_over_the_ceiling_never_turned_away(
    client: redis.Redis,
) -> None:
    settings = CapacitySettings(max_environments=1)
    assert admit(client, settings, "shop", 1).admitted
    assert admit(client, settings, "shop", 2, exists=True).admitted
    assert len(capacity.admitted(client)) == 2
    assert not admit(client, settings, "shop", 3).admitted
    # Released one at a time: the first release still leaves the platform full.
    assert capacity.release(client, settings=settings, env="acme/shop#1") == []
    assert len(capacity.release(client, settings=settings, env="acme/shop#2")) == 1


def test_racing_deploys_get_the_last_slot_exactly_once(redis_url: str) -> None:
    settings = CapacitySettings(max_environments=3)
    client = redis.Redis.from_url(redis_url)
    assert admit(client, settings, "zero", 1).admitted
    assert admit(client, settings, "zero", 2).admitted
    barrier = threading.Barrier(8)
    results: dict[int, bool] = {}

    def race(pr: int) -> None:
        own = redis.Redis.from_url(redis_url)
        barrier.wait()
        results[pr] = admit(own, settings, f"p{pr}", pr).admitted
        own.close()

    threads = [threading.Thread(target=race, args=(pr,)) for pr in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results.values()) == 1
    assert len(capacity.admitted(client)) == 3
    assert len(capacity.order(client, settings=settings)) == 7


def test_no_ceiling_means_capacity_is_off() -> None:
    assert not capacity.enabled(CapacitySettings())
    assert not capacity.enabled(CapacitySettings(max_environments=0))
    assert capacity.enabled(CapacitySettings(max_memory="1Gi"))
    assert capacity.limits(CapacitySettings(max_cpu="1.5", max_storage="1Gi")) == {
        "environments": 0,
        "cpu_millicores": 1500,
        "memory_mib": 0,
        "storage_mib": 1024,
    }


@pytest.mark.parametrize(
    ("env", "value", "said"),
    [
        ("K8SEE_CAPACITY__MAX_CPU", "2 cores", "capacity.max_cpu"),
        ("K8SEE_CAPACITY__MAX_MEMORY", "-1Gi", "capacity.max_memory"),
        ("K8SEE_CAPACITY__MAX_STORAGE", "1e999", "capacity.max_storage"),
        ("K8SEE_CAPACITY__MAX_ENVIRONMENTS", "-3", "max_environments"),
    ],
)
def test_bad_settings_values_are_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, said: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as caught:
        PlatformSettings()
    assert said in str(caught.value)


def test_recount_corrects_an_admitted_environment_only(client: redis.Redis) -> None:
    settings = CapacitySettings(max_cpu="250m")
    assert admit(client, settings, "shop", 1, demand={"cpu_millicores": 10}).admitted
    # The deploy's verified config asks for more than the message said: it counts from now on
    assert capacity.recount(client, env="acme/shop#1", demand={"cpu_millicores": 200})
    assert capacity.admitted(client)["acme/shop#1"]["cpu_millicores"] == 200
    assert not admit(client, settings, "shop", 2, demand={"cpu_millicores": 100}).admitted
    # A recount never admits an environment that is not
    assert not capacity.recount(client, env="acme/shop#9", demand={"cpu_millicores": 1})
    assert "acme/shop#9" not in capacity.admitted(client)
