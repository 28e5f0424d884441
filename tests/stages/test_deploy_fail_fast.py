"""Which waiting pods make the deploy stage stop ``helm upgrade --wait`` early.

Covers: a crash loop or an unpullable image stops it; a missing ConfigMap or Secret stops it;
a database Secret the operator has yet to write does not; nor does the kubelet's own
ConfigMap/Secret cache not having synced yet (seen on a busy real node: it retries by itself,
and the first such drill run failed a deploy that would have passed); a quota refusal stops
it unless pods of an earlier rollout are terminating, whose limits free the quota.
"""

from __future__ import annotations

import pytest

from k8see.stages.deploy_failures import fail_fast_reason


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("CrashLoopBackOff", "back-off 10s restarting failed container"),
        ("ImagePullBackOff", 'Back-off pulling image "reg.test/x@sha256:00"'),
        ("CreateContainerConfigError", 'configmap "app-env" not found'),
        ("CreateContainerConfigError", 'secret "shop-secrets" not found'),
    ],
)
def test_a_hopeless_pod_stops_the_rollout(reason: str, message: str) -> None:
    assert fail_fast_reason({"reason": reason, "message": message}) == reason


@pytest.mark.parametrize(
    "message",
    [
        "failed to sync configmap cache: timed out waiting for the condition",
        "failed to sync secret cache: timed out waiting for the condition",
        'secret "app-postgresql-app" not found',
    ],
)
def test_a_config_error_that_fixes_itself_lets_the_rollout_wait(message: str) -> None:
    assert fail_fast_reason({"reason": "CreateContainerConfigError", "message": message}) is None


def test_a_pod_still_starting_lets_the_rollout_wait() -> None:
    assert fail_fast_reason({"reason": "ContainerCreating", "message": ""}) is None
    assert fail_fast_reason({"reason": "", "message": ""}) is None


QUOTA_REFUSAL = (
    'pods "shop-pr-1-app-5b6fcd968b-s24p6" is forbidden: exceeded quota: pr-quota, requested: '
    "limits.cpu=200m, used: limits.cpu=600m, limited: limits.cpu=690m"
)


def test_a_quota_refusal_stops_the_rollout_when_nothing_is_going_away() -> None:
    diagnostics = {"reason": "FailedCreate", "message": QUOTA_REFUSAL, "terminating": 0}
    assert fail_fast_reason(diagnostics) == "FailedCreate"


def test_a_quota_refusal_while_earlier_pods_terminate_lets_the_rollout_wait() -> None:
    # Two pushes in quick succession: the first rollout's old pod is still in its grace
    # period and counts against the quota; the ReplicaSet creates the new pod once it is gone
    # (seen in `make bench`, where the second push's deploy failed as "quota too small").
    diagnostics = {"reason": "FailedCreate", "message": QUOTA_REFUSAL, "terminating": 1}
    assert fail_fast_reason(diagnostics) is None
