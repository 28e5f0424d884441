"""Where settings come from: arguments over the environment over the YAML file over defaults.

``load_settings(**overrides)`` used to put explicit arguments beneath the environment, so a
test or a command that passed ``redis={"url": ...}`` got the ambient ``K8SEE_REDIS__URL``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k8see.errors import ConfigError
from k8see.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from k8see.settings import load_settings
args = json.loads(sys.argv[2])
s = load_settings(sys.argv[1] or None, **args)
print(json.dumps({"url": s.redis.url, "timeout": s.build.timeout_seconds,
                  "retries": s.queues.max_retries, "socket": s.redis.socket_timeout_seconds}))
"""


def _probe(file: Path | None, env: dict[str, str], overrides: str = "{}") -> dict[str, object]:
    """Settings as a fresh process sees them (the environment is the process's own)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("K8SEE_")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(file or ""), overrides],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def test_arguments_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    file = tmp_path / "settings.yaml"
    file.write_text(
        "redis: {url: 'redis://file:6379/0', socket_timeout_seconds: 7}\n"
        "build: {timeout_seconds: 111}\n"
        "queues: {max_retries: 2}\n"
    )
    env = {"K8SEE_REDIS__URL": "redis://env:6379/0", "K8SEE_BUILD__TIMEOUT_SECONDS": "222"}
    got = _probe(file, env, '{"redis": {"url": "redis://arg:6379/0"}}')
    # the argument wins over the environment; the environment over the file; nested groups
    # merge field by field (the file's socket timeout survives the argument's url)
    assert got == {"url": "redis://arg:6379/0", "timeout": 222, "retries": 2, "socket": 7.0}
    assert _probe(file, env)["url"] == "redis://env:6379/0"
    assert _probe(file, {})["url"] == "redis://file:6379/0"
    assert _probe(None, {})["url"] == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("redis: [unclosed\n", "is not valid YAML (line 2)"),
        ("- a list\n- of things\n", "holds a list, not a mapping"),
        ("just text", "holds a str, not a mapping"),
        (b"\xff\xfe bad bytes", "cannot be read"),
    ],
)
def test_a_bad_settings_file_is_a_clear_error(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    file = tmp_path / "settings.yaml"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(file)
    assert message in info.value.message
    assert str(file) in info.value.message
    assert info.value.hint


def test_a_missing_settings_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "nope.yaml")


def test_an_empty_settings_file_means_defaults(tmp_path: Path) -> None:
    file = tmp_path / "settings.yaml"
    file.write_text("# nothing yet\n")
    assert load_settings(file).build.timeout_seconds == load_settings().build.timeout_seconds


@pytest.mark.parametrize(
    "value",
    [
        # what an unquoted `export X={"a":{...}}` leaves: the shell strips the double quotes
        "{k8see-pr-namespace:{name:k8see-deploy,namespace:k8see}}",
        '{"deploy-binding": {"name": "x"}',
        '[{"password": "hunter2-in-a-broken-value"',
    ],
)
def test_a_setting_that_is_not_json_in_the_environment_is_named_without_its_value(
    value: str,
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("K8SEE_")}
    result = subprocess.run(
        [sys.executable, "-m", "k8see", "status", "--repo", "acme/shop"],
        env={**clean, "K8SEE_DEPLOY__NAMESPACE_BINDINGS": value},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "K8SEE_DEPLOY__NAMESPACE_BINDINGS is not valid JSON" in result.stderr
    assert "Hint:" in result.stderr
    assert value not in result.stderr and "hunter2" not in result.stderr
