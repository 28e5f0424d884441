"""Upload Trivy's SARIF to GitHub code scanning (the Security tab), best-effort.

Why here and not in ``github.py``: it is one endpoint with its own rules, used only by the
scan stage. The reference uploaded only when the repository was public (code scanning on
private repositories needs GitHub Advanced Security); ``scan.upload_sarif: public`` keeps
that rule, and the default ``auto`` simply tries: a repository without code scanning answers
403, which costs one call instead of a visibility lookup on every scan.

Each platform's SARIF is uploaded on its own with its own category
(``runAutomationDetails.id``), so GitHub keeps the amd64 and arm64 analyses side by side
instead of replacing one with the other.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

from k8see.errors import GitHubError
from k8see.integrations.github import GitHubClient
from k8see.names import check_sha

__all__ = ["repo_is_public", "upload_sarif"]


def repo_is_public(client: GitHubClient, repo: str) -> bool:
    """Whether ``repo`` is public (``GET /repos/{repo}``: ``private`` is false)."""
    response = client.http.send(
        "GET",
        client.http.url(f"/repos/{repo}"),
        token=lambda: client.tokens.token_for(repo),
    )
    try:
        return response.json().get("private") is False
    except (ValueError, AttributeError):
        raise GitHubError(
            f"GitHub answered GET /repos/{repo} with a body that is not JSON."
        ) from None


def upload_sarif(
    client: GitHubClient,
    *,
    repo: str,
    sha: str,
    ref: str,
    sarif_file: Path,
    category: str,
) -> str:
    """Upload one SARIF file for ``sha`` on ``ref``; returns GitHub's upload id.

    Args:
        client: k8see's GitHub client (its credential needs ``security_events: write``).
        repo: ``owner/name``.
        sha: The commit the image was built from.
        ref: ``refs/pull/<N>/head`` for a pull request.
        sarif_file: Trivy's SARIF report.
        category: Distinguishes analyses of one commit, e.g. ``k8see-trivy/linux/arm64``.

    Raises:
        GitHubError: GitHub refused the upload (403 without code scanning, 422, ...).
    """
    sarif: dict[str, Any] = json.loads(sarif_file.read_text())
    for run in sarif.get("runs") or []:
        run["automationDetails"] = {"id": f"{category}/"}
    packed = base64.b64encode(gzip.compress(json.dumps(sarif).encode())).decode()
    response = client.http.send(
        "POST",
        client.http.url(f"/repos/{repo}/code-scanning/sarifs"),
        token=lambda: client.tokens.token_for(repo),
        body={"commit_sha": check_sha(sha), "ref": ref, "sarif": packed, "tool_name": "Trivy"},
        unsafe_retry=True,  # the same analysis uploaded twice replaces itself
    )
    try:
        return str(response.json().get("id") or "")
    except (ValueError, AttributeError):
        return ""
