"""Names that reach labels, URLs and commands: built only from validated parts."""

from __future__ import annotations

import pytest

from k8see import names
from k8see.errors import ConfigError, PolicyError


def test_namespace_url_and_deployment_follow_the_reference_patterns() -> None:
    assert names.namespace("myapp", 42) == "myapp-pr-42"
    assert names.preview_url("myapp", 42, "k8s-ee.genesluna.dev") == (
        "https://myapp-pr-42.k8s-ee.genesluna.dev"
    )
    assert names.deployment_name("myapp", 42) == "myapp-pr-42-app"


@pytest.mark.parametrize("bad", ["", "My-App", "-a", "a-", "a" * 21, "a;rm -rf /", "a b", "a/b"])
def test_project_ids_with_metacharacters_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        names.namespace(bad, 1)


@pytest.mark.parametrize("bad", ["acme", "acme/shop/x", "../etc", "a b/c", "a/b;ls", "a/$(x)"])
def test_repositories_must_be_owner_slash_repo(bad: str) -> None:
    with pytest.raises(PolicyError):
        names.check_repo(bad)


def test_image_names_are_lowercased() -> None:
    # The reference rejected uppercase owners (gap 7); k8see lowercases them.
    assert names.image_repository("ghcr.io", "Acme/Shop", "web") == "ghcr.io/acme/shop/web"


@pytest.mark.parametrize(
    ("branch", "label"),
    [
        ("feature/Login#2", "feature-Login-2"),
        ("--x--", "x"),
        ("", "unknown"),
        ("é", "unknown"),
        ("a" * 80, "a" * 63),
    ],
)
def test_branch_names_become_valid_label_values(branch: str, label: str) -> None:
    assert names.sanitize_label_value(branch) == label


def test_a_short_sha_is_refused() -> None:
    with pytest.raises(PolicyError):
        names.check_sha("abc123")


@pytest.mark.parametrize("repo", ["acme/.github", "acme/_private", "acme/shop.", "Acme/Shop_"])
def test_every_github_repository_name_gives_a_valid_and_distinct_image(repo: str) -> None:
    image = names.image_repository("ghcr.io", repo, "web")
    owner, name, project = image.split("/")[1:]
    assert all(names.OCI_COMPONENT_RE.match(part) for part in (owner, name, project)), image
    # A cleaned name never meets the plain name it resembles.
    assert image != names.image_repository("ghcr.io", "acme/github", "web")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("", "k8s-ee.yaml"), ("k8s-ee.yaml", "k8s-ee.yaml"),
     ("services/api/k8s-ee.yml", "services/api/k8s-ee.yml"),
     (".github/k8s-ee.yaml", ".github/k8s-ee.yaml")],
)  # fmt: skip
def test_config_paths_inside_the_repository(path: str, expected: str) -> None:
    assert names.check_config_path(path) == expected


@pytest.mark.parametrize(
    "path",
    ["/k8s-ee.yaml", "../x.yaml", "a/../b.yaml", "a//b.yaml", "a/./b.yaml", "a b.yaml",
     "a\\b.yaml", "x\0.yaml", "$(id).yaml", "a/" * 130 + "b"],
)  # fmt: skip
def test_config_paths_that_leave_or_confuse_are_refused(path: str) -> None:
    with pytest.raises(PolicyError) as refused:
        names.check_config_path(path)
    assert "config-path" in refused.value.message and refused.value.hint
