"""Where GitHub's published descriptions are on this machine (``scripts/fetch-github-specs.sh``).

The versions here and in the script are the same pins; ``make bootstrap`` fetches them once per
machine into the user's cache (``K8SEE_GITHUB_SPECS`` overrides the folder).
"""

from __future__ import annotations

import os
from pathlib import Path

OPENAPI_PACKAGE = "@octokit/openapi"
OPENAPI_VERSION = "23.0.2"
WEBHOOKS_PACKAGE = "@octokit/webhooks-schemas"
WEBHOOKS_VERSION = "7.6.1"


def specs_dir() -> Path:
    explicit = os.environ.get("K8SEE_GITHUB_SPECS")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "k8see" / "github-specs"


def openapi_path() -> Path:
    """GitHub's OpenAPI 3.0.3 description of api.github.com."""
    return specs_dir() / f"openapi-{OPENAPI_VERSION}" / "api.github.com.json"


def webhooks_path() -> Path:
    """The webhook payload schemas (one JSON schema with a definition per event and action)."""
    return specs_dir() / f"webhooks-schemas-{WEBHOOKS_VERSION}" / "schema.json"


MISSING_HINT = "run `make bootstrap` (scripts/fetch-github-specs.sh fetches it from npm)"
