"""The PR comment: every status rendered, user text escaped, and the stage against the sandbox."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from k8see.integrations.github import make_client
from k8see.record import EnvironmentRecord
from k8see.run import Action, Run, Status
from k8see.settings import PlatformSettings
from k8see.stages import comment, comment_body
from k8see.stages.context import StageContext
from k8see_sandbox.github import GitHubSandbox
from tests.fixtures.github import SANDBOX_TOKEN

SHA = "0123456789abcdef0123456789abcdef01234567"
MARKER = "<!-- k8s-ee-pr-env -->"
SETTINGS = PlatformSettings(deploy={"domain": "preview.example.dev"})
TS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "repo": "acme/shop",
        "pr": 7,
        "project_id": "shop",
        "namespace": "shop-pr-7",
        "status": Status.READY.value,
        "sha": SHA,
        "ref": "feature/login",
        "generation": 3,
        "run_id": "abc123def456",
        "preview_url": "https://shop-pr-7.preview.example.dev",
        "digest": "sha256:" + "d" * 64,
        "platforms": ["linux/amd64", "linux/arm64"],
        "scan": {
            "counts": {"CRITICAL": 0, "HIGH": 2, "MEDIUM": 5, "LOW": 9},
            "blocked": False,
            "scanners": ["vuln", "secret", "misconfig"],
            "vulnerabilities": "scanned",
        },
        "timings": {"deploy": 41.2, "validate": 0.8, "build": 95.0, "scan": 12.5},
        "databases": ["postgresql", "redis"],
        "merged": None,
        "updated_at": "2026-03-14T12:34:56Z",
        "created_at": "2026-03-14T12:00:00Z",
    }
    return {**base, **changes}


def table(body: str) -> dict[str, str]:
    rows = {}
    for line in body.splitlines():
        m = re.fullmatch(r"\| (.+?) \| (.*) \|", line)
        if m and m.group(1) not in ("Property", "Stage") and not m.group(1).startswith("-"):
            rows[m.group(1)] = m.group(2)
    return rows


def test_ready_follows_the_reference_and_adds_details() -> None:
    body = comment_body.render(record(), settings=SETTINGS)
    assert body.startswith(MARKER + "\n## 🚀 Preview Environment Ready\n")
    assert body.endswith("---\n<sub>🤖 Managed by k8see</sub>")
    rows = table(body)
    assert rows["Status"] == "✅ Deployed"
    assert rows["Preview URL"] == (
        '<a href="https://shop-pr-7.preview.example.dev" target="_blank">🌐 Open Preview</a>'
    )
    # k8see ships no per-environment dashboard: no link unless the platform configures one
    assert "Dashboard" not in rows and "Grafana" not in rows and "grafana" not in body
    assert rows["Namespace"] == "`shop-pr-7`"
    assert rows["Commit"] == f"<code>{SHA}</code>"
    assert rows["Branch"] == "<code>feature/login</code>"
    assert rows["Image"] == "<code>sha256:dddddddddddd</code>"
    assert "`DATABASE_URL`" in rows["Databases"] and "`REDIS_URL`" in rows["Databases"]
    assert rows["Security scan"] == "🔴 0 critical · 🟠 2 high · 🟡 5 medium · 🔵 9 low"
    assert rows["Updated"] == "2026-03-14 12:34:56 UTC"
    assert rows["Expires"].startswith("When the PR closes or 2026-03-21 12:34:56 UTC")
    timings = [ln for ln in body.splitlines() if re.fullmatch(r"\| \w+ \| [\d.]+s \|", ln)]
    assert timings == [
        "| validate | 0.8s |",
        "| scan | 12.5s |",
        "| deploy | 41.2s |",
    ]  # build took 95 s: shown as minutes
    assert "| build | 1m 35s |" in body
    assert "total 2m 30s" in body


def test_a_configured_dashboard_is_linked_with_the_environment_filled_in() -> None:
    url = "https://dash.example.org/d/abc/pr?var-namespace={namespace}&repo={repo}&pr={pr}"
    settings = PlatformSettings(
        deploy={"domain": "preview.example.dev"}, metrics={"dashboard_url": url}
    )
    for status in ("ready", "failed"):
        rows = table(comment_body.render(record(status=status), settings=settings))
        assert rows["Dashboard"] == (
            '<a href="https://dash.example.org/d/abc/pr?var-namespace=shop-pr-7&amp;'
            'repo=acme%2Fshop&amp;pr=7" target="_blank">📊 Dashboard</a>'
        )
    rows = table(comment_body.render(record(status="destroyed"), settings=settings))
    assert "Dashboard" not in rows


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("grafana.example.org/d/x", "must start with https://"),
        ("https://g.example.org/d/x?ns={namespace}&who={token}", "uses token"),
        ("https://g.example.org/d/x?ns={namespace", "not a valid template"),
    ],
)
def test_a_dashboard_url_that_cannot_work_is_refused_at_start(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        PlatformSettings(metrics={"dashboard_url": url})


def test_ready_without_an_ingress_says_there_is_no_url() -> None:
    rows = table(comment_body.render(record(preview_url="", ingress=False), settings=SETTINGS))
    assert rows["Preview URL"] == "none: `ingress.enabled` is false in k8s-ee.yaml"
    assert "href" not in rows["Preview URL"]


def test_a_run_waiting_for_capacity_shows_its_position() -> None:
    body = comment_body.render(
        record(status=Status.WAITING.value, preview_url=None, capacity_position=3),
        settings=SETTINGS,
    )
    assert body.splitlines()[1] == "## ⏸️ Preview Environment Waiting for Capacity"
    assert table(body)["Status"] == "⏸️ Waiting for capacity: position 3"
    assert "updated as the run progresses" in body


@pytest.mark.parametrize(
    ("status", "heading", "cell"),
    [
        (Status.QUEUED, "⏳ Preview Environment Queued", "⏳ Queued"),
        (Status.BUILDING, "🔨 Preview Environment Building", "🔨 Building image"),
        (Status.SCANNING, "🛡️ Preview Environment Scanning", "🛡️ Scanning image"),
        (Status.DEPLOYING, "📦 Preview Environment Deploying", "📦 Deploying"),
        (Status.SUPERSEDED, "⏭️ Preview Environment Superseded", "⏭️ Superseded by a newer commit"),
    ],
)
def test_in_between_states(status: Status, heading: str, cell: str) -> None:
    body = comment_body.render(record(status=status.value, preview_url=None), settings=SETTINGS)
    assert body.splitlines()[1] == f"## {heading}"
    rows = table(body)
    assert rows["Status"] == cell
    assert rows["Commit"] == f"<code>{SHA}</code>"
    assert "Preview URL" not in rows
    assert TS.fullmatch(rows["Updated"])


def test_failed_shows_stage_error_hint_and_log_tail() -> None:
    error = {
        "type": "ConfigError",
        "reason": "config",
        "message": "app.port must be between 1 and 65535.",
        "hint": "Set app.port to the port your server listens on, e.g. 3000.",
        "where": {"file": "k8s-ee.yaml", "field": "app.port", "line": 4},
        "stage": "validate",
        "log_tail": ["step 1", "```", "</details> <b>x</b>", "last line"],
    }
    body = comment_body.render(record(status="failed", error=error), settings=SETTINGS)
    assert body.splitlines()[1] == "## ⚠️ Preview Environment Failed"
    rows = table(body)
    assert rows["Status"] == "❌ Deployment Failed"
    assert rows["Failed stage"] == "validate"
    assert "Dashboard" not in rows
    assert "app.port must be between 1 and 65535." in body
    assert "**Where:** <code>k8s-ee.yaml:4</code> field <code>app.port</code>" in body
    assert "**How to fix:** Set app.port to the port your server listens on, e.g. 3000." in body
    # the tail sits in a fence longer than any backtick run inside it, so it cannot escape
    fence_open = body.index("````text\n")
    fence_close = body.index("\n````\n", fence_open)
    assert "</details> <b>x</b>" in body[fence_open:fence_close]


def test_destroyed_and_preserved_show_merged() -> None:
    destroyed = comment_body.render(record(status="destroyed", merged=True), settings=SETTINGS)
    assert destroyed.splitlines()[1] == "## 🗑️ Preview Environment Destroyed"
    rows = table(destroyed)
    assert (rows["Status"], rows["Merged"]) == ("🏁 Cleaned up", "Yes")
    assert rows["Destroyed"] == "2026-03-14 12:34:56 UTC"
    assert "Commit" not in rows
    not_merged = table(comment_body.render(record(status="destroyed"), settings=SETTINGS))
    assert not_merged["Merged"] == "No"
    preserved = comment_body.render(
        record(status="preserved", preserve_until="2026-03-16T12:00:00Z", preserved_by="alice"),
        settings=SETTINGS,
    )
    rows = table(preserved)
    assert preserved.splitlines()[1] == "## 🔒 Preview Environment Preserved"
    assert rows["Status"] == "🔒 Preserved"
    assert rows["PR Closed"] == "2026-03-14 12:34:56 UTC"
    assert rows["Preserved until"] == "2026-03-16 12:00:00 UTC"
    assert rows["Preserved by"] == "@\u200balice"
    assert "will remain active until the preserve expires" in preserved


def test_user_text_cannot_break_the_table_or_inject() -> None:
    evil_ref = "x|y<script>alert(1)</script>`@octocat\nnew | row"
    error = {
        "message": "Bad [link](https://evil.example) ![i](https://evil.example/p) @admins | x",
        "hint": "<img src=x onerror=alert(1)>",
        "stage": "build",
    }
    body = comment_body.render(
        record(status="failed", ref=evil_ref, error=error, preserved_by="a|b"), settings=SETTINGS
    )
    assert "<script>" not in body and "<img" not in body
    assert "](https://evil" not in body  # link syntax neutralised
    assert "@admins" not in body  # no mentions in text (GitHub ignores them inside <code>)
    assert body.count("@octocat") == 1 and "`@octocat new &#124; row</code>" in body
    for line in body.splitlines():
        if line.startswith("| Branch"):
            assert line.count(" | ") == 1  # the pipe in the branch name is an entity
    assert table(body)["Branch"].startswith("<code>x&#124;y&lt;script&gt;")


def test_quotes_and_hashes_in_an_error_read_as_written() -> None:
    # An error quoting a value used to reach the PR as `&\#x27;...&\#x27;`: the entity of the
    # quote was escaped again as markdown.
    message = "image.repository 'r/k8see-demo/hello' is outside k8see-demo/evil's path (#2) \"x\""
    error = {"message": message, "hint": "Use 'r/k8see-demo/evil/'.", "stage": "build"}
    body = comment_body.render(record(status="failed", error=error), settings=SETTINGS)
    assert "&\\#" not in body and "&#x27;" not in body
    assert (
        "image.repository 'r/k8see-demo/hello' is outside k8see-demo/evil's path \\(\\#2\\)" in body
    )
    assert "Use 'r/k8see-demo/evil/'." in body


def test_a_scan_without_vulnerabilities_never_reads_as_clean() -> None:
    # Given a scan that had no vulnerability DB: zero counts, from secret and misconfig only
    scan = {
        "counts": {"CRITICAL": 0, "HIGH": 0, "MEDIUM": 0, "LOW": 0},
        "blocked": False,
        "scanners": ["secret", "misconfig"],
        "vulnerabilities": "not-scanned",
        "vulnerabilities_note": "no vulnerability database is configured",
    }
    # When the comment is rendered
    cell = table(comment_body.render(record(scan=scan), settings=SETTINGS))["Security scan"]
    # Then it says so first, and says which scanners the counts come from
    assert cell == (
        "⚠️ **Vulnerabilities not scanned** (no vulnerability database is configured)<br>"
        "secret, misconfig: 🔴 0 critical · 🟠 0 high · 🟡 0 medium · 🔵 0 low"
    )
    # And a record written before the field existed tells by its scanners
    legacy = {k: v for k, v in scan.items() if not k.startswith("vulnerabilities")}
    cell = table(comment_body.render(record(scan=legacy), settings=SETTINGS))["Security scan"]
    assert cell.startswith("⚠️ **Vulnerabilities not scanned** (no vulnerability database)<br>")
    # While a scan that did look for vulnerabilities shows the plain counts
    scanned = {**legacy, "scanners": ["vuln", "secret"], "vulnerabilities": "scanned"}
    cell = table(comment_body.render(record(scan=scanned), settings=SETTINGS))["Security scan"]
    assert cell == "🔴 0 critical · 🟠 0 high · 🟡 0 medium · 🔵 0 low"


def test_missing_fields_render() -> None:
    body = comment_body.render({"status": "ready"}, settings=SETTINGS)
    assert body.startswith(MARKER)
    assert table(body)["Status"] == "✅ Deployed"
    assert (
        comment_body.render({}, settings=SETTINGS).splitlines()[1]
        == "## ⏳ Preview Environment Queued"
    )


# -- the stage, against the sandbox ----------------------------------------------------------


@pytest.fixture
def shop(github: GitHubSandbox) -> GitHubSandbox:
    github.add_repo("acme/shop", collaborators={"alice": "write"})
    github.add_pull("acme/shop", 7, head_sha=SHA, head_ref="feature/login")
    return github


def context(hub: GitHubSandbox, rec: dict[str, Any], tmp_path: Path) -> StageContext:
    settings = PlatformSettings(
        github={"api_url": hub.url, "token": SANDBOX_TOKEN},
        deploy={"domain": "preview.example.dev"},
        queues={"max_retries": 3, "retry_backoff_seconds": 0.01},
    )
    return StageContext(
        settings=settings,
        log=logging.getLogger("k8see.test.comment"),
        workdir=tmp_path,
        record=EnvironmentRecord.of(rec),
    )


def test_stage_cycles_one_comment_through_states_with_reactions(
    shop: GitHubSandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    command = shop.add_comment("acme/shop", 7, "/deploy-preview", login="alice")
    deploy = Run(repo="acme/shop", pr=7, sha=SHA, generation=3, action=Action.DEPLOY,
                 ref="feature/login", comment_id=command["id"])  # fmt: skip
    # validate started the GitHub Deployment and passes its id along
    started = make_client(context(shop, {}, tmp_path).settings, log=logging.getLogger("t"))
    deployment_id = started.create_deployment("acme/shop", sha=SHA, environment="preview/shop-pr-7")
    deploy = deploy.with_result("validate", {"deployment_id": deployment_id})
    ids = set()
    for status in ("queued", "building", "ready"):
        out = comment.run(deploy, context(shop, record(status=status), tmp_path))
        ids.add(out.result("comment")["comment_id"])
    (posted,) = shop.comments("acme/shop", 7)[1:]
    assert ids == {posted["id"]}
    assert posted["body"].splitlines()[1] == "## 🚀 Preview Environment Ready"
    assert [r["content"] for r in shop.reactions(command["id"])] == ["rocket"]
    (deployment,) = shop.deployments("acme/shop")
    assert deployment["environment"] == "preview/shop-pr-7"
    assert deployment["statuses"][-1]["state"] == "success"
    assert deployment["statuses"][-1]["environment_url"] == "https://shop-pr-7.preview.example.dev"

    destroy = Run(repo="acme/shop", pr=7, sha="", generation=4, action=Action.DESTROY,
                  merged=True, comment_id=command["id"])  # fmt: skip
    comment.run(destroy, context(shop, record(status="destroyed", merged=None), tmp_path))
    (posted,) = shop.comments("acme/shop", 7)[1:]
    assert posted["body"].splitlines()[1] == "## 🗑️ Preview Environment Destroyed"
    assert "| Merged | Yes |" in posted["body"]
    assert [r["content"] for r in shop.reactions(command["id"])] == ["rocket", "+1"]
    assert shop.deployments("acme/shop")[0]["statuses"][-1]["state"] == "inactive"
    assert all(SANDBOX_TOKEN not in r.getMessage() for r in caplog.records)


def test_stage_never_posts_the_token(shop: GitHubSandbox, tmp_path: Path) -> None:
    leaked = {"message": f"clone failed with {SANDBOX_TOKEN}", "stage": "build"}
    run = Run(repo="acme/shop", pr=7, sha=SHA, generation=1, action=Action.DEPLOY)
    comment.run(run, context(shop, record(status="failed", error=leaked), tmp_path))
    (posted,) = shop.comments("acme/shop", 7)
    assert SANDBOX_TOKEN not in posted["body"]
    assert "clone failed with \\*\\*\\*" in posted["body"]
    assert "SECRET" not in posted["body"]


def test_stage_survives_a_reaction_on_a_deleted_command(
    shop: GitHubSandbox, tmp_path: Path
) -> None:
    run = Run(repo="acme/shop", pr=7, sha=SHA, generation=1, action=Action.DEPLOY,
              comment_id=999999)  # fmt: skip
    out = comment.run(run, context(shop, record(), tmp_path))
    assert out.result("comment")["comment_id"] == shop.comments("acme/shop", 7)[0]["id"]


def test_stage_updates_the_recorded_comment_with_one_request(
    shop: GitHubSandbox, tmp_path: Path
) -> None:
    """A push's comment is one PATCH of the comment the record names (issue 19); a comment
    deleted by hand is found missing and posted again, once."""
    deploy = Run(repo="acme/shop", pr=7, sha=SHA, generation=3, action=Action.DEPLOY,
                 ref="feature/login")  # fmt: skip
    first = comment.run(deploy, context(shop, record(status="ready"), tmp_path))
    comment_id = first.result("comment")["comment_id"]
    # When the next push's comment stage runs with the record naming that comment
    before = len(shop.calls)
    again = comment.run(
        deploy, context(shop, record(status="building", comment_id=comment_id), tmp_path)
    )
    # Then it is one PATCH of it, no search
    assert shop.calls[before:] == [("PATCH", f"/repos/acme/shop/issues/comments/{comment_id}")]
    assert again.result("comment")["comment_id"] == comment_id
    (posted,) = shop.comments("acme/shop", 7)
    assert "Building" in posted["body"]
    # When someone deleted the comment by hand
    auth = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    url = f"{shop.url}/repos/acme/shop/issues/comments/{comment_id}"
    assert requests.delete(url, headers=auth, timeout=5).status_code == 204
    out = comment.run(
        deploy, context(shop, record(status="ready", comment_id=comment_id), tmp_path)
    )
    # Then the stage posts a new one and names it
    (posted,) = shop.comments("acme/shop", 7)
    assert out.result("comment")["comment_id"] == posted["id"] != comment_id
