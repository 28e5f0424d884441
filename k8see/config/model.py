"""The ``k8s-ee.yaml`` schema as pydantic models.

Every field, default and constraint of the reference schema (docs/configuration.md "k8s-ee.yaml") is
here, so the JSON Schema in ``config/k8s-ee.schema.json`` is generated from this module rather
than kept by hand. Where the reference has a gap this module closes it on purpose:

- ``app.healthPath`` accepts any path without whitespace or control characters, query strings
  included, so what validates also deploys (the reference's deploy step was stricter).
- ``resources.*.cpu`` accepts fractional cores (``"0.5"``, or the YAML number ``0.5``), as the
  reference's documentation promised and its pattern refused.
- ``image.repository`` must be a valid lowercase repository reference; the reference accepted
  anything and then ignored it.
- ``envFrom`` names and ``ingress.annotations`` keys must be valid Kubernetes names, because
  they end up in manifests where Kubernetes would refuse them later, with a worse message.

Values are strict: YAML ``8080`` is not the string ``"8080"``. Unknown keys are refused
everywhere except inside database objects, whose extra keys pass through to the subcharts.

Why one module of about 500 lines: it is one schema, ``RepoConfig`` and the models of its keys,
and the JSON Schema is generated from it as a whole (``json_schema``). The loading, the
platform's policy and the error explanations already live beside it (``loading``, ``policy``,
``explain``); splitting the models further would only scatter one document's fields.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from k8see.quantity import parse_quantity

__all__ = [
    "DATABASES",
    "PLATFORM_KEYS",
    "SCHEMA_ID",
    "AppConfig",
    "DatabasesConfig",
    "EnvFromSource",
    "ImageConfig",
    "IngressConfig",
    "MetricsConfig",
    "RepoConfig",
    "ResourcesConfig",
    "json_schema",
    "schema_text",
]

#: The schema's identity, not its location: k8see publishes the schema at no URL, so a URL here
#: would promise a download that fails. Editors find the file through the ``$schema`` comment
#: (a path, or where the platform serves it).
SCHEMA_ID = "urn:k8see:schema:k8s-ee.yaml"
#: Subchart values only the platform sets; a database object naming one is refused.
PLATFORM_KEYS = frozenset({"securityContext", "containerSecurityContext", "podSecurityContext"})
#: The databases the app chart has subcharts for, in the reference's order.
DATABASES = ("postgresql", "mongodb", "redis", "minio", "mariadb")

PROJECT_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$"
#: A URL path: starts with "/", no whitespace or control characters; a query string is fine.
HTTP_PATH_PATTERN = r"^/[^\s\x00-\x1f\x7f]*$"
CPU_PATTERN = r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$"
MEMORY_PATTERN = r"^[0-9]+(Mi|Gi)$"
STORAGE_PATTERN = r"^[0-9]+(Mi|Gi|Ti)$"
INTERVAL_PATTERN = r"^[0-9]+(s|m|h)$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
WRITABLE_DIR_PATTERN = r"^/[a-zA-Z0-9._/-]+$"
#: A Kubernetes object name (DNS subdomain, RFC 1123).
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
#: A Kubernetes annotation key: optional DNS-subdomain prefix, then a name of up to 63 chars.
ANNOTATION_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_DOMAIN = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]+)?"
#: An image repository without tag or digest, lowercase, as the distribution spec names it.
IMAGE_REPOSITORY_PATTERN = rf"^(?:{_IMAGE_DOMAIN}/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*$"


class _Strict(BaseModel):
    """Base of every section: strict scalars and no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _relative_path(value: str) -> str:
    """Refuse paths that could leave the checkout: absolute, ``..`` segments, odd characters."""
    if not value or value.startswith("/") or "\\" in value:
        raise ValueError("must be a relative path inside the repository (no leading '/')")
    if any(part == ".." for part in value.split("/")):
        raise ValueError("must not contain a '..' segment")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError("must not contain control characters")
    return value


def _cpu_from_number(value: Any) -> Any:
    """Let YAML numbers (``cpu: 0.5``, ``cpu: 1``) stand for the quoted quantity."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value


Cpu = Annotated[
    str,
    BeforeValidator(_cpu_from_number),
    StringConstraints(pattern=CPU_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": CPU_PATTERN},
                {"type": "number", "minimum": 0},
            ]
        }
    ),
]
Memory = Annotated[str, StringConstraints(pattern=MEMORY_PATTERN)]
HttpPath = Annotated[str, StringConstraints(pattern=HTTP_PATH_PATTERN, max_length=1024)]
#: What the relative-path check refuses, for editors (the validator is the source of truth).
_RELATIVE_PATH_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "pattern": r"^(?!/)[^\\\x00-\x1f\x7f]+$",
    "not": {"pattern": r"(^|/)\.\.(/|$)"},
}
RelativePath = Annotated[
    str,
    BeforeValidator(lambda v: _relative_path(v) if isinstance(v, str) else v),
    WithJsonSchema(_RELATIVE_PATH_SCHEMA),
]


class AppConfig(_Strict):
    """How the platform reaches the application inside its container."""

    port: int = Field(
        3000,
        ge=1,
        le=65535,
        description="Port the application listens on (containerPort, NetworkPolicy, probes).",
    )
    health_path: HttpPath = Field(
        "/health",
        alias="healthPath",
        description="Path answering 2xx when the app is healthy; used by the probes and the "
        "post-deploy check. Any path starting with '/', query string allowed.",
    )
    metrics_path: HttpPath | None = Field(
        None,
        alias="metricsPath",
        description="Path Prometheus scrapes when metrics are enabled (chart default /metrics).",
    )


class ImageConfig(_Strict):
    """Where the image is built from."""

    context: RelativePath = Field(
        ".", description="Build context, relative to the repository root."
    )
    dockerfile: RelativePath = Field(
        "Dockerfile", description="Dockerfile path, relative to the build context."
    )
    repository: (
        Annotated[str, StringConstraints(pattern=IMAGE_REPOSITORY_PATTERN, max_length=255)] | None
    ) = Field(
        None,
        description="Custom image repository (lowercase, no tag); default "
        "<registry>/<owner>/<repo>/<projectId>.",
    )


class ResourceRequests(_Strict):
    """Requests; a field left out keeps its own default (the reference's chart defaults)."""

    cpu: Cpu = Field("50m", description="CPU: millicores ('500m') or cores ('1', '0.5').")
    memory: Memory = Field("128Mi", description="Memory: Mi or Gi ('256Mi').")


class ResourceLimits(_Strict):
    """Limits; a field left out keeps its own default, so ``limits: {memory: 512Mi}`` alone
    keeps the default CPU limit (the reference filled every field from its defaults)."""

    cpu: Cpu = Field("200m", description="CPU: millicores ('500m') or cores ('1', '0.5').")
    memory: Memory = Field(
        "384Mi",
        description="Memory: Mi or Gi ('256Mi'); the reference documents 512Mi as a maximum.",
    )


class ResourcesConfig(_Strict):
    """Requests and limits of the app container (the chart defaults of the reference)."""

    requests: ResourceRequests = Field(default_factory=ResourceRequests)
    limits: ResourceLimits = Field(
        default_factory=ResourceLimits,
        description="Limits; the reference documents a 512Mi memory maximum.",
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourcesConfig:
        """Kubernetes refuses a pod whose request exceeds its limit; say so here, early.

        The reference never passed resources to Helm, so raising only ``requests`` over the
        default limits went unnoticed; k8see applies them, so it must catch the mismatch.
        """
        problems = []
        if parse_quantity(self.requests.cpu) > parse_quantity(self.limits.cpu):
            problems.append(
                f"requests.cpu {self.requests.cpu} is above limits.cpu {self.limits.cpu}"
            )
        if parse_quantity(self.requests.memory) > parse_quantity(self.limits.memory):
            problems.append(
                f"requests.memory {self.requests.memory} is above limits.memory "
                f"{self.limits.memory}"
            )
        if problems:
            raise ValueError("; ".join(problems) + " (raise the limits or lower the requests)")
        return self


class NameRef(_Strict):
    name: Annotated[str, StringConstraints(pattern=K8S_NAME_PATTERN)] = Field(
        description="Name of a Secret or ConfigMap in the PR's namespace."
    )


class EnvFromSource(_Strict):
    """One ``envFrom`` item: exactly one of ``secretRef`` or ``configMapRef``."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["secretRef"]}, {"required": ["configMapRef"]}]}
    )

    secret_ref: NameRef | None = Field(None, alias="secretRef")
    config_map_ref: NameRef | None = Field(None, alias="configMapRef")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("each envFrom item needs exactly one of secretRef or configMapRef")
        return self


Storage = Annotated[str, StringConstraints(pattern=STORAGE_PATTERN)]


#: A nested subchart value (probes, security contexts, PostgreSQL parameters...), passed as is;
#: the subchart's values.schema.json checks its inside at deploy time.
Nested = dict[str, Any] | None


def _opt(description: str, alias: str | None = None) -> Any:
    """A pass-through subchart value: left out of ``to_dict`` when not given, so the
    subchart's own default applies."""
    return Field(None, alias=alias, description=description, exclude_if=lambda v: v is None)


class _Database(BaseModel):
    """Object form of a database. Besides the documented options, each declares the subchart
    values the reference passed through (its ``additionalProperties: true``), so that a
    misspelt one is refused here, with its line and a suggestion, rather than by the
    subchart's schema after the build. ``tests/config`` keeps each list equal to its
    subchart's ``values.schema.json``, except ``PLATFORM_KEYS``: security contexts are the
    platform's (a user's ``privileged: true`` or ``SYS_ADMIN`` would validate otherwise), so
    they are refused here and set by the subcharts' own values."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    enabled: bool = Field(True, description="false keeps the options but disables the database.")
    resources: Nested = _opt("Container requests and limits (cpu, memory).")


class PostgresqlOptions(_Database):
    version: str = Field("16", description="PostgreSQL major version.")
    storage: Storage = Field("1Gi", description="Volume size.")
    instances: int | None = _opt("CloudNativePG instances (default 1).")
    database: str | None = _opt("Application database name (default app).")
    owner: str | None = _opt("Owner role of the database (default app).")
    image_repository: str | None = _opt("PostgreSQL image repository.", "imageRepository")
    postgresql: Nested = _opt("postgresql.parameters and pg_hba, merged over the defaults.")
    bootstrap: Nested = _opt("initSQL and postInitApplicationSQL lists.")
    probes: Nested = _opt("probes.startup failureThreshold and periodSeconds.")


class MongodbOptions(_Database):
    version: str | None = Field(None, description="MongoDB version (chart default 7.0.5).")
    storage: Storage = Field("1Gi", description="Volume size.")
    members: int | None = _opt("Replica set members (default 1).")
    database: str | None = _opt("Database name (default app).")
    username: str | None = _opt("Application user (default app).")
    agent: Nested = _opt("The MongoDB agent container's resources.")
    startup_probe: Nested = _opt("Startup probe settings.", "startupProbe")


class RedisOptions(_Database):
    version: str | None = _opt("Redis version (default 7.4).")
    auth: Nested = _opt("auth.enabled (default true).")
    config: Nested = _opt("maxmemory and maxmemoryPolicy.")
    image_repository: str | None = _opt("Redis image repository.", "imageRepository")
    pull_policy: str | None = _opt("Image pull policy.", "pullPolicy")
    startup_probe: Nested = _opt("Startup probe settings.", "startupProbe")


class MinioOptions(_Database):
    storage: Storage = Field("1Gi", description="Volume size.")
    bucket: str | None = _opt("Bucket created at start (default data).")
    servers: int | None = _opt("MinIO servers (default 1).")
    volumes_per_server: int | None = _opt("Volumes per server (default 1).", "volumesPerServer")
    image: str | None = _opt("MinIO image.")


class MariadbOptions(_Database):
    version: str = Field("11.4", description="MariaDB version.")
    storage: Storage = Field("1Gi", description="Volume size.")
    database: str | None = _opt("Database name (default app).")
    username: str | None = _opt("Application user (default app).")
    config: Nested = _opt("maxConnections and innodbBufferPoolSize.")
    image_repository: str | None = _opt("MariaDB image repository.", "imageRepository")
    pull_policy: str | None = _opt("Image pull policy.", "pullPolicy")
    startup_probe: Nested = _opt("Startup probe settings.", "startupProbe")


def _db_shape(value: Any) -> str:
    if isinstance(value, dict | _Database):
        return "object"
    return "null" if value is None else "bool"


def _db_field(options: type[_Database]) -> Any:
    """``true``/``false``/``null`` or an options object, told apart by the value's shape."""
    return Annotated[
        Annotated[bool, Tag("bool")]
        | Annotated[options, Tag("object")]
        | Annotated[None, Tag("null")],
        Discriminator(_db_shape),
    ]


class DatabasesConfig(_Strict):
    """Databases created in the PR's namespace. All off by default."""

    postgresql: _db_field(PostgresqlOptions) = False  # type: ignore[valid-type]
    mongodb: _db_field(MongodbOptions) = False  # type: ignore[valid-type]
    redis: _db_field(RedisOptions) = False  # type: ignore[valid-type]
    minio: _db_field(MinioOptions) = False  # type: ignore[valid-type]
    mariadb: _db_field(MariadbOptions) = False  # type: ignore[valid-type]

    def enabled_names(self) -> list[str]:
        """``true`` → on; ``false``/``null``/absent → off; object → on unless ``enabled: false``."""
        return [name for name in DATABASES if self.is_enabled(name)]

    def is_enabled(self, name: str) -> bool:
        value = getattr(self, name)
        if isinstance(value, _Database):
            return value.enabled
        return value is True

    def subchart_values(self, name: str) -> dict[str, Any]:
        """The subchart values: ``true`` → ``{"enabled": true}``; object → object + enabled.

        Only the keys the user wrote are passed (plus ``enabled``), so the subchart's own
        defaults apply to everything else, as in the reference.
        """
        if name not in DATABASES:
            raise KeyError(name)
        value = getattr(self, name)
        if isinstance(value, _Database):
            data = value.model_dump(mode="json", exclude_unset=True)
            data["enabled"] = value.enabled
            return data
        return {"enabled": value is True}


class IngressConfig(_Strict):
    enabled: bool = Field(True, description="Expose the preview URL through an Ingress.")
    annotations: dict[Annotated[str, StringConstraints(pattern=ANNOTATION_KEY_PATTERN)], str] = (
        Field(default_factory=dict, description="Extra annotations on the Ingress.")
    )


class MetricsConfig(_Strict):
    enabled: bool = Field(False, description="Create a ServiceMonitor for the app.")
    interval: Annotated[str, StringConstraints(pattern=INTERVAL_PATTERN)] = Field(
        "30s", description="Scrape interval, e.g. '30s', '1m'."
    )


EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
WritableDir = Annotated[
    str,
    StringConstraints(pattern=WRITABLE_DIR_PATTERN),
    WithJsonSchema(
        {"type": "string", "pattern": WRITABLE_DIR_PATTERN, "not": {"pattern": r"(^|/)\.\.(/|$)"}}
    ),
]


class RepoConfig(_Strict):
    """A repository's ``k8s-ee.yaml``, validated, with defaults applied."""

    model_config = ConfigDict(
        title="k8s-ee.yaml",
        json_schema_extra={
            "$id": SCHEMA_ID,
            "$schema": "https://json-schema.org/draft/2020-12/schema",
        },
    )

    project_id: Annotated[
        str, StringConstraints(min_length=1, max_length=20, pattern=PROJECT_ID_PATTERN)
    ] = Field(
        alias="projectId",
        description="Unique id: the namespace {projectId}-pr-{N}, the host and the image name.",
    )
    trigger: Literal["automatic", "on-demand"] = Field(
        "automatic",
        description="automatic: every PR gets an environment; on-demand: only after "
        "/deploy-preview.",
    )
    app: AppConfig = Field(default_factory=AppConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    env: dict[EnvName, str] = Field(
        default_factory=dict,
        description="Environment variables; values must be strings (quote numbers and booleans).",
        json_schema_extra={
            "propertyNames": {"pattern": ENV_NAME_PATTERN},
            "additionalProperties": {"type": "string"},
        },
    )
    writable_dirs: list[WritableDir] = Field(
        default_factory=list,
        alias="writableDirs",
        description="Absolute directories mounted writable (the root filesystem is read-only).",
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list, alias="envFrom", description="Secrets and ConfigMaps to load."
    )
    databases: DatabasesConfig = Field(default_factory=DatabasesConfig)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("writable_dirs")
    @classmethod
    def _no_parent_segments(cls, dirs: list[str]) -> list[str]:
        for path in dirs:
            if ".." in path.split("/"):
                raise ValueError(f"{path!r} must not contain a '..' segment")
        return dirs

    def enabled_databases(self) -> list[str]:
        """Names of the enabled databases, in the reference's order."""
        return self.databases.enabled_names()

    def database_values(self, name: str) -> dict[str, Any]:
        """The subchart values for database ``name`` (docs/configuration.md "Every field")."""
        return self.databases.subchart_values(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase keys as in the YAML, defaults applied."""
        return self.model_dump(mode="json", by_alias=True)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``k8s-ee.yaml`` (for editors and ``k8see schema``)."""
    schema = RepoConfig.model_json_schema(by_alias=True)
    ordered = {"$schema": schema.pop("$schema"), "$id": schema.pop("$id")}
    ordered.update(schema)
    return ordered


def schema_text() -> str:
    """The committed text of ``config/k8s-ee.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
