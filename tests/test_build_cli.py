"""``k8see build``: the build and scan stages on a maintainer's machine, as a subprocess.

Covers: ``examples/hello`` built for two platforms and pushed to the local registry under
``pr-<N>`` and ``sha-<sha>``, printed as one JSON object (image by digest, platforms, scan)
that matches what the registry holds; the registry password (given the way a worker gets it)
appears in no output; the text form; bad input (an invalid registry, a directory without
k8s-ee.yaml, no commit) as ``Error:``/``Hint:`` with exit 1, and ``--pr 0`` as usage (2).
Without a vulnerability DB both forms say vulnerabilities were not scanned; with one
(``K8SEE_SCAN__DB_DIR``) the text form counts an image's vulnerabilities by severity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from k8see.integrations.builders import BuildResult
from tests.fixtures.images import HELLO_DIR, PLATFORMS, LocalRegistry

K8SEE = str(Path(sys.executable).parent / "k8see")
SHA = "5" * 40
PASSWORD = "cli-" + "RegistryPassw0rd" * 2


def k8see(
    *args: str, mirror_env: dict[str, str], storage: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "K8SEE_BUILD__REGISTRIES_CONF": mirror_env["CONTAINERS_REGISTRIES_CONF"],
        "K8SEE_BUILD__STORAGE_DIR": str(storage),  # the session's warm buildah cache
        "K8SEE_REGISTRY__USERNAME": "bot",
        "K8SEE_REGISTRY__PASSWORD": PASSWORD,
        **(extra or {}),
    }
    return subprocess.run(
        [K8SEE, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_build_prints_the_image_by_digest_platforms_and_scan(
    registry: LocalRegistry,
    mirror_env: dict[str, str],
    buildah_storage: Path,
    hello_image: BuildResult,  # built first, so this run reuses its cached layers
) -> None:
    done = k8see(
        "build", str(HELLO_DIR), "--pr", "12", "--repo", "Acme/Shop", "--registry",
        registry.host, "--insecure", "--platforms", ",".join(PLATFORMS), "--sha", SHA,
        "--json", mirror_env=mirror_env, storage=buildah_storage,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    # The image is the platform's name for it (lowercased), by digest, under both tags
    repository = "acme/shop/hello"
    assert out["image"].startswith(f"{registry.host}/{repository}@sha256:")
    client = registry.client()
    digest = out["image"].split("@", 1)[1]
    assert client.resolve_digest(f"{repository}:pr-12") == digest
    assert client.resolve_digest(f"{repository}:sha-{SHA}") == digest
    assert client.get_platforms(out["image"]) == list(PLATFORMS) == out["platforms"]
    client.close()
    # The scan ran on both platforms with the platform's policy
    assert set(out["scan"]["reports"]) == set(PLATFORMS)
    assert out["scan"]["policy"] == "warn" and out["scan"]["blocked"] is False
    # No vulnerability DB is configured: the summary says so, distinct from a clean scan
    assert out["scan"]["vulnerabilities"] == "not-scanned"
    assert "no vulnerability database" in out["scan"]["vulnerabilities_note"]
    # The build log went to stderr, and the password nowhere
    assert "STEP" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_text_output_and_bad_input(
    registry: LocalRegistry, mirror_env: dict[str, str], buildah_storage: Path, tmp_path: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return k8see(*args, mirror_env=mirror_env, storage=buildah_storage)

    common = ["--pr", "3", "--repo", "acme/shop", "--sha", SHA]
    bad_registry = run("build", str(HELLO_DIR), *common, "--registry", "Bad Host!")
    assert bad_registry.returncode == 1
    assert "Error:" in bad_registry.stderr and "Hint:" in bad_registry.stderr
    no_config = run("build", str(tmp_path), *common, "--registry", registry.host)
    assert no_config.returncode == 1
    assert "There is no k8s-ee.yaml" in no_config.stderr
    (tmp_path / "k8s-ee.yaml").write_text("projectId: nogit\n")
    no_sha = run("build", str(tmp_path), "--pr", "3", "--repo", "a/b", "--registry", "r:5000")
    assert no_sha.returncode == 1 and "--sha" in no_sha.stderr
    usage = run("build", str(HELLO_DIR), "--pr", "0", "--repo", "a/b", "--registry", "r:1")
    assert usage.returncode == 2
    # The text form, one platform (warm: hello's amd64 layers are cached)
    text = run("build", str(HELLO_DIR), *common, "--registry", registry.host, "--insecure",
               "--platforms", "linux/amd64")  # fmt: skip
    assert text.returncode == 0, text.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in text.stdout.strip().splitlines())
    assert lines["Image"].strip().startswith(f"{registry.host}/acme/shop/hello@sha256:")
    assert lines["Platforms"].strip() == "linux/amd64"
    assert "policy warn" in lines["Scan"]
    assert "vulnerabilities NOT scanned (no vulnerability database is configured" in lines["Scan"]
    assert PASSWORD not in text.stdout + text.stderr


def test_text_output_counts_vulnerabilities_with_a_db(
    registry: LocalRegistry,
    mirror_env: dict[str, str],
    buildah_storage: Path,
    vulnerable_app: Path,
    vuln_db: Path,
) -> None:
    # Given the platform's vulnerability DB folder and an app with vulnerable packages
    done = k8see(
        "build", str(vulnerable_app), "--pr", "4", "--repo", "acme/vulnapp", "--sha", SHA,
        "--registry", registry.host, "--insecure", "--platforms", "linux/amd64",
        mirror_env=mirror_env, storage=buildah_storage,
        extra={"K8SEE_SCAN__DB_DIR": str(vuln_db)},
    )  # fmt: skip
    # Then the scan line counts them by severity, as a real vulnerability scan
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in done.stdout.strip().splitlines())
    assert lines["Scan"].strip() == "1 critical, 2 high, 1 medium, 1 low (policy warn)"
