"""A name checked with ``^...$`` and ``re.match`` lets a trailing newline through.

Python's ``$`` also matches just before a final ``"\\n"``, so ``"acme/shop\\n"`` passed the
repository check, ``"<sha>\\n"`` the commit check and a ``k8s-ee.yaml`` key ``"A\\n"`` was printed
unquoted, splitting the error message across lines. Every check of a whole value uses
``fullmatch``; the last test keeps it that way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from k8see import names
from k8see.config.explain import format_path
from k8see.errors import ConfigError, PolicyError, RegistryError
from k8see.events import decide_from_comment
from k8see.integrations import oci

SHA = "0123456789abcdef0123456789abcdef01234567"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("check", "good"),
    [
        (names.check_project_id, "myapp"),
        (names.check_repo, "acme/shop"),
        (names.check_sha, SHA),
        (names.check_config_path, "k8s-ee.yaml"),
    ],
)
def test_a_trailing_newline_is_refused_by_every_name_check(check: object, good: str) -> None:
    assert callable(check)
    assert check(good) == good  # the same value without the newline passes
    with pytest.raises((ConfigError, PolicyError)):
        check(good + "\n")


def test_platforms_are_normalized_without_the_newline() -> None:
    assert names.check_platforms("linux/amd64\n,linux/arm64\n") == "linux/amd64,linux/arm64"


def test_a_preview_domain_with_a_trailing_newline_is_refused() -> None:
    assert names.preview_host("myapp", 1, "example.com") == "myapp-pr-1.example.com"
    with pytest.raises(PolicyError):
        names.preview_host("myapp", 1, "example.com\n")


def test_a_commenter_with_a_trailing_newline_is_not_a_login() -> None:
    decide_from_comment(
        repo="acme/shop", pr=1, body="/deploy-preview", trigger="on-demand", commenter="maint"
    )
    with pytest.raises(PolicyError, match="not a GitHub login"):
        decide_from_comment(
            repo="acme/shop",
            pr=1,
            body="/deploy-preview",
            trigger="on-demand",
            commenter="maint\n",
        )


def test_image_tags_digests_and_references_end_where_they_end() -> None:
    digest = "sha256:" + "a" * 64
    assert oci.is_tag("pr-1") and not oci.is_tag("pr-1\n")
    assert oci.is_digest(digest) and not oci.is_digest(digest + "\n")
    oci.parse_ref("registry.example/acme/shop:pr-1")
    with pytest.raises(RegistryError):
        oci.parse_ref("registry.example/acme/shop\n:pr-1")


def test_a_key_with_a_newline_is_quoted_where_it_is_shown() -> None:
    assert format_path(("A\n",)) == '["A\\n"]'
    assert "\n" not in format_path(("env", "PORT\n", 0))


def _whole_value_patterns(tree: ast.Module) -> set[str]:
    """Names bound to ``re.compile("...$")`` at a module's top level."""
    found = set()
    for node in tree.body:
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
            continue
        call, args = node.value, node.value.args
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "compile" and args):
            continue
        try:
            pattern = ast.literal_eval(args[0])
        except ValueError:
            continue
        if isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$"):
            found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found


#: Lines read one at a time (helm's errors, buildah's steps) come from splitlines() and never
#: hold a newline; every other whole-value pattern must be used with fullmatch.
LINE_PATTERNS = frozenset({"_ERROR_LINE", "IMAGE_LINE", "STEP_LINE", "USING_CACHE_LINE"})


def _matches_on_whole_values(tree: ast.Module) -> list[tuple[int, str]]:
    patterns = _whole_value_patterns(tree) - LINE_PATTERNS
    return [
        (node.lineno, node.value.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "match"
        and isinstance(node.value, ast.Name)
        and node.value.id in patterns
    ]


def test_no_whole_value_pattern_is_checked_with_match() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}.match"
        for path in [*(ROOT / "k8see").rglob("*.py"), *(ROOT / "sandbox").rglob("*.py")]
        for line, name in _matches_on_whole_values(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not offenders, "use fullmatch for a whole value:\n" + "\n".join(offenders)


def test_the_guard_finds_a_match_on_a_whole_value_pattern() -> None:
    source = 'import re\nX = re.compile(r"^a$")\nX.match("a\\n")\nX.fullmatch("a")\n'
    assert _matches_on_whole_values(ast.parse(source)) == [(3, "X")]
    assert re.compile(r"^a$").match("a\n")  # the behaviour the guard exists for
