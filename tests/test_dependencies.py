"""Every library k8see imports is one pyproject.toml declares, where the importer is installed.

Covers: each third-party module imported anywhere in k8see/ (and in sandbox/, the
k8see-sandbox distribution, which requires ``k8see[worker]``) belongs to a distribution named in
``dependencies`` or the ``worker`` extra, even when a declared package brings it along today
(kombu with celery, urllib3 with kubernetes): a dependency that changes its own requirements
must not break k8see; the modules of the client install (the enqueue path, which the import
contracts keep light) import only the base ``dependencies``; and the GitHub App's JWT library
is the declared PyJWT, with the crypto extra its RS256 signature needs.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "k8see"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: What ``k8see enqueue`` imports, in a venv with no extra (the import contracts' client side).
CLIENT_MODULES = ("client.py", "events.py", "config", "cli", "run.py",
                  "names.py", "settings.py", "errors.py", "logs.py", "app.py")  # fmt: skip


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


BASE = {_name(r) for r in PROJECT["dependencies"]}
WORKER = {_name(r) for r in PROJECT["optional-dependencies"]["worker"]}


def _imports(paths: list[Path]) -> dict[str, set[str]]:
    """Third-party top-level module -> the files importing it."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("k8see", "k8see_sandbox"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions(module: str) -> set[str]:
    return {_name(d) for d in packages_distributions().get(module, [module])}


def test_every_imported_library_is_declared() -> None:
    undeclared = {
        module: sorted(files)
        for module, files in _imports(sorted(PACKAGE.rglob("*.py"))).items()
        if not _distributions(module) & (BASE | WORKER)
    }
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def test_every_library_the_sandbox_imports_is_declared_by_it() -> None:
    # k8see-sandbox (sandbox/) declares k8see[worker]: the sandbox may use what that brings
    sandbox = tomllib.loads((ROOT / "sandbox" / "pyproject.toml").read_text())["project"]
    assert sandbox["dependencies"] == ["k8see[worker]"]
    undeclared = {
        module: sorted(files)
        for module, files in _imports(sorted((ROOT / "sandbox").rglob("*.py"))).items()
        if not _distributions(module) & (BASE | WORKER)
    }
    assert not undeclared, f"the sandbox imports what k8see[worker] does not declare: {undeclared}"


def test_the_client_imports_only_the_base_dependencies() -> None:
    paths = [p for name in CLIENT_MODULES for p in sorted(PACKAGE.glob(name)) if p.is_file()]
    paths += [p for name in CLIENT_MODULES for p in sorted((PACKAGE / name).rglob("*.py"))]
    assert len(paths) > len(CLIENT_MODULES)
    outside = {
        module: sorted(files)
        for module, files in _imports(paths).items()
        if not _distributions(module) & BASE
    }
    assert not outside, f"the client imports worker-only libraries: {outside}"


def test_the_github_app_jwt_library_is_pyjwt_with_crypto() -> None:
    (requirement,) = [r for r in PROJECT["optional-dependencies"]["worker"] if _name(r) == "pyjwt"]
    assert requirement.startswith("PyJWT[crypto]")
    assert "jwt" in _imports([PACKAGE / "integrations" / "github_auth.py"])
