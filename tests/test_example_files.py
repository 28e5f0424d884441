"""What a repository copies from examples/ is safe to copy as it is.

Covers: every ``uses:`` in examples/ is pinned by a full 40-hex commit SHA with its tag as a
comment (a tag can be moved to other code; a commit cannot), except the placeholder of the
platform's own k8see repository, which GitHub refuses to run until it is replaced; nothing in
examples/, the README or docs/ installs the client as a bare ``pip install k8see`` (a name
k8see has not published, so whoever registers it would run in every workflow). Every example
``k8s-ee.yaml`` starts with the ``yaml-language-server`` comment, pointing at the committed
schema by a path that exists, and the schema names itself by no URL nobody serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8see.config import load_repo_config
from k8see.config.model import SCHEMA_ID

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")
PLACEHOLDER = "<platform-org>/k8see/examples/actions/enqueue@<commit-sha>"
_NAME = r"k8see(\[[\w,]+\])?"
BARE_INSTALL = re.compile(
    rf"pip3? install(\s+-{{1,2}}[\w-]+(=\S+)?)*\s+"
    rf"(\"{_NAME}\"|'{_NAME}'|{_NAME}(?=\s*$|\s+[^@\s]))"
)


def _workflow_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yml", ".yaml"))


def _uses(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "uses" and isinstance(value, str):
                yield value
            else:
                yield from _uses(value)
    elif isinstance(node, list):
        for item in node:
            yield from _uses(item)


def test_every_uses_in_examples_is_pinned_by_commit_with_its_tag() -> None:
    seen = 0
    for path in _workflow_files():
        text = path.read_text()
        for ref in _uses(yaml.safe_load(text)):
            seen += 1
            if ref == PLACEHOLDER:
                continue
            assert PINNED.match(ref), f"{path.relative_to(ROOT)}: {ref} is not pinned by commit"
            line = next(ln for ln in text.splitlines() if f"uses: {ref}" in ln)
            assert re.search(r"# v\d+(\.\d+)*$", line), f"{path}: no '# vX.Y.Z' after {ref}"
    assert seen >= 3  # the action's checkout and setup-python, the workflow's action


def test_the_placeholder_is_one_github_cannot_run() -> None:
    # A placeholder that looked like a ref (a branch, a tag) would run unpinned if forgotten
    owner = PLACEHOLDER.split("/", 1)[0]
    assert not re.fullmatch(r"[A-Za-z0-9-]+", owner)
    assert not re.fullmatch(r"[0-9a-f]{40}", PLACEHOLDER.rsplit("@", 1)[1])


def test_nothing_tells_anyone_to_pip_install_an_unpublished_name() -> None:
    files = [*_workflow_files(), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted(EXAMPLES.rglob("README.md"))
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not BARE_INSTALL.search(line), f"{path.relative_to(ROOT)}:{number}: {line}"


def test_the_bare_install_pattern_catches_what_it_should() -> None:
    assert BARE_INSTALL.search("      - run: pip install k8see")
    assert BARE_INSTALL.search('python -m pip install --quiet "k8see[worker]"')
    assert not BARE_INSTALL.search("pip install 'k8see[worker]==0.1.0'")
    assert not BARE_INSTALL.search('pip install "k8see @ git+https://github.com/a/k8see@abc"')
    assert not BARE_INSTALL.search("pip install -e '.[worker,dev]'")
    assert BARE_INSTALL.search("pip install k8see && k8see enqueue")


SCHEMA = ROOT / "config" / "k8s-ee.schema.json"
EXAMPLE_CONFIGS = sorted(EXAMPLES.glob("*/k8s-ee.yaml"))


@pytest.mark.parametrize("config", EXAMPLE_CONFIGS, ids=lambda p: p.parent.name)
def test_every_example_config_names_the_schema_for_editors(config: Path) -> None:
    first = config.read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, f"{config.relative_to(ROOT)} starts with {first!r}"
    # The path resolves, relative to the file as yaml-language-server resolves it
    assert (config.parent / match.group(1)).resolve() == SCHEMA.resolve()
    # And the comment changes nothing k8see reads
    load_repo_config(config, filename="k8s-ee.yaml")


def test_there_are_example_configs() -> None:
    assert len(EXAMPLE_CONFIGS) >= 2


def test_the_schema_id_is_no_url_nobody_serves() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed["$id"] == SCHEMA_ID
    assert not SCHEMA_ID.startswith(("http://", "https://")), SCHEMA_ID
    assert SCHEMA_ID.startswith("urn:")
