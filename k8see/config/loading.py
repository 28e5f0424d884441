"""Read ``k8s-ee.yaml`` safely and turn every problem into one ``ConfigError``.

The file comes from a pull request, so it is untrusted input. It is read with a
``yaml.SafeLoader`` subclass that:

- refuses files over 256 KiB, more than one document, nesting deeper than 64 levels, and
  alias abuse (the expanded size is computed on the composed node graph, so an alias bomb is
  refused before anything is expanded);
- refuses duplicate keys, pointing at the second one (PyYAML silently keeps the last);
- resolves scalars as YAML 1.2 does (what the reference's ``yq`` did): ``on``, ``yes`` and
  ``2024-01-01`` stay strings, ``010`` is ten;
- remembers the line of every mapping key and sequence item, so a validation error points at
  the line to change.

Validation errors are collected into one message, one line per problem
(``k8s-ee.yaml:LINE: field.path: what is wrong``), with a hint that says how to fix them.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from k8see.config.explain import describe_errors
from k8see.config.model import RepoConfig
from k8see.errors import ConfigError, Where

__all__ = ["MAX_BYTES", "load_repo_config", "validate_repo_config"]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 100
#: Characters of an integer (digits, or 0x/0o and digits): 2**64 has 20 digits.
MAX_INT_CHARS = 24
#: Nodes after expanding aliases; a 256 KiB file cannot legitimately get near this.
MAX_EXPANDED_NODES = 200_000
_CREATE_HINT = "Create k8s-ee.yaml at the repository root with at least: projectId: your-project-id"


class _Refused(yaml.YAMLError):
    """A document the loader will not accept, with the line it refers to and how to fix it."""

    def __init__(self, message: str, line: int | None = None, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.hint = hint


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars, limits, duplicate-key and line tracking."""

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                line = self._event_line()
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name)", line)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self._event_line())
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _event_line(self) -> int:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        return int(event.start_mark.line) + 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        """The mapping as written, refusing a key given twice (PyYAML keeps the last).

        Checked here, before merge keys (``<<``) are flattened into the node, so a key a
        merge brings in may still be overridden; and by key, not by line, so a flow mapping
        (``{port: 1, port: 2}``) is checked too.
        """
        node: MappingNode = super().compose_mapping_node(anchor)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise _Refused("a mapping key must be a plain value", line) from None
            seen[key] = line if first is None else first
            if first is not None:
                where = "earlier on the same line" if first == line else f"on line {first}"
                raise _Refused(
                    f"duplicate key {_shown(key)} (first defined {where})",
                    line,
                    hint=f"Keep one {_shown(key)}: YAML would silently use the last one.",
                )
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            # PyYAML's constructors trust explicit tags: `!!int abc` raises ValueError.
            tag = str(node.tag).removeprefix("tag:yaml.org,2002:")
            raise _Refused(
                f"the value tagged !!{tag} is not a valid {tag}", node.start_mark.line + 1
            ) from None

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if len(digits) > MAX_INT_CHARS:
            # Python refuses to print an int of over 4300 digits, and no field needs one.
            raise _Refused(
                f"the number {_shown(text)} is too large ({len(digits)} characters)",
                node.start_mark.line + 1,
                hint=f"Write a number of at most {MAX_INT_CHARS} characters, e.g. port: 3000.",
            )
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits)


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _SafeLoader.construct_yaml_int)
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_SafeLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])

#: A line tree: for a mapping, key -> (line, subtree); for a sequence, index -> (line, subtree).
Lines = dict[Any, tuple[int, Any]]


def _shown(value: Any, limit: int = 40) -> str:
    """A key or value for a message: quoted, shortened, one line."""
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[: limit - 3] + "...")
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expanded_size(root: Node) -> int:
    """Nodes the document has once aliases are expanded, without expanding them."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in active:
            raise _Refused("an alias refers to its own anchor", node.start_mark.line + 1)
        active.add(id(node))
        total = 1
        if isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, SequenceNode):
            total += sum(size(item) for item in node.value)
        active.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root)


def _line_tree(loader: _SafeLoader, node: Node) -> Lines:
    memo: dict[int, Lines] = {}

    def walk(node: Node) -> Lines:
        if id(node) in memo:
            return memo[id(node)]
        tree: Lines = {}
        memo[id(node)] = tree
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode):
                    key = loader.construct_object(key_node)
                    if isinstance(key, Hashable):
                        tree[key] = (key_node.start_mark.line + 1, walk(value_node))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                tree[index] = (item.start_mark.line + 1, walk(item))
        return tree

    return walk(node)


def _parse(text: str) -> tuple[Any, Lines, int]:
    """The document's data, its line tree and the line it starts on."""
    loader = _SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if "expected a single document" in f"{exc.context} {exc.problem}":
                line = exc.problem_mark.line + 1 if exc.problem_mark else None
                raise _Refused("holds more than one YAML document ('---')", line) from None
            raise
        if node is None:
            return None, {}, 1
        if _expanded_size(node) > MAX_EXPANDED_NODES:
            raise _Refused(
                "expands to too many values through aliases (*name); refused as an alias bomb",
                node.start_mark.line + 1,
            )
        data = loader.construct_document(node)
        return data, _line_tree(loader, node), node.start_mark.line + 1
    finally:
        loader.dispose()


def _yaml_error(exc: yaml.YAMLError, filename: str, text: str) -> ConfigError:
    if isinstance(exc, _Refused):
        return ConfigError(
            f"{filename}:{exc.line}: {exc.message}." if exc.line else f"{filename}: {exc.message}.",
            hint=exc.hint
            or "Write plain YAML: one document, no repeated keys, anchors only for small reuse.",
            where=Where(filename, None, exc.line),
        )
    line = None
    problem = getattr(exc, "problem", None) or "invalid YAML"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        problem = f"{exc.reason} (character {exc.character!r})"
    where = f"{filename}:{line}" if line else filename
    return ConfigError(
        f"{where}: not valid YAML: {problem}.",
        hint="Check the indentation and quoting around that line; "
        "quote values that contain ': ' or start with a special character.",
        where=Where(filename, None, line),
    )


def _read(source: Path | str, filename: str) -> str:
    if isinstance(source, str):
        if len(source) > MAX_BYTES or len(source.encode("utf-8", "replace")) > MAX_BYTES:
            raise _too_big(filename)
        return source
    try:
        if not source.is_file():
            raise ConfigError(
                f"{filename} was not found" + (" (it is a directory)." if source.is_dir() else "."),
                hint=_CREATE_HINT,
                where=Where(filename),
            )
        if source.stat().st_size > MAX_BYTES:
            raise _too_big(filename)
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{filename} could not be read ({exc.strerror or type(exc).__name__}).",
            hint="Make sure the file is a regular, readable file in the repository.",
            where=Where(filename),
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{filename} is not UTF-8 text (bad byte at offset {exc.start}).",
            hint="Save the file as UTF-8.",
            where=Where(filename),
        ) from None


def _too_big(filename: str) -> ConfigError:
    return ConfigError(
        f"{filename} is larger than {MAX_BYTES // 1024} KiB and was not read.",
        hint="A k8s-ee.yaml is a few dozen lines; move large content out of it.",
        where=Where(filename),
    )


def load_repo_config(source: Path | str, *, filename: str = "k8s-ee.yaml") -> RepoConfig:
    """Load and validate a repository's ``k8s-ee.yaml``.

    Args:
        source: The file's path, or its text.
        filename: The name messages use for it (the config path in the repository).

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, refused, or invalid; the
            message lists every problem with its line and the hint says how to fix them.
    """
    text = _read(source, filename)
    try:
        data, lines, start = _parse(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, filename, text) from None
    except RecursionError:
        raise _yaml_error(
            _Refused(f"nested deeper than {MAX_DEPTH} levels"), filename, text
        ) from None
    if data is None:
        raise ConfigError(f"{filename} is empty.", hint=_CREATE_HINT, where=Where(filename))
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{filename}:{start}: the top level must be a mapping of keys, not a {_kind(data)}.",
            hint="Start the file with keys, e.g. `projectId: myapp` on the first line.",
            where=Where(filename, None, start),
        )
    return validate_repo_config(data, filename=filename, lines=lines, start_line=start)


def validate_repo_config(
    data: Any,
    *,
    filename: str = "k8s-ee.yaml",
    lines: Lines | None = None,
    start_line: int | None = None,
) -> RepoConfig:
    """Validate already-parsed data (e.g. a ``to_dict()`` from a message) into ``RepoConfig``.

    Raises:
        ConfigError: one error listing every problem; lines are given when ``lines`` is.
    """
    try:
        return RepoConfig.model_validate(data)
    except ValidationError as exc:
        raise describe_errors(
            exc.errors(include_url=False),
            data=data,
            filename=filename,
            lines=lines or {},
            start_line=start_line,
        ) from None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "plain value" if isinstance(value, str) else type(value).__name__
