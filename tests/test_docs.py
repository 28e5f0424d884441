"""The documentation states what the code does: the platform-settings reference is generated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_platform_settings_reference_lists_every_setting() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_doc.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert generated in committed, (
        "docs/configuration.md is out of date: regenerate its last section with "
        "`python scripts/settings_doc.py`"
    )
