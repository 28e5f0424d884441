"""A repository's ``k8s-ee.yaml`` (user input) and the platform's allowlist policy.

Imported by the lightweight enqueue client: only pydantic, pyyaml and the standard library.
"""

from k8see.config.loading import load_repo_config, validate_repo_config
from k8see.config.model import RepoConfig, json_schema, schema_text
from k8see.config.policy import Allowlist, check_allowed, load_allowlist

__all__ = [
    "Allowlist",
    "RepoConfig",
    "check_allowed",
    "json_schema",
    "load_allowlist",
    "load_repo_config",
    "schema_text",
    "validate_repo_config",
]
