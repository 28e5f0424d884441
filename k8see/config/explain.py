"""Turn pydantic's validation errors into one ``ConfigError`` a repository owner can act on.

Pydantic reports ``('env', 'PORT')`` and "Input should be a valid string"; a user needs
``k8s-ee.yaml:7: env.PORT: must be a string, not the number 8080`` and
``quote it: PORT: "8080"``. This module does that translation: it cleans pydantic's locations
(union tags, ``[key]`` markers), finds the YAML line, words the problem, and picks a hint.
Values are echoed only where they cannot be secrets (never an ``env`` value whose name looks
like a credential).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from k8see.config import model
from k8see.errors import ConfigError, Where

__all__ = ["describe_errors", "format_path"]

MAX_LISTED = 30
_GENERAL_HINT = "See docs/configuration.md for every field of k8s-ee.yaml."
_UNION_TAGS = frozenset({"bool", "object", "null"})
_SECRETISH = re.compile(r"(?i)secret|token|passw|pwd|key|credential|auth|private|cert|salt")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

#: What a value of each field should look like, keyed by the field's YAML name.
_PATTERN_HINTS = {
    "projectId": f"projectId must match {model.PROJECT_ID_PATTERN}: 1-20 lowercase letters, "
    "digits and hyphens, starting and ending with a letter or digit, e.g. projectId: myapp",
    "cpu": 'write millicores or cores, e.g. cpu: "500m" or cpu: "0.5"',
    "memory": 'use Mi or Gi, e.g. memory: "256Mi"',
    "storage": 'use Mi, Gi or Ti, e.g. storage: "2Gi"',
    "interval": 'use a number followed by s, m or h, e.g. interval: "30s"',
    "healthPath": 'start with "/" and use no spaces, e.g. healthPath: /health',
    "metricsPath": 'start with "/" and use no spaces, e.g. metricsPath: /metrics',
    "writableDirs": 'use absolute paths of letters, digits, ".", "_", "-" and "/", '
    "e.g. - /app/cache",
    "env": "variable names start with a letter or underscore and hold only letters, digits "
    "and underscores, e.g. LOG_LEVEL",
    "annotations": "use a Kubernetes annotation key, e.g. example.com/some-name",
    "name": "use the lowercase name of a Secret or ConfigMap, e.g. app-secrets",
    "repository": "use a lowercase image repository without a tag, e.g. ghcr.io/acme/shop",
}


def format_path(path: Sequence[Any]) -> str:
    """``('envFrom', 0, 'secretRef')`` → ``envFrom[0].secretRef``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{_short(part)}]"
    return out


def describe_errors(
    errors: Sequence[ErrorDetails],
    *,
    data: Any,
    filename: str,
    lines: Mapping[Any, tuple[int, Any]],
    start_line: int | None,
) -> ConfigError:
    """One ``ConfigError`` listing every problem, sorted by line, with the hints to fix them."""
    problems: list[tuple[int, str, str, str | None]] = []
    for error in errors:
        path, is_key = _clean_path(error["loc"], data)
        line = _line_of(path, lines) or start_line
        what, hint = _explain(error, path, is_key)
        problems.append((line or 0, format_path(path), what, hint))
    problems.sort(key=lambda p: p[0])
    first = problems[0] if problems else (0, "", "", None)
    where = Where(filename, first[1] or None, first[0] or None)
    if len(problems) <= 1:
        line, shown, what, hint = first
        place = f"{filename}:{line}" if line else filename
        return ConfigError(
            f"{place}: {shown}: {what}" if shown else f"{place}: {what}",
            hint=hint or _GENERAL_HINT,
            where=where,
        )
    # Each problem is followed by its own hint: a list of hints apart from the list of
    # problems leaves the reader to pair them up.
    rendered = [f"{filename} has {len(problems)} problems:"]
    for line, shown, what, hint in problems[:MAX_LISTED]:
        place = f"{filename}:{line}" if line else filename
        rendered.append(f"{place}: {shown}: {what}" if shown else f"{place}: {what}")
        if hint:
            rendered.append(f"  Hint: {hint}")
    if len(problems) > MAX_LISTED:
        rendered.append(f"... and {len(problems) - MAX_LISTED} more problems")
    return ConfigError(
        "\n".join(rendered),
        hint=f"Fix each problem as the hint below it says; {_GENERAL_HINT[0].lower()}"
        f"{_GENERAL_HINT[1:]}",
        where=where,
    )


def _clean_path(loc: Sequence[Any], data: Any) -> tuple[tuple[Any, ...], bool]:
    """Drop pydantic's union tags and ``[key]`` markers, keeping the user's own keys."""
    out: list[Any] = []
    node = data
    is_key = False
    for part in loc:
        if part == "[key]":
            is_key = True
            continue
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            node = node[part]
        elif part in _UNION_TAGS:
            continue
        else:
            node = None
        out.append(part)
    return tuple(out), is_key


def _line_of(path: Sequence[Any], lines: Mapping[Any, tuple[int, Any]]) -> int | None:
    """The line of the deepest part of ``path`` present in the document."""
    found = None
    tree: Any = lines
    for part in path:
        if not isinstance(tree, Mapping) or part not in tree:
            break
        found, tree = tree[part]
    return found


def _explain(error: ErrorDetails, path: tuple[Any, ...], is_key: bool) -> tuple[str, str | None]:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    field = _field_name(path)
    # env values may be credentials: describe their type, never their text.
    reveal = path[:1] != ("env",)
    if kind == "missing":
        example = "your-project-id" if field == "projectId" else "..."
        return "is missing (it is required)", f"add it, e.g. {field}: {example}"
    if kind == "extra_forbidden":
        if path[:1] == ("databases",) and path[-1] in model.PLATFORM_KEYS:
            return (
                "is set by the platform, not by k8s-ee.yaml",
                f"remove {path[-1]}: database security contexts are the platform's",
            )
        return "unknown key", _suggest_key(path)
    if kind == "string_type":
        return _not_a_string(path, value)
    if kind == "string_pattern_mismatch":
        hint_key = str(path[-2]) if is_key and len(path) > 1 else field
        shown = "name" if is_key else "value"
        return (
            f"{shown} {_short(value)} is not valid",
            _PATTERN_HINTS.get(hint_key, f"the {shown} must match {ctx.get('pattern')}"),
        )
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        hint = f"write it without quotes, e.g. {field}: 3000" if isinstance(value, str) else None
        return f"must be a whole number, not {_describe(value, reveal)}", hint
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        if field == "port":
            return f"{_short(value)} is out of range", "use a port between 1 and 65535"
        return _lower(error["msg"]), None
    if kind == "bool_type":
        if path[:1] == ("databases",) and len(path) == 2:
            return (
                f"must be true, false or a mapping of options, not {_describe(value, reveal)}",
                f"write {field}: true, or options such as {field}: {{storage: 2Gi}}",
            )
        return f"must be true or false, not {_describe(value, reveal)}", f"write {field}: true"
    if kind == "literal_error":
        return f"{_short(value)} is not allowed", f"use one of: {ctx.get('expected')}"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"must be a mapping of keys, not {_describe(value, reveal)}", None
    if kind == "list_type":
        return (
            f"must be a list, not {_describe(value, reveal)}",
            f"write it as a list: {field}: [...]",
        )
    if kind == "value_error":
        return _lower(str(ctx.get("error", error["msg"]))), None
    return _lower(error["msg"]), None


def _not_a_string(path: tuple[Any, ...], value: Any) -> tuple[str, str | None]:
    field = _field_name(path)
    what = f"must be a string, not {_describe(value)}"
    if isinstance(value, bool | int | float):
        shown = _yaml_scalar(value)
        if path[:1] == ("env",) and _SECRETISH.search(str(field)):
            shown = "..."
            what = "must be a string, not a number or boolean"
        return what, f'quote it: {field}: "{shown}"'
    if value is None:
        return "must be a string, but it is empty", f'give it a value, e.g. {field}: ""'
    return what, None


def _suggest_key(path: tuple[Any, ...]) -> str:
    allowed = _allowed_keys(path[:-1])
    unknown = str(path[-1]) if path else ""
    by_lower = {key.lower(): key for key in allowed}
    close = difflib.get_close_matches(unknown.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f'did you mean "{by_lower[close[0]]}"?'
    return "allowed keys here: " + ", ".join(allowed) if allowed else "remove it"


def _allowed_keys(path: Sequence[Any]) -> list[str]:
    current: type[BaseModel] | None = model.RepoConfig
    for part in path:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        if part not in fields:
            return []
        current = _submodel(fields[part].annotation)
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _field_name(path: Sequence[Any]) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return "value"


def _describe(value: Any, reveal: bool = True) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"the boolean {_yaml_scalar(value)}"
    if isinstance(value, int | float):
        return f"the number {_yaml_scalar(value)}"
    if isinstance(value, str):
        return f"the text {_short(value)}" if reveal else "a text value"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _short(value: Any, limit: int = 40) -> str:
    if not isinstance(value, str):
        return _yaml_scalar(value)[:limit]
    text = value
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _lower(text: str) -> str:
    text = text.removeprefix("Value error, ")
    return text[:1].lower() + text[1:]
