"""The validate stage without Celery: the real GitHub client against the sandbox, a real Redis
for fork approvals, a local git repository as the source.

Covers: a missing allowlist refuses before any GitHub call, with the platform's access-request
address in the hint; a config error posts a failing ``k8see/validate`` commit status naming
the problem; a valid config starts a Deployment (one request; ``in_progress`` and a success
status only when ``github.deployments``/``github.commit_status`` ask)
whose id rides in the result; a fork push without approval is refused with the fork notice; a
maintainer's command approves and pins the fork's head; a stranger's command is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import redis

from k8see import approvals
from k8see.errors import ConfigError, PolicyError, Refused
from k8see.run import Action, Run
from k8see.settings import PlatformSettings
from k8see.stages import validate
from k8see.stages.context import StageContext
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.github import SANDBOX_TOKEN, git

ROOT = Path(__file__).resolve().parents[2]
ACCESS = "https://platform.example.test/access"


@pytest.fixture
def repo_dir(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "sources" / "acme" / "shop"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "k8s-ee.yaml").write_text("projectId: shop\napp:\n  port: 3000\n")
    (path / "Dockerfile").write_text("FROM busybox\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    return path, git(path, "rev-parse", "HEAD")


def _ctx(
    hub: GitHubSandbox, tmp_path: Path, redis_url: str, allowlist: Path, **github: str
) -> StageContext:
    settings = PlatformSettings(
        github={"api_url": hub.url, "token": SANDBOX_TOKEN, **github},
        redis={"url": redis_url},
        policy={"allowlist_path": str(allowlist), "access_request_url": ACCESS},
        build={"workdir": str(tmp_path / "work"), "local_source_root": str(tmp_path / "sources")},
        queues={"max_retries": 1, "retry_backoff_seconds": 0.01},
    )
    return StageContext(settings=settings, log=logging.getLogger("t"), workdir=tmp_path)


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    path = tmp_path / "allowed.json"
    path.write_text(json.dumps({"mode": "allowlist", "organizations": ["acme"]}))
    return path


def _run(sha: str, src: Path, **kw: object) -> Run:
    fields: dict[str, object] = {
        "repo": "acme/shop", "pr": 7, "sha": sha, "generation": 1, "action": Action.DEPLOY,
        "trigger": "pull_request:opened", **kw,
    }  # fmt: skip
    return Run(**fields)  # type: ignore[arg-type]


def test_a_missing_allowlist_refuses_before_asking_github(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str]
) -> None:
    src, sha = repo_dir
    ctx = _ctx(github, tmp_path, redis_url, tmp_path / "gone.json")
    with pytest.raises(PolicyError) as refused:
        validate.run(_run(sha, src), ctx)
    assert "missing" in refused.value.message and ACCESS in (refused.value.hint or "")
    assert github.calls == []


def test_config_error_fails_the_commit_status(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str],
    allowlist: Path,
) -> None:  # fmt: skip
    src, _ = repo_dir
    (src / "k8s-ee.yaml").write_text("projectId: Not_Valid\n")
    git(src, "commit", "-qam", "bad")
    sha = git(src, "rev-parse", "HEAD")
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f")
    with pytest.raises(ConfigError) as bad:
        validate.run(_run(sha, src), _ctx(github, tmp_path, redis_url, allowlist))
    assert bad.value.where is not None and bad.value.where.field == "projectId"
    (status,) = github.commit_statuses("acme/shop")
    assert (status["context"], status["state"]) == ("k8see/validate", "failure")
    assert "projectId" in status["description"]
    assert github.deployments("acme/shop") == []


def test_a_valid_config_starts_a_deployment(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str],
    allowlist: Path,
) -> None:  # fmt: skip
    src, sha = repo_dir
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f")
    out = validate.run(_run(sha, src), _ctx(github, tmp_path, redis_url, allowlist))
    (deployment,) = github.deployments("acme/shop")
    assert out.result("validate")["deployment_id"] == deployment["id"]
    assert deployment["environment"] == "preview/shop-pr-7"
    # Frugal by default (issue 19): the deployment is created with one request (nothing to
    # look for yet), with no in_progress status and no success commit status
    assert deployment["statuses"] == []
    assert github.commit_statuses("acme/shop") == []
    assert [c for c in github.calls if "deployments" in c[1] or "statuses" in c[1]] == [
        ("POST", "/repos/acme/shop/deployments")
    ]
    assert github.rate_limited_calls == 2  # the PR, the deployment

    # When the stage runs again for the same commit (a redelivery)
    again = validate.run(_run(sha, src), _ctx(github, tmp_path, redis_url, allowlist))
    # Then it looks first and reuses the deployment
    assert again.result("validate")["deployment_id"] == deployment["id"]
    assert len(github.deployments("acme/shop")) == 1


def test_every_github_badge_can_be_asked_for(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str],
    allowlist: Path,
) -> None:  # fmt: skip
    src, sha = repo_dir
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f")
    ctx = _ctx(
        github, tmp_path, redis_url, allowlist, deployments="progress", commit_status="always"
    )
    validate.run(_run(sha, src), ctx)
    (deployment,) = github.deployments("acme/shop")
    assert [s["state"] for s in deployment["statuses"]] == ["in_progress"]
    assert [s["state"] for s in github.commit_statuses("acme/shop")] == ["success"]


def test_deployments_off_creates_none(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str],
    allowlist: Path,
) -> None:  # fmt: skip
    src, sha = repo_dir
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f")
    ctx = _ctx(github, tmp_path, redis_url, allowlist, deployments="off")
    out = validate.run(_run(sha, src), ctx)
    assert github.deployments("acme/shop") == []
    assert "deployment_id" not in out.result("validate")


def test_config_path_reads_the_config_where_the_workflow_says(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str],
    allowlist: Path,
) -> None:  # fmt: skip
    # Given a repository whose config lives under services/api (config-path), and a different
    # one at the root
    src, _ = repo_dir
    (src / "services" / "api").mkdir(parents=True)
    (src / "services" / "api" / "k8s-ee.yaml").write_text("projectId: api\napp:\n  port: 80\n")
    (src / "k8s-ee.yaml").write_text("projectId: Not_Valid\n")
    git(src, "add", "-A")
    git(src, "commit", "-qm", "two configs")
    sha = git(src, "rev-parse", "HEAD")
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f")
    ctx = _ctx(github, tmp_path, redis_url, allowlist, commit_status="always")
    # When the run names it
    out = validate.run(_run(sha, src, config_path="services/api/k8s-ee.yaml"), ctx)
    # Then that file is validated, and named in the result and the commit status
    result = out.result("validate")
    assert (result["project_id"], result["config_path"]) == ("api", "services/api/k8s-ee.yaml")
    (status,) = github.commit_statuses("acme/shop")
    assert status["description"] == "services/api/k8s-ee.yaml is valid."
    # And an error in it names that file
    (src / "services" / "api" / "k8s-ee.yaml").write_text("projectId: api\napp:\n  port: 0\n")
    git(src, "commit", "-qam", "bad port")
    bad_sha = git(src, "rev-parse", "HEAD")
    github.add_pull("acme/shop", 7, head_sha=bad_sha, head_ref="f")
    with pytest.raises(ConfigError) as bad:
        validate.run(_run(bad_sha, src, config_path="services/api/k8s-ee.yaml"), ctx)
    assert bad.value.where is not None and bad.value.where.file == "services/api/k8s-ee.yaml"


@pytest.mark.parametrize(
    "path", ["../k8s-ee.yaml", "/etc/passwd", "a/../../b.yaml", "./k8s-ee.yaml", "a b.yaml"]
)
def test_a_config_path_outside_the_repository_is_refused(
    path: str, github: GitHubSandbox, tmp_path: Path, redis_url: str,
    repo_dir: tuple[Path, str], allowlist: Path,
) -> None:  # fmt: skip
    # A forged queue message: the workers check config-path again, before reading anything
    src, sha = repo_dir
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f")
    with pytest.raises(PolicyError) as refused:
        validate.run(_run(sha, src, config_path=path), _ctx(github, tmp_path, redis_url, allowlist))
    assert "config-path" in refused.value.message and "relative" in (refused.value.hint or "")
    assert github.commit_statuses("acme/shop")[-1]["state"] == "failure"


def test_a_config_path_symlink_out_of_the_tree_is_refused(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str],
    allowlist: Path,
) -> None:  # fmt: skip
    src, _ = repo_dir
    (src / "deploy").symlink_to("/etc")
    git(src, "add", "-A")
    git(src, "commit", "-qm", "link")
    sha = git(src, "rev-parse", "HEAD")
    github.add_repo("acme/shop")
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f")
    with pytest.raises((ConfigError, PolicyError)) as refused:
        validate.run(
            _run(sha, src, config_path="deploy/passwd"),
            _ctx(github, tmp_path, redis_url, allowlist),
        )
    assert "outside the repository" in refused.value.message or "link" in refused.value.message


def test_fork_runs_only_at_the_sha_a_maintainer_approved(
    github: GitHubSandbox, tmp_path: Path, redis_url: str, repo_dir: tuple[Path, str],
    allowlist: Path,
) -> None:  # fmt: skip
    src, sha = repo_dir
    github.add_repo("acme/shop", collaborators={"boss": "admin"})
    github.add_pull("acme/shop", 7, head_sha=sha, head_ref="f", fork=True)
    ctx = _ctx(github, tmp_path, redis_url, allowlist)
    store = redis.Redis.from_url(redis_url)
    # a push from the fork: refused, with the notice
    with pytest.raises(Refused):
        validate.run(_run(sha, src), ctx)
    assert github.comments("acme/shop", 7)[0]["body"].startswith(approvals.FORK_MARKER)
    # a stranger's /deploy-preview approves nothing
    stranger = github.add_comment("acme/shop", 7, "/deploy-preview", login="someone")
    command = {"trigger": "issue_comment:/deploy-preview", "comment_id": stranger["id"]}
    with pytest.raises(Refused):
        validate.run(_run("", src, commenter="someone", **command), ctx)
    assert approvals.approved_sha(store, repo="acme/shop", pr=7) is None
    # the maintainer's approves the head and the run carries exactly it
    boss = github.add_comment("acme/shop", 7, "/deploy-preview", login="boss")
    command["comment_id"] = boss["id"]
    out = validate.run(_run("", src, commenter="boss", **command), ctx)
    assert out.sha == sha and approvals.approved_sha(store, repo="acme/shop", pr=7) == sha
    assert [r["content"] for r in github.reactions(boss["id"])] == ["eyes"]
    # and the same SHA pushed again is accepted without a new approval
    assert validate.run(_run(sha, src), ctx).sha == sha
