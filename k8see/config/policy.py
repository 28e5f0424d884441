"""Which organizations and repositories may use the platform (docs/configuration.md "Platform
allowlist").

The file format is the reference's ``allowed-orgs.json`` (``mode`` allowlist, denylist or
disabled; ``organizations``; ``repositories``), so existing files keep working. Two things
differ on purpose:

- a missing or invalid file **fails closed**: nobody is allowed until the platform team fixes
  it (the reference let everybody in when the file was missing);
- a refusal says who to ask and which file to change, instead of linking to the caller's own
  issues page.

Matching is case-insensitive, as GitHub names are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from k8see.errors import PolicyError, Where
from k8see.names import check_repo

__all__ = ["Allowlist", "allowlist_schema_text", "check_allowed", "load_allowlist"]

MAX_BYTES = 1024 * 1024
ORG_PATTERN = r"^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?$"
REPO_PATTERN = r"^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?/[a-zA-Z0-9._-]+$"


class Allowlist(BaseModel):
    """The platform's org/repository access list."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, title="k8see allowed organizations"
    )

    schema_ref: str | None = Field(None, alias="$schema")
    description: str | None = None
    mode: Literal["allowlist", "denylist", "disabled"] = Field(
        description="allowlist: only listed orgs/repos; denylist: all but those; disabled: all."
    )
    organizations: list[
        Annotated[str, StringConstraints(min_length=1, max_length=39, pattern=ORG_PATTERN)]
    ] = Field(description="Organization or user names (the owner in owner/repo).")
    repositories: list[Annotated[str, StringConstraints(pattern=REPO_PATTERN)]] = Field(
        default_factory=list, description="Single repositories, as owner/repo."
    )

    def allows(self, repo: str) -> bool:
        """Whether ``repo`` (``owner/name``) may use the platform; case-insensitive."""
        repo = repo.lower()
        org = repo.split("/", 1)[0]
        listed = org in {o.lower() for o in self.organizations} or repo in {
            r.lower() for r in self.repositories
        }
        if self.mode == "allowlist":
            return listed
        if self.mode == "denylist":
            return not listed
        return True


def load_allowlist(path: str | Path) -> Allowlist:
    """Read the allowlist file.

    Raises:
        PolicyError: the file is missing, unreadable, not JSON or not valid; callers treat
            this as "nobody is allowed" (fail closed).
    """
    path = Path(path)
    where = Where(str(path))
    hint = f"The platform team must restore {path} (see config/allowed-orgs.schema.json)."
    try:
        if path.stat().st_size > MAX_BYTES:
            raise PolicyError(f"The allowlist {path} is too large to read.", hint=hint, where=where)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(
            f"The platform allowlist {path} is missing, so no repository is allowed.",
            hint=hint,
            where=where,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(
            f"The platform allowlist {path} could not be read ({type(exc).__name__}), "
            "so no repository is allowed.",
            hint=hint,
            where=where,
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"The platform allowlist {path} is not valid JSON ({exc.msg} at line {exc.lineno}), "
            "so no repository is allowed.",
            hint=hint,
            where=Where(str(path), None, exc.lineno),
        ) from None
    except RecursionError:
        # json recurses once per level: deep nesting exhausts the stack before any check.
        raise PolicyError(
            f"The platform allowlist {path} is nested too deeply to be an allowlist, "
            "so no repository is allowed.",
            hint=hint,
            where=where,
        ) from None
    try:
        return Allowlist.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise PolicyError(
            f"The platform allowlist {path} is not valid ({field or 'top level'}: "
            f"{first['msg']}), so no repository is allowed.",
            hint=hint,
            where=Where(str(path), field, None),
        ) from None


def check_allowed(repo: str, *, allowlist_path: str | Path) -> None:
    """Refuse a repository the platform does not serve.

    Raises:
        PolicyError: ``repo`` is malformed, refused by the list, or the list is unusable.
    """
    check_repo(repo)
    allowlist = load_allowlist(allowlist_path)
    if allowlist.allows(repo):
        return
    org = repo.split("/", 1)[0]
    if allowlist.mode == "denylist":
        message = f"Repository {repo} is blocked by the platform's denylist."
        hint = (
            f"Ask the platform team to remove '{org}' or '{repo}' from the denylist in "
            f"{allowlist_path}."
        )
    else:
        message = f"Organization '{org}' is not allowed to use this k8see platform."
        hint = (
            f"To get access, ask the platform team to add the org '{org}' (or the repository "
            f"'{repo}') to {allowlist_path}."
        )
    raise PolicyError(message, hint=hint, where=Where(str(allowlist_path), "organizations"))


def allowlist_schema_text() -> str:
    """The committed text of ``config/allowed-orgs.schema.json``."""
    schema = Allowlist.model_json_schema(by_alias=True)
    ordered = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    ordered.update(schema)
    return json.dumps(ordered, indent=2) + "\n"
