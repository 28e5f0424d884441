"""k8see: a preview environment on Kubernetes for every pull request.

The public surface is small: the ``Run`` record and its enums, the error tree, and the
platform settings. Everything else is reached through the ``k8see`` command.
"""

from k8see.errors import (
    BuildFailed,
    Closed,
    ConfigError,
    DeployFailed,
    K8seeError,
    PlatformError,
    PolicyError,
    RetryLater,
    ScanBlocked,
    Stopped,
    Superseded,
    UserError,
)
from k8see.run import Action, Run, Status
from k8see.settings import PlatformSettings

__version__ = "0.1.0"

__all__ = [
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
