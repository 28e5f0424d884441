"""Platform settings: one root made of per-topic groups.

Read once at process start (``cli`` and ``app``) from environment variables with the prefix
``K8SEE_`` and ``__`` between group and field, e.g. ``K8SEE_BUILD__TIMEOUT_SECONDS=900``.
Precedence: arguments given in code (``load_settings(**overrides)``) over the environment over
an optional settings file (``K8SEE_SETTINGS_FILE``, YAML, read by pydantic-settings'
``YamlConfigSettingsSource``) over the defaults here; nested groups merge field by field.
Everything below ``cli``/``app`` receives settings as arguments.

Why one module of about 800 lines: it is one schema, the single root ``PlatformSettings`` and
its groups, and most of its lines are the attribute docstrings that ``scripts/settings_doc.py``
turns into docs/configuration.md. Split by group, the shared pieces (the quantity checks, the
sentinel addresses, the file and environment sources of the root) would be imported across
many small files, and every import of a group would change for no gain; the loading
(``load_settings``) is the last screenful and belongs with the sources it configures.
"""

from __future__ import annotations

import ipaddress
import json
import os
import string
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from k8see.errors import ConfigError
from k8see.quantity import QuantityError, parse_quantity

#: The reference system's default preview domain (docs/configuration.md "k8s-ee.yaml").
DEFAULT_DOMAIN = "k8s-ee.genesluna.dev"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    """Broker, result backend and per-PR state, and who this process is to Redis: in
    production ``rediss://k8see-<role>:<password>@host:port/0`` with the role's ACL user
    (``worker``, ``beat``, ``flower``, ``enqueue`` or ``admin``; docs/security.md)."""

    result_expires_seconds: int = 86400
    """How long Celery keeps task results; the environment record is kept separately."""

    record_ttl_seconds: int = 30 * 86400
    """How long an environment record outlives its last update (30 days, for ``status``)."""

    admin_username: str = "k8see-admin"
    """The Redis ACL user that is the admin credential: only a ``url`` naming this user lists
    every repository's records with ``k8see status`` (anyone else must pass ``--repo``). A
    ``url`` naming ``k8see-enqueue`` is the enqueue credential, which only submits events and
    reads their progress (``k8see status --progress``); the ACL users and what each may do are
    in docs/security.md."""

    socket_timeout_seconds: float = Field(default=5.0, gt=0)
    """How long a worker waits for one answer from Redis, in seconds, before it counts as
    unanswered. A stage's probes then mean "unknown" and its tool keeps running; 5 s is
    redis-py's own default, long enough for a busy Redis, short enough to notice a stall."""

    stall_tolerance_seconds: float = Field(default=180.0, ge=0)
    """How long, in seconds, a stage keeps trying to record its start or its result while
    Redis does not answer (a stall, a failover, a restart) before it gives its message back
    to the broker for redelivery. 3 minutes outlasts a Sentinel failover and a restart with
    a large append-only file."""

    sentinels: str = ""
    """Redis Sentinel addresses, ``host:port`` separated by commas, e.g.
    ``redis-sentinel-0:26379,redis-sentinel-1:26379``. When set, every k8see client, the
    Celery broker and the result backend ask these for the current master of
    ``sentinel_master_name`` (and ask again after a failover); ``url`` then gives only the
    credentials, the database number and TLS (``rediss://``), never the host. Empty: ``url``
    is the one Redis (no high availability)."""

    sentinel_master_name: str = "k8see"
    """The name the Sentinels monitor the master under (``sentinel monitor <name> ...``)."""

    sentinel_password: SecretStr | None = None
    """The Sentinels' own password (their ``requirepass``), when they have one; the master's
    credentials stay in ``url``."""

    min_replica_acks: int = Field(default=0, ge=0)
    """How many replicas must confirm an accepted event (Redis ``WAIT``) before ``k8see
    enqueue`` reports it accepted. 0 never waits (a single Redis has no replica). With
    Sentinel, 1: an event the master took but no replica holds is lost if the master dies
    before replicating it, so an unconfirmed admission fails the enqueue with exit 3, and a
    retry of the same event is queued exactly once (docs/operations.md, "High
    availability")."""

    replica_ack_timeout_seconds: float = Field(default=2.0, gt=0)
    """How long, in seconds, an enqueue waits for ``min_replica_acks`` replicas to confirm.
    A replica on the same network confirms in milliseconds; 2 s rides out a busy replica
    without holding a workflow step long."""

    @model_validator(mode="after")
    def _sentinels_are_addresses(self) -> RedisSettings:
        sentinel_addresses(self.sentinels)
        if self.sentinels and not self.sentinel_master_name.strip():
            raise ValueError("sentinel_master_name must not be empty when sentinels are set")
        return self


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """``redis.sentinels`` as ``(host, port)`` pairs; raises ValueError naming a bad entry."""
    found = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"sentinels entry {entry[:80]!r} is not host:port (e.g. redis-sentinel:26379)"
            )
        found.append((host, int(port)))
    return found


class QueueSettings(BaseModel):
    default_concurrency: int = 4
    """validate and comment: short, I/O bound."""

    build_concurrency: int = 2
    """build and scan: CPU and disk heavy, so few at once (one per core here)."""

    deploy_concurrency: int = 4
    """deploy and destroy: mostly waiting on the API server."""

    maintenance_concurrency: int = 1
    """beat jobs: cleanup, preserve expiry, pull-secret refresh."""

    lease_ttl_seconds: int = 60
    """Per-PR lease for deploy/destroy; renewed every third of it while the stage runs."""

    lease_retry_seconds: float = 5.0
    """First wait of a stage that finds the lease taken; doubled each time, with jitter,
    capped at 60 s. Waiting for the lease is not a retry: it never uses up ``max_retries``."""

    lease_wait_seconds: float = Field(default=1800, gt=0)
    """How long, in seconds, a stage waits for a lease held by another run before it fails
    saying so. 30 minutes outlasts a deploy at its default time limit (helm's 10 minutes
    plus 2), so only a holder that is stuck, not one that is slow, makes a run fail."""

    max_retries: int = Field(default=5, ge=0)
    """Retries of a stage after a transient platform error (an external system failing or
    unreachable); then the run fails with that error. Other errors are not retried."""

    retry_backoff_seconds: float = 2.0
    """First retry delay; doubled each retry, with full jitter, capped at 120 s."""

    visibility_timeout_seconds: int = Field(default=0, ge=0)
    """How long, in seconds, a message delivered to a worker that vanished (its main process
    killed, its node lost) stays unacknowledged before the broker hands it to another worker.
    Redis does not know whether a worker is alive, so this also applies to a message still
    being worked on, or held for a retry's countdown: it must exceed the longest stage plus
    the longest countdown, or a slow stage runs twice. 0 (the default): the build's
    ``timeout_seconds`` plus 5 minutes (20 minutes), so a lost worker's stage is redone 20
    minutes later, not after Celery's hour."""

    outbox_grace_seconds: float = Field(default=60.0, ge=0)
    """How long, in seconds, a run may stay admitted but unsent (its enqueue stopped between
    admitting it and sending its chain) before the watchdog job sends it. Long enough that
    an enqueue still at work is never overtaken; short next to the watchdog's period."""


class BuildSettings(BaseModel):
    builder: Literal["buildah", "docker"] = "buildah"
    """buildah is daemonless and what the worker image ships; docker needs a daemon."""

    platforms: str = "linux/amd64,linux/arm64"
    """Comma list; the reference's ARCHITECTURE variable maps to one of these."""

    timeout_seconds: int = 900
    """Per-build limit (the reference's build job had 15 minutes)."""

    workdir: str = ""
    """Where sources and build state go; empty means a temporary directory."""

    buildah_storage_driver: str = "vfs"
    """overlay needs kernel support that containers often lack; vfs always works."""

    storage_dir: str = ""
    """Root of buildah's storage dirs, one per trust scope (a repository's own PRs share one;
    each fork PR has its own), shared by that scope's builds on a worker: base images and the
    ``--layers`` cache live there, which is what makes a warm rebuild fast. Empty:
    ``<workdir or the temp dir>/k8see-buildah``."""

    storage_max_idle_hours: float = Field(default=72, ge=0)
    """Hours after its last build that a scope's storage dir is deleted (checked when any
    build on the worker starts; a dir in use is never deleted); 0 keeps them all. 72 hours
    keeps a project's storage over a weekend without builds, and frees a closed fork PR's
    within three days (vfs keeps a full copy of every layer: often hundreds of MB a scope).
    A project whose dir was deleted gets its steps from the registry cache again. The Docker
    builder removes a scope's anchor images after the same time without a build."""

    source_max_idle_hours: float = Field(default=6, ge=0)
    """Hours after its last use that a commit's source tree (``<workdir>/src``) is deleted,
    checked at most every 10 minutes when a worker fetches a source; 0 keeps them all. A tree
    is only read by validate and build, and fetched again if a later run needs it, so a few
    hours is plenty. Must exceed the build's ``timeout_seconds``, because a tree is stamped
    when a stage starts using it, not while it does."""

    local_source_root: str = ""
    """A directory of local git repositories, ``<root>/<owner>/<name>``, that workers read
    sources from instead of GitHub's tarballs (the sandbox, tests, the demo); empty: GitHub.
    A worker setting on purpose: a message never chooses where a source comes from."""

    registries_conf: str = ""
    """A containers registries.conf for builds (mirrors, insecure hosts), passed through
    ``CONTAINERS_REGISTRIES_CONF``; empty: the system's. The demo points docker.io at the
    local base-image mirror with it."""

    isolation: Literal["chroot", "oci"] = "oci"
    """How buildah runs RUN steps: oci (runc) gives each step its own namespaces, the network
    one included, which ``network`` sealed and none need; chroot needs no runtime or user
    namespaces (a rootless build pool) but runs steps in the worker's network, so it goes
    only with ``network: host``."""

    network: Literal["sealed", "none", "host"] = "sealed"
    """What a RUN step (the pull request's code) reaches. ``sealed``: a network namespace of
    its own per build, with internet egress and DNS to the worker's nameservers but no route
    to the worker (its loopback services: Redis, the registry, anything local), private,
    link-local (the metadata address 169.254.169.254), CGNAT and multicast ranges, nor
    ``network_denied_cidrs``; needs root or CAP_NET_ADMIN + CAP_SYS_ADMIN, iproute2 and
    iptables on the build worker. ``none``: only the step's own loopback (builds that
    download nothing). ``host``: the worker's network, everything it reaches included; only
    for a build pool that can do neither, behind an egress NetworkPolicy (the platform
    chart's rootless default). buildah itself (base images, cache, push) always uses the
    worker's network."""

    network_subnet: str = "10.231.0.0/24"
    """``sealed``: the IPv4 range of the per-build links between worker and step namespace
    (a ``/30`` each, so a ``/24`` serves 64 concurrent builds on a worker). Pick one that no
    address a build must reach lies in."""

    network_denied_cidrs: list[str] = Field(default_factory=list)
    """``sealed``: IPv4 ranges closed to RUN steps besides the always-closed ones above: set
    the cluster's pod and Service CIDRs when they lie outside the private ranges, and a
    public Kubernetes API address."""

    network_allowed_cidrs: list[str] = Field(default_factory=list)
    """``sealed``: ``CIDR`` or ``CIDR:port`` a RUN step may reach although closed otherwise
    (an in-house package mirror on a private address; the worker's own address for a mirror
    it serves). Each entry opens what it names to every pull request's build."""

    pid_namespace: bool = True
    """Run buildah, and so every RUN step, in a PID namespace of its own (util-linux
    ``unshare --pid --fork --kill-child --mount-proc``). Without it, chroot isolation lets a
    RUN step (the PR's code) list the worker's processes and their command lines, and, as
    root, signal them. Costs one ``unshare`` process per buildah call (milliseconds); needs
    util-linux and root or CAP_SYS_ADMIN on the build worker, so a rootless build pool must
    set it false (its builds fail with a hint saying so otherwise)."""

    cache_repository: str = "{image}/cache"
    """The registry build cache (buildah): each build step's image is pushed here and a
    worker whose storage lacks a step pulls it instead of running it, so a new or restarted
    worker does not rerun steps another worker ran. ``{image}`` is the image repository, so
    every project has its own cache (keep it in: a cache shared between projects lets one
    project's build feed another's). Same registry credentials as the image; empty: no
    registry cache. Fork PRs read it but never write it. Not pushed when the worker already
    pushed a build of the same inputs (Dockerfile, context files, build arguments, platform);
    otherwise every step is pushed, hits included (buildah 1.28 cannot push only some). Its
    tags are not deleted when a PR closes (the cache is the project's)."""

    docker_host: str = "unix:///run/docker.sock"
    """The Docker daemon the ``docker`` builder uses (it builds there and uploads the images
    itself, so the daemon needs no registry credentials)."""

    docker_network: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Network of the ``docker`` builder's RUN steps. ``default`` is the daemon's bridge: a
    pull request's RUN reaches the internet but not the services bound to the daemon host's
    loopback. ``host`` shares the daemon host's network, loopback included (only for a
    daemon without a bridge, as in k8see's tests); ``none`` leaves a RUN step nothing but its
    own loopback; any other value names a network of the daemon."""

    @model_validator(mode="after")
    def _network_is_possible(self) -> BuildSettings:
        if self.network != "host" and self.isolation == "chroot" and self.builder == "buildah":
            raise ValueError(
                f"build.network {self.network} needs build.isolation oci: chroot isolation "
                "runs RUN steps in the worker's network; set isolation to oci (runc), or "
                "network to host knowing that RUN steps then reach what the worker reaches"
            )
        ipaddress.IPv4Network(self.network_subnet)
        for entry in self.network_denied_cidrs:
            ipaddress.IPv4Network(entry, strict=False)
        for entry in self.network_allowed_cidrs:
            net, _, port = entry.partition(":")
            ipaddress.IPv4Network(net.strip(), strict=False)
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"network_allowed_cidrs: {entry!r} has no valid port")
        return self

    @model_validator(mode="after")
    def _sources_outlive_a_build(self) -> BuildSettings:
        if 0 < self.source_max_idle_hours * 3600 <= self.timeout_seconds:
            raise ValueError(
                f"source_max_idle_hours ({self.source_max_idle_hours:g}) must exceed the build "
                f"timeout ({self.timeout_seconds} s), or a tree could be deleted mid-build; "
                "0 keeps every tree"
            )
        return self


class ScanSettings(BaseModel):
    enabled: bool = True
    scanners: str = "vuln,secret,misconfig"
    """Trivy's scanners. ``secret`` and ``misconfig`` carry their rules in the binary; ``vuln``
    runs only with a vulnerability DB (``db_dir`` or ``db_repository``), and without one the
    scan summary, the PR comment and ``k8see build`` say vulnerabilities were not scanned."""

    db_dir: str = ""
    """A folder holding Trivy's vulnerability DB, ``trivy.db`` and ``metadata.json`` (what
    ``oras pull ghcr.io/aquasecurity/trivy-db:2`` unpacks, refreshed by the operator, e.g. by a
    CronJob into a shared volume). Scans read it in place, read-only and offline; it wins over
    ``db_repository``. Missing or unreadable: vulnerabilities are reported as not scanned."""

    db_repository: str = ""
    """Trivy vulnerability DB location (an OCI mirror), downloaded by every scan. Empty (and no
    ``db_dir``): vulnerabilities are not scanned, and every summary says so."""

    policy: Literal["warn", "block"] = "warn"
    """warn (the reference's behaviour) or block deploys at ``block_severity`` and above."""

    block_severity: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = "CRITICAL"
    ignore_unfixed: bool = True
    timeout_seconds: int = 600
    sbom: bool = True
    """Also write a CycloneDX SBOM per platform (one more Trivy pass over the image)."""

    upload_sarif: Literal["auto", "public", "never"] = "auto"
    """Upload each platform's SARIF to GitHub code scanning (the Security tab). ``auto`` tries
    every repository: one without code scanning (private without Advanced Security) answers
    403, recorded as unavailable, at no extra call; ``public`` asks first and uploads for
    public repositories only (the reference's rule). Best-effort: a failure only warns."""


class ServiceAccountRef(BaseModel):
    """A ServiceAccount, as the subject of a RoleBinding names it."""

    name: str
    namespace: str


class DeploySettings(BaseModel):
    domain: str = DEFAULT_DOMAIN
    """Base domain of preview URLs: ``https://{projectId}-pr-{N}.{domain}``."""

    kubeconfig: str = ""
    """Empty: in-cluster service account, else this kubeconfig file."""

    chart_path: str = ""
    """The app chart; empty means ``charts/k8s-ee-app`` shipped with k8see."""

    preview_secrets_namespace: str = "{projectId}-preview-secrets"
    """Where the platform team keeps a project's preview secrets (``{projectId}`` is replaced);
    Secrets labelled ``k8see.dev/preview-secret=true`` there are copied into each PR namespace
    when the namespace is annotated ``k8s-ee/repository=<owner>/<repo>`` of the PR. Empty: no
    copies (docs/environments.md)."""

    helm_timeout_seconds: int = 600
    """``helm upgrade --install --atomic --timeout`` (the reference's 10 minutes)."""

    health_attempts: int = 10
    health_interval_seconds: float = 2.0
    ingress_class: str = "traefik"
    ingress_annotations: dict[str, str] = Field(
        default_factory=lambda: {
            "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
            "traefik.ingress.kubernetes.io/router.tls": "true",
            "traefik.ingress.kubernetes.io/router.tls.certresolver": "letsencrypt-prod",
        }
    )
    ingress_annotation_allowlist: list[str] = Field(
        default_factory=lambda: [
            "nginx.ingress.kubernetes.io/proxy-body-size",
            "nginx.ingress.kubernetes.io/proxy-connect-timeout",
            "nginx.ingress.kubernetes.io/proxy-read-timeout",
            "nginx.ingress.kubernetes.io/proxy-send-timeout",
        ]
    )
    """The ``ingress.annotations`` keys a k8s-ee.yaml may set (exact keys); any other is a
    config error naming the key and this list. Keep snippet keys (nginx ``server-snippet``,
    ``configuration-snippet``) and traefik router, middleware and TLS keys off it: they
    reconfigure the shared ingress controller. Keys in ``ingress_annotations`` are the
    platform's and refused even when listed here."""

    quota_ceiling_cpu_millicores: int = Field(default=16_000, ge=1)
    """The most CPU limits (millicores) one PR namespace's quota may hold. The quota grows
    with what k8s-ee.yaml asks for; a config needing more is a config error naming this
    ceiling. 16 cores fits every database at several times its default size."""

    quota_ceiling_memory_mib: int = Field(default=32_768, ge=1)
    """The most memory limits (MiB) one PR namespace's quota may hold (32 GiB by default)."""

    quota_ceiling_storage_mib: int = Field(default=204_800, ge=1)
    """The most volume storage (MiB) one PR namespace's quota may hold (200 GiB by default;
    every database at its default size needs 10 GiB)."""

    egress_denied_cidrs: list[str] = Field(default_factory=list)
    """IPv4 ranges PR pods may not reach besides the always-denied ones (private ranges,
    loopback, link-local with its metadata address 169.254.169.254, CGNAT 100.64.0.0/10, and
    Azure's 168.63.129.16): set the cluster's pod and service CIDRs here when they lie outside
    the private ranges. The API server's addresses stay reachable (``api_server_cidrs``)."""

    ingress_controller_namespace: str = "kube-system"
    ingress_controller_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "traefik"}
    )
    api_server_cidrs: list[str] = Field(default_factory=list)
    """Kubernetes API addresses for the egress policy; empty: resolved from the cluster."""

    destroy_timeout_seconds: int = 240
    """Namespace deletion wait (the reference's 4 minutes). After it, the finalizers of
    objects still in the namespace (custom resources whose operator never finishes them) are
    removed and reported on the PR; the namespace's own are cleared only once it is empty."""

    uninstall_timeout_seconds: int = Field(default=120, ge=1)
    """``helm uninstall --wait --timeout`` of a destroy. When it runs out (an object stuck on
    a finalizer), the destroy goes on with the namespace deletion, which removes the rest."""

    helm_api_retries: int = Field(default=8, ge=0, le=20)
    """How often a request of helm's to the API server is retried when the server answers
    429 or 5xx or cannot be reached (client-go alone retries only answers with Retry-After).
    helm then goes through a TLS proxy on 127.0.0.1 inside the worker; 0 lets helm talk to
    the API server directly."""

    priority_class: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$")
    """PriorityClass of the app pods (the reference's clusters had ``default-app``, value 100,
    so that platform jobs preempt previews); empty: the cluster's default. The class must
    exist, or the app's pods are refused."""

    database_wait_images: dict[
        Literal["postgresql", "mongodb", "redis", "minio", "mariadb"],
        Annotated[str, Field(pattern=r"^[^\s]+$")],
    ] = Field(default_factory=dict)
    """Image of the init container that waits for each database (keys: postgresql, mongodb,
    redis, minio, mariadb), over the app chart's (``postgres:16-alpine``, ``mongo:7-jammy``,
    ``redis:7-alpine``, ``curlimages/curl:8.5.0``, ``mariadb:11``, from Docker Hub); for
    clusters that pull from a mirror. Each runs ``sh -c`` with that database's client
    (pg_isready, mongosh, redis-cli, curl, mariadb-admin)."""

    pod_security: Literal["", "auto", "privileged", "baseline", "restricted"] = "auto"
    """The Pod Security Admission level PR namespaces enforce (label
    ``pod-security.kubernetes.io/enforce``, and ``warn``); ``audit`` is always ``restricted``,
    so the audit log shows what a stricter level would refuse. auto: restricted (non-root, no
    privilege escalation, every capability dropped, a seccomp profile) unless the environment
    asks for MongoDB or MinIO, whose operators' pods are not known to pass it, or
    ``chart_path`` names a chart of your own: those get baseline (no privileged pods, host
    namespaces, hostPath volumes or added capabilities). "" sets no labels (the cluster's
    default)."""

    namespace_bindings: dict[str, ServiceAccountRef] = Field(default_factory=dict)
    """RoleBindings written into every PR namespace before helm runs, each named after its
    ClusterRole: ClusterRole name → ``{"name": ..., "namespace": ...}`` of a ServiceAccount.
    The platform chart binds its deploy and maintenance pools here, so neither holds rights
    in namespaces that are not k8see's. Empty (docker-compose, the sandbox): none are written.
    Env: JSON."""


class GitHubSettings(BaseModel):
    api_url: str = "https://api.github.com"
    token: SecretStr | None = None
    """Simple mode: a token with pull-requests write. Prefer the App below."""

    app_id: str = ""
    app_private_key_path: str = ""
    server_url: str = "https://github.com"
    """For links in comments (run logs, repository)."""

    comment_marker: str = "<!-- k8s-ee-pr-env -->"
    """Hidden marker of the sticky comment; the reference's, so existing comments are reused."""

    timeout_seconds: float = 30.0

    shared_etags: bool = True
    """Keep the ETag and body of each GitHub read in Redis (an hour, per credential, never the
    token), so a read another worker already made is sent as a conditional request: GitHub
    answers ``304 Not Modified``, which does not count against its rate limit. A push's
    re-checks of the PR before build and before deploy then cost nothing."""

    deployments: Literal["on", "progress", "off"] = "on"
    """The GitHub Deployment shown on the PR ("View deployment"). ``on``: created when
    validate passes and given one final status (``success`` with the URL, or ``failure``): 2
    requests a push. ``progress``: also an ``in_progress`` status while it builds (3).
    ``off``: none (the sticky comment still has the URL)."""

    commit_status: Literal["failure", "always"] = "failure"
    """The ``k8see/validate`` commit status: ``failure`` posts it only when the configuration
    is refused (the one case without a Deployment on the PR), ``always`` also posts
    ``success`` on every push (one request more)."""


class RegistrySettings(BaseModel):
    type: Literal["ghcr", "ecr", "generic"] = "ghcr"
    host: str = "ghcr.io"
    """Registry host[:port]. For ECR, derived from the account and region when empty."""

    username: str = ""
    password: SecretStr | None = None
    insecure: bool = False
    """Plain HTTP (the local sandbox registry only)."""

    ecr_region: str = ""

    aws_endpoint_url: str = ""
    """ECR and STS API endpoint; empty: AWS's public one. A VPC endpoint in production,
    moto's server in tests. Credentials always come from the ambient AWS identity."""

    pull_secret_refresh_seconds: int = 6 * 3600
    """How often the beat job rewrites the pull secret in every environment, in seconds; 0
    turns it off. Six hours is half an ECR token's 12-hour life, so a secret is never stale;
    it also carries a rotated static password to every namespace without a redeploy."""


class CleanupSettings(BaseModel):
    interval_seconds: int = 900
    """Stale-environment reconciler period (the reference ran every 6 hours)."""

    ttl_hours: float = 24 * 7
    """Destroy environments not deployed for this long, even if the PR is open."""

    preserve_default_hours: int = 48
    preserve_max_hours: int = 48
    max_preserved: int = 3

    preserve_project_max_hours: dict[str, int] = {}
    """Per-repository maximum hours of one ``/preserve`` (``owner/repo`` → hours); others get
    ``preserve_max_hours``. Env: JSON, e.g. ``{"acme/shop": 96}``."""

    preserve_lifetime_hours: int = 168
    """Absolute cap, in hours from a namespace's first preserve: re-preserving never goes past
    it (the reference reset the clock on every ``/preserve``, so it could last forever)."""

    preserve_warning_hours: float = 1.0
    """Comment on the PR this many hours before a preserve ends (once), as the reference did."""

    expiry_interval_seconds: int = 300
    """Preserve-expiry job period; short, so a closed PR's environment goes at its deadline."""

    watchdog_interval_seconds: int = 120
    """How often the watchdog job runs, in seconds: it sends the outbox's unsent runs and
    looks for lost and stuck runs."""

    watchdog_grace_seconds: int = 120
    """Seconds a run's record may stay unchanged, with none of the run's messages queued or
    at work, before the watchdog sends its chain again; also the extra seconds after a
    stage's hard time limit before a run that cannot be sent again is failed."""

    watchdog_max_redrives: int = Field(default=2, ge=0)
    """How many times the watchdog sends a lost run's chain again before it fails the run,
    saying so. A chain is lost when a worker acknowledged a stage it could not finish (a
    hard time limit, a Redis outage longer than ``redis.stall_tolerance_seconds``)."""

    pr_state_cache_seconds: int = Field(default=300, ge=0)
    """How long a PR's state fetched from GitHub is reused by maintenance jobs, in seconds;
    0 asks GitHub on every run (unchanged list pages still cost no rate limit: ETags)."""

    max_github_calls: int = 200
    """GitHub requests one cleanup run may make; PRs beyond it wait for the next run."""

    registry_gc: bool = True
    """Delete ``pr-N`` and ``sha-*`` image tags whose PR is gone (generic registries only)."""

    build_cache_max_age_days: int = 14
    """Days a registry build cache image (``build.cache_repository``) is kept; the registry
    GC job then deletes it (generic: by the image's build time; GHCR: by the package
    version's last update), and ECR cache repositories get a lifecycle rule expiring images
    pushed this many days ago. The cache is the project's, so no PR close deletes it; 14 days
    keeps the steps of an active project's base layers warm between most releases. A pruned
    step only runs again on its next build. 0 keeps the cache forever. Independent of
    ``registry_gc``."""


#: The placeholders ``metrics.dashboard_url`` may use.
DASHBOARD_FIELDS = frozenset({"namespace", "repo", "pr"})


class MetricsSettings(BaseModel):
    enabled: bool = True
    port: int = 9808
    address: str = "127.0.0.1"
    """The address a worker serves ``/metrics`` on. Loopback by default, so a build step or a
    neighbour on the node network cannot read it; the platform chart sets the pod's own IP
    (downward API ``status.podIP``) so that only the pod network reaches it, never
    ``0.0.0.0``."""

    dashboard_url: str = ""
    """A dashboard of one preview environment, linked from the PR comment (its "Dashboard"
    row, when the environment is ready or failed). ``{namespace}``, ``{repo}`` and ``{pr}``
    are filled in, URL-encoded, e.g.
    ``https://grafana.example.com/d/<uid>/pr-env?var-namespace={namespace}``. Empty: no link,
    because k8see ships no per-environment dashboard a default could open."""

    @model_validator(mode="after")
    def _dashboard_url_is_a_template(self) -> MetricsSettings:
        url = self.dashboard_url
        if not url:
            return self
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"dashboard_url must start with https:// or http://, not {url!r}")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(url) if name is not None}
        except ValueError as exc:
            raise ValueError(f"dashboard_url is not a valid template: {exc}") from exc
        if not fields <= DASHBOARD_FIELDS:
            unknown = ", ".join(sorted(fields - DASHBOARD_FIELDS))
            raise ValueError(
                f"dashboard_url uses {unknown}; it may use {{namespace}}, {{repo}} and {{pr}}"
            )
        return self


class PolicySettings(BaseModel):
    allowlist_path: str = "config/allowed-orgs.json"
    """The org/repository allowlist; missing or invalid means nobody is allowed."""

    access_request_url: str = ""
    """Where a refused repository asks for access (e.g. the platform team's issue form); shown
    in the refusal comment. The reference linked the caller's own issues page (its gap 10)."""


#: GitHub's own cap on a webhook payload; anything larger is not GitHub's.
WEBHOOK_MAX_BYTES = 25 * 1024 * 1024


class ApiSettings(BaseModel):
    """``k8see api``: the front doors (GitHub App webhooks, workflow enqueue by OIDC token)."""

    address: str = "127.0.0.1"
    """Where ``k8see api`` listens. Loopback by default; the chart and compose file set
    ``0.0.0.0`` inside their pod or container, behind an Ingress with TLS."""

    port: int = Field(default=8080, ge=0, le=65535)
    """The API's TCP port (0: a free one, for tests)."""

    webhook_secrets: list[SecretStr] = Field(default_factory=list)
    """The GitHub App's webhook secrets: a delivery signed with any one of them is accepted,
    so a secret is rotated by adding the new one, changing it on GitHub, then removing the
    old. Empty: every webhook is refused (401), because an unsigned door admits anyone.
    Env: a JSON list, e.g. ``K8SEE_API__WEBHOOK_SECRETS='["new","old"]'``."""

    webhook_max_bytes: int = Field(default=WEBHOOK_MAX_BYTES, ge=1)
    """Largest webhook body read, in bytes; larger ones get 413 before their signature is
    checked. GitHub caps payloads at 25 MB, so the default refuses only what is not GitHub."""

    delivery_ttl_seconds: int = Field(default=7 * 86400, ge=60)
    """How long a delivery id (``X-GitHub-Delivery``) is remembered, in seconds, so that a
    replay or a redelivery queues nothing. GitHub redelivers from the last 3 days; 7 days
    outlasts that with room."""

    redis_timeout_seconds: float = Field(default=3.0, gt=0)
    """How long a request waits for Redis, in seconds, before it answers 503. Accepting a
    webhook costs one Redis call, so a stalled Redis still gets GitHub an answer well within
    its 10 seconds."""

    inbox_claim_idle_seconds: float = Field(default=60.0, gt=0)
    """How long an accepted delivery may sit with a consumer that took it but never finished
    (an api process that died), in seconds, before another api process takes it over."""

    oidc_issuer: str = "https://token.actions.githubusercontent.com"
    """The issuer of the workflow identity tokens accepted by ``POST /v1/enqueue`` (its
    ``iss`` claim); its keys are found through ``{issuer}/.well-known/openid-configuration``.
    GitHub Enterprise Server: ``https://HOST/_services/token``."""

    oidc_audience: str = "k8see"
    """The ``aud`` claim a workflow token must carry. Workflows ask for it with
    ``k8see enqueue --api URL --audience k8see`` (the default there too); a token minted for
    anything else (a cloud provider's audience) is refused, so it cannot be replayed here."""

    oidc_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    """Clock skew tolerated on ``exp``/``nbf``/``iat``, in seconds."""

    jwks_cache_seconds: int = Field(default=300, ge=0)
    """How long the issuer's discovery document and signing keys are cached, in seconds. A
    token signed by a key not in the cache fetches the keys again at once (key rotation)."""

    jwks_refetch_seconds: float = Field(default=10.0, ge=0)
    """Least time between two fetches of the keys caused by an unknown key id, in seconds. A
    rotated key is picked up at once, yet tokens with made-up key ids cannot make the API
    hammer the issuer."""

    http_timeout_seconds: float = Field(default=5.0, gt=0)
    """How long one fetch of the issuer's discovery document or keys may take, in seconds;
    past it the request answers 503 (the caller may retry)."""


class CapacitySettings(BaseModel):
    """Platform-wide ceilings (docs/operations.md "Capacity"); unset or 0 means unlimited.

    A deploy of a new environment over a ceiling waits in a fair queue; redeploys of a
    running environment and destroys are never blocked, and nothing is ever evicted."""

    max_environments: int | None = Field(default=None, ge=0)
    """How many PR environments may exist at once; unset or 0 admits every deploy (the
    behaviour before capacity admission, so an upgrade changes nothing by itself)."""

    max_cpu: str | None = None
    """The most CPU, in cores as a Kubernetes quantity (``64``, ``64000m``), that the PR
    namespaces' ResourceQuota ``limits.cpu`` may add up to; unset means unlimited."""

    max_memory: str | None = None
    """The most memory, a Kubernetes quantity in bytes (``256Gi``), that the PR namespaces'
    ResourceQuota ``limits.memory`` may add up to; unset means unlimited."""

    max_storage: str | None = None
    """The most storage, a Kubernetes quantity in bytes (``2Ti``), that the PR namespaces'
    ResourceQuota ``requests.storage`` may add up to; unset means unlimited."""

    @model_validator(mode="after")
    def _quantities(self) -> CapacitySettings:
        for name in ("max_cpu", "max_memory", "max_storage"):
            value = getattr(self, name)
            if value is None or value == "":
                setattr(self, name, None)
                continue
            try:
                parse_quantity(value)
            except QuantityError as exc:
                unit = "cores, e.g. 64 or 64000m" if name == "max_cpu" else "bytes, e.g. 256Gi"
                raise ValueError(
                    f"capacity.{name}: {exc}; write a Kubernetes quantity in {unit} "
                    f"(K8SEE_CAPACITY__{name.upper()})"
                ) from None
        return self


class PlatformSettings(BaseSettings):
    """Every setting of a k8see installation, grouped by topic."""

    model_config = SettingsConfigDict(
        env_prefix="K8SEE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    redis: RedisSettings = Field(default_factory=RedisSettings)
    queues: QueueSettings = Field(default_factory=QueueSettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    scan: ScanSettings = Field(default_factory=ScanSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    github: GitHubSettings = Field(default_factory=GitHubSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    cleanup: CleanupSettings = Field(default_factory=CleanupSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the settings file ``load_settings`` names."""
        file = _SETTINGS_FILE.get()
        if file is None:
            return init_settings, env_settings, file_secret_settings
        yaml_file = YamlConfigSettingsSource(
            settings_cls, yaml_file=file, yaml_file_encoding="utf-8"
        )
        return init_settings, env_settings, yaml_file, file_secret_settings


#: The settings file of the ``load_settings`` call in progress (pydantic-settings asks for its
#: sources on a class method, without the call's arguments).
_SETTINGS_FILE: ContextVar[Path | None] = ContextVar("k8see_settings_file", default=None)


def load_settings(file: str | Path | None = None, **overrides: Any) -> PlatformSettings:
    """Settings: ``overrides`` over the environment over the YAML ``file`` over defaults.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML or not a mapping.
    """
    path = _checked_file(Path(file)) if file else None
    token = _SETTINGS_FILE.set(path)
    try:
        return PlatformSettings(**overrides)
    except SettingsError as exc:
        raise ConfigError(_unparsable_env(exc), hint=_JSON_ENV_HINT) from None
    finally:
        _SETTINGS_FILE.reset(token)


_JSON_ENV_HINT = (
    "A mapping or list setting given in the environment is JSON, quoted for the shell: "
    'export K8SEE_DEPLOY__NAMESPACE_BINDINGS=\'{"role": {"name": "r", "namespace": '
    '"ns"}}\' (docs/configuration.md).'
)


def _unparsable_env(exc: SettingsError) -> str:
    """Name the environment variable pydantic-settings could not decode; never its value."""
    group = str(exc).partition('for field "')[2].partition('"')[0]
    prefix = f"K8SEE_{group.upper()}"
    broken = []
    for name, value in sorted(os.environ.items()):
        upper = name.upper()
        if group and (upper == prefix or upper.startswith(prefix + "__")):
            try:
                json.loads(value)
            except ValueError as error:
                if value.lstrip()[:1] in ("{", "["):
                    broken.append(f"{name} is not valid JSON ({error})")
    if broken:
        return "The platform settings are invalid: " + "; ".join(broken) + "."
    where = f"a {prefix}__* environment variable" if group else "an environment variable"
    return f"The platform settings are invalid: {where} holds a value that is not valid JSON."


def _checked_file(path: Path) -> Path:
    """``path`` if it holds a YAML mapping; a clear error naming it otherwise."""
    hint = "K8SEE_SETTINGS_FILE names a YAML file shaped like docs/configuration.md's groups."
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Settings file {path} cannot be read: {exc}.", hint=hint) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"Settings file {path} is not valid YAML{where}.", hint=hint) from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(
            f"Settings file {path} holds a {type(loaded).__name__}, not a mapping.", hint=hint
        )
    return path
