"""Drill: names with shell, label or URL metacharacters never reach a command line, a label or
a URL.

What was already covered elsewhere (and is not repeated here): hypothesis over k8s-ee.yaml
documents, token soup and alias bombs, plus the 10 MB document (tests/config/), and over
event payloads and comment bodies (tests/test_events.py).

Covered here, with hostile ``projectId``, ``owner/repo``, branch and SHA values:
- the name builders the stages use (trust's source directory, build's image repository,
  deploy's namespace labels and annotations, the namespace and preview URL) either refuse
  the value with a K8seeError or produce a name that is a valid path component, OCI
  repository, label, DNS label or URL, with nothing of the hostile value left over;
- a forged message (a Run put on the queue without the client) is refused the same way;
- `k8see enqueue` refuses hostile values with an error and no traceback, and queues nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k8see import names
from k8see.errors import K8seeError
from k8see.run import Action, Run
from k8see.settings import load_settings
from k8see.stages import build, deploy, trust

META = [*";&|$`\\\"'<>(){}[]*?!#~%@:=+,^ \t\n\r\0/.-_", "$(id)", "`id`", "..", "%2e", "é"]
#: Strings of metacharacters, letters and shell/URL tokens, plus any unicode text.
HOSTILE = st.lists(st.sampled_from([*META, "a", "b", "Z", "0", "9"]), max_size=30).map(
    "".join
) | st.text(max_size=30)
SHA = "0123456789abcdef0123456789abcdef01234567"
#: The distribution spec's repository grammar (lowercase path components).
OCI_REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _run(*, repo: str = "acme/shop", ref: str = "feature", sha: str = SHA, pr: int = 7) -> Run:
    return Run(repo=repo, pr=pr, sha=sha, generation=1, action=Action.DEPLOY, ref=ref)


def _valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(LABEL_NAME.match(name)) and (not prefix or bool(DNS_SUBDOMAIN.match(prefix)))


@settings(max_examples=300, deadline=None)
@given(project_id=HOSTILE, pr=st.integers(1, 10**9))
def test_project_ids_give_a_dns_label_and_a_plain_url_or_are_refused(
    project_id: str, pr: int
) -> None:
    try:
        url = names.preview_url(project_id, pr, "preview.example.com")
    except K8seeError:
        return
    namespace = names.namespace(project_id, pr)
    assert DNS_LABEL.match(namespace)
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.path, parts.query, parts.fragment) == (
        "https",
        f"{namespace}.preview.example.com",
        "",
        "",
        "",
    )
    assert parts.username is None and parts.port is None


@settings(max_examples=300, deadline=None)
@given(
    repo=HOSTILE
    | st.tuples(HOSTILE, HOSTILE).map("/".join)
    | st.from_regex(names.REPO_RE, fullmatch=True)
)
def test_repositories_give_a_safe_source_dir_and_image_or_are_refused(repo: str) -> None:
    platform = load_settings(build={"workdir": "/srv/k8see"}, registry={"host": "ghcr.io"})
    try:
        source = trust.source_dir(platform, repo, SHA)
        image = build.image_repository(platform, repo, "web")
    except K8seeError:
        return
    # One directory per repository and commit, directly under the sources root.
    root = Path("/srv/k8see")
    assert source.parent.parent.parent == root / "src" or source.parent.parent == root / "src"
    assert ".." not in source.parts and "\0" not in str(source)
    assert source.resolve().is_relative_to(root / "src")
    # One argument to buildah and helm, never an option, on the platform's registry only.
    host, _, path = image.partition("/")
    assert host == "ghcr.io"
    assert re.fullmatch(r"[a-z0-9._-]+(/[a-z0-9._-]+)*", path), image
    assert not image.startswith("-") and ".." not in path.split("/")


@pytest.mark.parametrize("repo", ["acme/.github", "acme/_private", "acme/shop."])
def test_github_legal_repository_names_give_valid_oci_repositories(repo: str) -> None:
    names.check_repo(repo)  # GitHub allows these names
    image = build.image_repository(load_settings(registry={"host": "ghcr.io"}), repo, "web")
    assert OCI_REPOSITORY.match(image.partition("/")[2]), image


@settings(max_examples=300, deadline=None)
@given(ref=HOSTILE, repo=HOSTILE | st.just("acme/shop"), sha=st.sampled_from([SHA, "", "x" * 40]))
def test_namespace_labels_and_annotations_are_valid_or_refused(
    ref: str, repo: str, sha: str
) -> None:
    try:
        labels, annotations = deploy.namespace_metadata(
            _run(repo=repo, ref=ref, sha=sha), project_id="web"
        )
    except K8seeError:
        return
    for key, value in labels.items():
        assert _valid_label_key(key), key
        assert value == "" or LABEL_NAME.match(value), (key, value)
    assert set(labels[names.LABEL_BRANCH]) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
    )
    assert names.REPO_RE.match(annotations[names.ANN_REPOSITORY])


#: What each stage builds from a message's repo, sha and PR number.
BUILDERS = {
    "trust.source_dir": lambda run, cfg: trust.source_dir(cfg, run.repo, run.sha),
    "build.image_repository": lambda run, cfg: build.image_repository(cfg, run.repo, "web"),
    "build.tags": lambda run, cfg: (names.image_tag(run.pr), names.sha_tag(run.sha)),
    "deploy.namespace_metadata": lambda run, cfg: deploy.namespace_metadata(run, project_id="web"),
    "deploy.namespace": lambda run, cfg: names.namespace("web", run.pr),
}
REPO_USERS = ("trust.source_dir", "build.image_repository", "deploy.namespace_metadata")
SHA_USERS = ("trust.source_dir", "build.tags", "deploy.namespace_metadata")
PR_USERS = ("build.tags", "deploy.namespace_metadata", "deploy.namespace")


@pytest.mark.parametrize(
    ("forged", "refusers"),
    [
        ({"repo": "acme/shop;id"}, REPO_USERS),
        ({"repo": "acme/$(id)"}, REPO_USERS),
        ({"repo": "../../etc/passwd"}, REPO_USERS),
        ({"repo": "acme/.."}, REPO_USERS),
        ({"repo": "acme/shop\nX-Injected: 1"}, REPO_USERS),
        ({"sha": "HEAD;id"}, SHA_USERS),
        ({"sha": "--upload-pack=id"}, SHA_USERS),
        ({"pr": -1}, PR_USERS),
        ({"pr": True}, PR_USERS),
    ],
)
def test_a_forged_message_is_refused_by_every_stage_name_builder(
    forged: dict[str, Any], refusers: tuple[str, ...]
) -> None:
    # Given a Run put on the queue without going through the client's checks
    run = Run.from_dict({**_run().to_dict(), **forged})
    platform = load_settings(build={"workdir": "/srv/k8see"})
    # Then every stage name builder that uses the forged field refuses it
    for name in refusers:
        with pytest.raises(K8seeError):
            BUILDERS[name](run, platform)
            pytest.fail(f"{name} accepted {forged}")


@pytest.mark.parametrize(
    "args",
    [
        ["--repo", "acme/shop;touch pwned", "--sha", SHA],
        ["--repo", "acme/$(touch pwned)", "--sha", SHA],
        ["--repo", "acme/shop", "--sha", "$(touch pwned)"],
        ["--repo", "acme/shop", "--sha", "--upload-pack=touch"],
        ["--repo", "https://evil.example/acme/shop", "--sha", SHA],
    ],
)
def test_enqueue_refuses_hostile_values_and_queues_nothing(
    args: list[str], redis_url: str, tmp_path: Path
) -> None:
    import redis

    env = {"K8SEE_REDIS__URL": redis_url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "k8see", "enqueue", "--pr", "1", "--action", "opened", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode in (1, 2), done.stdout + done.stderr
    assert "Error:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "pwned").exists()
    assert redis.Redis.from_url(redis_url).dbsize() == 0
