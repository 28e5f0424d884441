"""What the platform admits of a valid ``k8s-ee.yaml``: the limits its operators set.

The config model says what a config may say; this module says what this platform lets it
ask for, from ``deploy`` settings the repository cannot change:

- ``ingress.annotations`` keys only from ``deploy.ingress_annotation_allowlist``, and never
  one the platform sets itself (``deploy.ingress_annotations``): snippets and router,
  middleware or TLS keys would reconfigure the shared ingress controller;
- a namespace quota within ``deploy.quota_ceiling_*``: the quota grows with what a config
  asks for (``manifests.quota``), so without a ceiling one PR could reserve the cluster.

Each refusal is a ``ConfigError`` naming the key or the ceiling, for the PR author. Run by
the worker wherever it reads a config (validate, build, deploy) and by ``k8see validate``
and ``k8see render`` with the settings they find.
"""

from __future__ import annotations

from typing import Any

from k8see.config.model import RepoConfig
from k8see.errors import ConfigError, Where
from k8see.manifests import quota
from k8see.names import DEFAULT_CONFIG_PATH
from k8see.settings import DeploySettings

__all__ = ["admit", "check_annotations", "check_quota"]


def admit(
    config: RepoConfig, settings: DeploySettings, *, config_file: str = DEFAULT_CONFIG_PATH
) -> None:
    """Refuse a config that asks for more than this platform allows.

    Raises:
        ConfigError: an ingress annotation outside the allowlist, or a quota above a ceiling.
    """
    data = config.to_dict()
    check_annotations(
        dict((data.get("ingress") or {}).get("annotations") or {}),
        settings,
        config_file=config_file,
    )
    declared = data.get("databases") or {}
    databases = {
        db: declared[db] if isinstance(declared.get(db), dict) else {}
        for db in config.enabled_databases()
    }
    check_quota(databases, data.get("resources"), settings, config_file=config_file)


def check_annotations(
    annotations: dict[str, Any], settings: DeploySettings, *, config_file: str
) -> None:
    """Every user annotation key must be on the platform's allowlist and not its own.

    Raises:
        ConfigError: naming the first key refused and the allowlist.
    """
    allowed = sorted(settings.ingress_annotation_allowlist)
    shown = ", ".join(allowed) if allowed else "none"
    for key in sorted(annotations):
        where = Where(file=config_file, field=f"ingress.annotations.{key}")
        if key in settings.ingress_annotations:
            raise ConfigError(
                f"ingress.annotations sets {key!r}, which the platform sets itself.",
                hint=f"Remove {key} from ingress.annotations; annotations this platform "
                f"allows: {shown}.",
                where=where,
            )
        if key not in settings.ingress_annotation_allowlist:
            raise ConfigError(
                f"ingress.annotations key {key!r} is not allowed on this platform.",
                hint=f"Remove it. The platform's allowlist "
                f"(deploy.ingress_annotation_allowlist) is: {shown}.",
                where=where,
            )


def check_quota(
    databases: dict[str, dict[str, Any]],
    resources: dict[str, Any] | None,
    settings: DeploySettings,
    *,
    config_file: str,
) -> None:
    """The namespace quota this config needs must stay within the platform's ceilings.

    Raises:
        ConfigError: naming the amount needed, the ceiling and its setting.
    """
    hard = quota.quota_hard(databases=databases, resources=resources)
    checks = (
        (
            "CPU limits",
            quota.cpu_millicores(hard["limits.cpu"]),
            settings.quota_ceiling_cpu_millicores,
            "quota_ceiling_cpu_millicores",
            quota.format_cpu,
        ),
        (
            "memory limits",
            quota.memory_mib(hard["limits.memory"]),
            settings.quota_ceiling_memory_mib,
            "quota_ceiling_memory_mib",
            quota.format_mib,
        ),
        (
            "storage",
            quota.memory_mib(hard["requests.storage"]),
            settings.quota_ceiling_storage_mib,
            "quota_ceiling_storage_mib",
            quota.format_mib,
        ),
    )
    for what, needed, ceiling, setting, fmt in checks:
        if needed > ceiling:
            raise ConfigError(
                f"This config needs {fmt(needed)} of {what} for its namespace, above the "
                f"platform's ceiling of {fmt(ceiling)} (deploy.{setting}).",
                hint="Lower resources, a database's resources, storage or instances; or ask "
                "the platform team to raise the ceiling.",
                where=Where(file=config_file, field="databases" if databases else "resources"),
            )
