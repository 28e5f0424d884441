"""The worker image's tools are built for the image's platform, never copied from the host's.

``workers/build-image.sh`` stages helm, kubectl and trivy per platform; for a platform other
than the host's it builds them with ``scripts/build-go-tools.sh --into``. Building the real
tools for arm64 takes minutes (Trivy: tens), so the script is proved here on ``pause``, our
smallest Go tool, through the same code path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
ELF_MACHINES = {62: "amd64", 183: "arm64"}


def elf_machine(path: Path) -> str:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF program"
    return ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), "other")


def test_a_tool_is_built_for_another_platform_and_copied_into_a_folder(tmp_path: Path) -> None:
    go = require_tool("go")
    host = subprocess.run([go, "env", "GOHOSTARCH"], capture_output=True, text=True, check=True)
    other = "arm64" if host.stdout.strip() == "amd64" else "amd64"
    linked = ROOT / ".tools" / "bin" / "pause"
    before = os.path.realpath(linked) if linked.exists() else None

    result = subprocess.run(
        ["bash", "scripts/build-go-tools.sh", "--into", str(tmp_path / other), "pause"],
        cwd=ROOT,
        env={**os.environ, "GOARCH": other},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr
    assert elf_machine(tmp_path / other / "pause") == other
    # The host's link is left alone: another platform's binary never lands in .tools/bin.
    assert (os.path.realpath(linked) if linked.exists() else None) == before


def test_into_without_a_folder_is_refused() -> None:
    result = subprocess.run(
        ["bash", "scripts/build-go-tools.sh", "--into"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "--into needs a folder" in result.stderr


@pytest.mark.parametrize("platform", ["linux/s390x", "linux/amd64,windows/amd64", "linux/arm/v7"])
def test_a_platform_the_image_cannot_have_is_refused_before_anything_changes(
    tmp_path: Path, platform: str
) -> None:
    staged = ROOT / "workers" / "bin"
    before = sorted(p.name for p in staged.rglob("*")) if staged.exists() else None

    result = subprocess.run(
        ["bash", "workers/build-image.sh"],
        cwd=ROOT,
        env={**os.environ, "PLATFORM": platform, "IMAGE": "localhost/k8see-test-refused:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "is not supported; use linux/amd64, linux/arm64 or both" in result.stderr
    assert (sorted(p.name for p in staged.rglob("*")) if staged.exists() else None) == before
