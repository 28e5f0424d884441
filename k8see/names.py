"""Derived, validated names in one place.

Every name that reaches a shell, a label, a URL or a Kubernetes object is built here from
validated parts, so a value with shell, label or URL metacharacters is refused before it is
used anywhere.
"""

from __future__ import annotations

import hashlib
import re

from k8see.errors import ConfigError, PolicyError

#: ``projectId`` as the reference schema defines it: 1-20 chars, lowercase alphanumerics and
#: hyphens, starting and ending alphanumeric.
PROJECT_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")
#: ``owner/repo`` as GitHub allows it (the reference's workflow-input regex).
REPO_RE = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
NAMESPACE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]+[a-zA-Z0-9]$")
#: ``config-path``: a file inside the repository (the reference forbids ``..`` and a leading
#: ``/``; k8see also keeps it to characters that are safe in a message and a log line).
CONFIG_PATH_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
DEFAULT_CONFIG_PATH = "k8s-ee.yaml"
#: One OCI platform, ``os/arch[/variant]``; which ones a platform builds is its setting.
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
LABEL_VALUE_MAX = 63

#: The Helm release name is always ``app`` (docs/environments.md "3. The app release");
#: database objects are named ``app-<db>`` after it.
RELEASE_NAME = "app"
MANAGED_BY = "k8see"
#: Namespaces the reference system created carry this value; k8see adopts them.
LEGACY_MANAGED_BY = "github-actions"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TYPE = "k8s-ee/type"
LABEL_PROJECT = "k8s-ee/project-id"
LABEL_PR = "k8s-ee/pr-number"
LABEL_BRANCH = "k8s-ee/branch"
LABEL_SHA = "k8s-ee/commit-sha"
LABEL_PRESERVE = "preserve"
ANN_CREATED_AT = "k8s-ee/created-at"
ANN_CREATED_BY = "k8s-ee/created-by"
ANN_REPOSITORY = "k8s-ee/repository"
ANN_LAST_UPDATED = "k8s-ee/last-updated"
ANN_PRESERVE_UNTIL = "k8s-ee/preserve-until"
ANN_PRESERVED_BY = "k8s-ee/preserved-by"


def check_project_id(project_id: str) -> str:
    if not PROJECT_ID_RE.fullmatch(project_id):
        raise ConfigError(
            f"projectId {project_id!r} is not valid.",
            hint="Use 1-20 lowercase letters, digits and hyphens, starting and ending "
            "with a letter or digit, e.g. 'myapp'.",
        )
    return project_id


def check_repo(repo: str) -> str:
    if not REPO_RE.fullmatch(repo) or repo.count("/") != 1 or ".." in repo:
        raise PolicyError(
            f"Repository {repo!r} is not of the form OWNER/REPO.",
            hint="Pass the repository as GitHub names it, e.g. 'acme/shop'.",
        )
    return repo


def check_pr(pr: int) -> int:
    if isinstance(pr, bool) or not isinstance(pr, int) or pr < 1 or pr > 10**9:
        raise PolicyError(f"PR number {pr!r} is not a positive integer.")
    return pr


def check_sha(sha: str) -> str:
    if not SHA_RE.fullmatch(sha):
        raise PolicyError(
            f"Commit {sha!r} is not a full 40-character lowercase hex SHA.",
            hint="Pass the PR's head SHA (github.event.pull_request.head.sha).",
        )
    return sha


def check_config_path(path: str) -> str:
    """The repository-relative path of ``k8s-ee.yaml`` (``config-path``); ``""`` is the default.

    Raises:
        PolicyError: absolute, with ``..`` or ``.`` segments, or with other characters.
    """
    if not path:
        return DEFAULT_CONFIG_PATH
    if (
        not isinstance(path, str)
        or len(path) > 255
        or not CONFIG_PATH_RE.fullmatch(path)
        or any(part in (".", "..") for part in path.split("/"))
    ):
        raise PolicyError(
            f"config-path {str(path)[:80]!r} is not a path inside the repository.",
            hint="Give it relative to the repository root, without '..' or a leading '/', "
            "e.g. 'k8s-ee.yaml' or 'services/api/k8s-ee.yaml'.",
        )
    return path


def check_platforms(value: str) -> str:
    """A repository's ``platforms`` input (``linux/amd64,linux/arm64``), normalized; ``""``
    means the platform's own list. The build checks it against what the platform offers.

    Raises:
        PolicyError: not a comma list of ``os/arch[/variant]``.
    """
    items = [p.strip() for p in str(value).split(",") if p.strip()]
    if len(value) > 200 or not all(PLATFORM_RE.fullmatch(p) for p in items):
        raise PolicyError(
            f"platforms {str(value)[:80]!r} is not a comma list of platforms.",
            hint="Write it like linux/amd64 or linux/amd64,linux/arm64; empty builds what the "
            "platform builds.",
        )
    return ",".join(dict.fromkeys(items))


def namespace(project_id: str, pr: int) -> str:
    """The PR's namespace, ``{projectId}-pr-{N}``."""
    ns = f"{check_project_id(project_id)}-pr-{check_pr(pr)}"
    if not NAMESPACE_RE.fullmatch(ns):  # pragma: no cover - implied by the parts' checks
        raise ConfigError(f"Namespace {ns!r} is not a valid DNS label.")
    return ns


def preview_host(project_id: str, pr: int, domain: str) -> str:
    if not DOMAIN_RE.fullmatch(domain):
        raise PolicyError(f"Preview domain {domain!r} is not a valid host name.")
    return f"{namespace(project_id, pr)}.{domain}"


def preview_url(project_id: str, pr: int, domain: str) -> str:
    """``https://{projectId}-pr-{N}.{domain}`` (docs/configuration.md "k8s-ee.yaml")."""
    return f"https://{preview_host(project_id, pr, domain)}"


def deployment_name(project_id: str, pr: int) -> str:
    """The app Deployment, ``{projectId}-pr-{N}-app``, cut to 63 characters."""
    return f"{namespace(project_id, pr)}-app"[:LABEL_VALUE_MAX].rstrip("-")


def sanitize_label_value(value: str, *, fallback: str = "unknown") -> str:
    """Turn a free string (a branch name) into a valid label value (docs/environments.md "1. The
    namespace")."""
    value = re.sub(r"[^a-zA-Z0-9._-]", "-", value)
    value = re.sub(r"-+", "-", value)
    value = re.sub(r"^[^a-zA-Z0-9]+", "", value)
    value = value[:LABEL_VALUE_MAX]
    value = re.sub(r"[^a-zA-Z0-9]+$", "", value)
    return value or fallback


#: One path component of an OCI repository name (the distribution spec's grammar).
OCI_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def oci_component(value: str) -> str:
    """A GitHub owner or repository name as a valid OCI path component.

    GitHub allows names such as ``.github``, ``_private`` or ``shop.`` that the OCI grammar
    does not. Those are cleaned (separators trimmed and folded) and, so that two different
    names cannot meet in one image repository, suffixed with a short hash of the original.
    """
    lowered = value.lower()
    if OCI_COMPONENT_RE.fullmatch(lowered):
        return lowered
    cleaned = re.sub(r"[^a-z0-9]+", "-", lowered).strip("-") or "repo"
    digest = hashlib.sha256(value.encode()).hexdigest()[:6]
    return f"{cleaned}-{digest}"


def image_repository(registry: str, repo: str, project_id: str) -> str:
    """``<registry>/<owner>/<repo>/<projectId>``, lowercased (the reference fails on uppercase)
    and valid under the OCI naming rules for every repository name GitHub allows."""
    owner, name = check_repo(repo).split("/")
    return (
        f"{registry.rstrip('/')}/{oci_component(owner)}/{oci_component(name)}/"
        f"{check_project_id(project_id)}"
    )


def image_path(repo: str) -> str:
    """``<owner>/<repo>`` as registry path components: every image, cache and tag of a
    repository lives under it, and nothing of another repository does."""
    owner, name = check_repo(repo).split("/")
    return f"{oci_component(owner)}/{oci_component(name)}"


def image_tag(pr: int) -> str:
    return f"pr-{check_pr(pr)}"


def sha_tag(sha: str) -> str:
    """The immutable per-commit tag, so a redeploy of an older commit needs no rebuild."""
    return f"sha-{check_sha(sha)}"
