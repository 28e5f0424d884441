"""The public surface of ``k8see`` is pinned: changing it needs a visible test change."""

import k8see


def test_public_names_are_pinned() -> None:
    assert sorted(k8see.__all__) == sorted(
        [
            "Action",
            "BuildFailed",
            "Closed",
            "ConfigError",
            "DeployFailed",
            "K8seeError",
            "PlatformError",
            "PlatformSettings",
            "PolicyError",
            "RetryLater",
            "Run",
            "ScanBlocked",
            "Status",
            "Stopped",
            "Superseded",
            "UserError",
            "__version__",
        ]
    )
    for name in k8see.__all__:
        assert hasattr(k8see, name)
