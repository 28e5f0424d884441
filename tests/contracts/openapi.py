"""GitHub's OpenAPI description as a contract: is this request, and this answer, what GitHub says?

``OpenApiContract`` loads ``api.github.com.json`` of ``@octokit/openapi`` (OpenAPI 3.0.3, about
13 MB, with ``$ref``s) once, indexes its operations by method and path template, and checks
one exchange lazily: only the operation it hits is looked at, and a schema's validator is built
the first time it is needed and kept.

Checked for a request: that GitHub has the operation (method + templated path, literal segments
winning over ``{params}`` as OpenAPI says); the path and query parameters (known names,
required ones present, values valid against their schemas); the JSON body (required or not
allowed, valid against the schema, nothing ``readOnly`` sent). For an answer: the status is one
the operation documents (or one GitHub gives any endpoint: 304 to a conditional GET, 401, 403
and 429 for credentials and rate limits, 5xx) and a JSON body is valid against that status'
schema (``basic-error`` for the undocumented ones), nothing ``writeOnly`` returned.

Schemas are OpenAPI 3.0 schemas (``nullable``, ``readOnly``/``writeOnly``): validated with
``openapi-schema-validator``'s OAS 3.0 validators on ``jsonschema``, with ``$ref``s resolved in
the document itself through a ``referencing`` registry.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from jsonschema.exceptions import ValidationError, best_match
from openapi_schema_validator import (
    OAS30ReadValidator,
    OAS30WriteValidator,
    oas30_format_checker,
)
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_URI = "urn:k8see:github-openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"\{([^}/]+)\}")
#: Answers GitHub may give to any endpoint though the description lists them only for some:
#: 401 (credentials), 403 and 429 (permissions, rate limits), 404 (anything the credential
#: cannot see), 5xx.
ANY_ENDPOINT_STATUSES = frozenset({401, 403, 404, 429, 500, 502, 503, 504})
#: Answers GitHub gives that its description omits, each with where GitHub says so.
KNOWN_OMISSIONS = frozenset(
    {
        # "You cannot delete the last tagged version of a package. You must delete the package
        # instead." (docs.github.com, "Deleting and restoring a package"; REST packages API).
        ("packages/delete-package-version-for-org", 400),
        ("packages/delete-package-version-for-user", 400),
        ("packages/delete-package-version-for-authenticated-user", 400),
    }
)


@dataclass(frozen=True)
class Violation:
    """One way an exchange departs from GitHub's description."""

    method: str
    path: str
    #: ``request`` or ``response``.
    side: str
    #: Which part: ``operation``, ``path parameter 'owner'``, ``query parameter 'per_page'``,
    #: ``body at $.ref``, ``status``.
    where: str
    #: The schema rule that failed (``type``, ``required``, ``enum``, ``unknown``, ...).
    rule: str
    message: str
    operation: str = ""

    def __str__(self) -> str:
        op = f" ({self.operation})" if self.operation else ""
        return (
            f"{self.method} {self.path}{op}: {self.side} {self.where} breaks GitHub's "
            f"OpenAPI description [{self.rule}]: {self.message}"
        )


@dataclass
class Operation:
    method: str
    template: str
    pointer: str  # JSON pointer of the operation object in the document
    spec: dict[str, Any]
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    query_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.spec.get("operationId", ""))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class OpenApiContract:
    """GitHub's REST API as described by ``@octokit/openapi``; thread-safe.

    Args:
        path: ``api.github.com.json`` (OpenAPI 3.0.x, not the dereferenced variant).
    """

    def __init__(self, path: Path) -> None:
        with path.open("rb") as handle:
            self.document: dict[str, Any] = json.load(handle)
        if not str(self.document.get("openapi", "")).startswith("3.0."):
            raise ValueError(f"{path} is not an OpenAPI 3.0 description")
        self.version = str(self.document.get("info", {}).get("version", "?"))
        resource = Resource.from_contents(self.document, default_specification=DRAFT4)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        #: (method, segment count) -> operations, most literal segments first.
        self._index: dict[tuple[str, int], list[tuple[re.Pattern[str], int, str, list[str]]]] = {}
        for template, item in self.document["paths"].items():
            segments = template.strip("/").split("/")
            literal = sum(1 for s in segments if "{" not in s)
            names = _PARAM.findall(template)
            pattern = "".join(
                "([^/]+)" if i % 2 else re.escape(part)
                for i, part in enumerate(_PARAM.split(template))
            )
            regex = re.compile(f"^{pattern}$")
            for method in item:
                if method in METHODS:
                    self._index.setdefault((method.upper(), len(segments)), []).append(
                        (regex, literal, template, names)
                    )
        for found in self._index.values():
            found.sort(key=lambda entry: -entry[1])
        self._operations: dict[tuple[str, str], Operation] = {}
        self._validators: dict[tuple[str, bool], Any] = {}
        self._lock = threading.Lock()

    # -- lookup --------------------------------------------------------------------------------

    def resolve(self, node: Any, pointer: str) -> tuple[Any, str]:
        """Follow local ``$ref``s of a non-schema object (parameter, response, request body)."""
        while isinstance(node, dict) and "$ref" in node:
            ref = str(node["$ref"])
            if not ref.startswith("#/"):
                raise ValueError(f"non-local $ref {ref!r} at {pointer}")
            pointer = ref[1:]
            node = self.document
            for token in pointer.lstrip("/").split("/"):
                node = node[token.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation for ``method path`` and the raw (still escaped) path parameters."""
        segments = path.strip("/").split("/")
        for regex, _, template, names in self._index.get((method.upper(), len(segments)), []):
            found = regex.match(path)
            if found:
                return self._operation(method.upper(), template), dict(
                    zip(names, found.groups(), strict=True)
                )
        return None

    def _operation(self, method: str, template: str) -> Operation:
        with self._lock:
            key = (method, template)
            if key in self._operations:
                return self._operations[key]
            item = self.document["paths"][template]
            pointer = f"/paths/{_escape(template)}/{method.lower()}"
            op = Operation(method, template, pointer, item[method.lower()])
            declared = [
                (p, f"/paths/{_escape(template)}/parameters/{i}")
                for i, p in enumerate(item.get("parameters", []))
            ]
            declared += [
                (p, f"{pointer}/parameters/{i}")
                for i, p in enumerate(op.spec.get("parameters", []))
            ]
            for raw, where in declared:
                param, at = self.resolve(raw, where)
                entry = {**param, "_pointer": at}
                if param.get("in") == "path":
                    op.path_params[str(param["name"])] = entry
                elif param.get("in") == "query":
                    op.query_params[str(param["name"])] = entry
            self._operations[key] = op
            return op

    def validator(self, pointer: str, *, request: bool) -> Any:
        """The OAS 3.0 validator of the schema at ``pointer`` (cached): the write rules
        (no ``readOnly``) for requests, the read rules (no ``writeOnly``) for answers."""
        with self._lock:
            key = (pointer, request)
            if key not in self._validators:
                cls = OAS30WriteValidator if request else OAS30ReadValidator
                self._validators[key] = cls(
                    {"$ref": f"{SPEC_URI}#{pointer}"},
                    registry=self.registry,
                    format_checker=oas30_format_checker,
                )
            return self._validators[key]

    # -- checks --------------------------------------------------------------------------------

    def check_request(
        self, method: str, target: str, body: Any, *, has_body: bool
    ) -> tuple[Operation | None, list[Violation]]:
        """Check one request (``target``: path and query as sent). Returns its operation."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        found = self.match(method, path)
        if found is None:
            return None, [
                Violation(
                    method,
                    path,
                    "request",
                    "operation",
                    "unknown",
                    f"GitHub has no {method} {path} (no path template of its "
                    "description matches it)",
                )
            ]
        op, raw_params = found
        out: list[Violation] = []

        def flag(where: str, rule: str, message: str) -> None:
            out.append(Violation(method, path, "request", where, rule, message, op.id))

        for name, raw in raw_params.items():
            param = op.path_params.get(name)
            if param is not None:
                self._check_value(param, unquote(raw), f"path parameter {name!r}", flag)
        query = parse_qsl(parts.query, keep_blank_values=True)
        seen: set[str] = set()
        for name, value in query:
            param = op.query_params.get(name)
            if param is None:
                flag(
                    f"query parameter {name!r}",
                    "unknown",
                    f"{op.id} takes no query parameter {name!r} (it takes "
                    f"{sorted(op.query_params) or 'none'})",
                )
                continue
            if name in seen:
                flag(f"query parameter {name!r}", "repeated", "sent more than once")
            seen.add(name)
            self._check_value(param, value, f"query parameter {name!r}", flag)
        for name, param in op.query_params.items():
            if param.get("required") and name not in seen:
                flag(f"query parameter {name!r}", "required", "is required but missing")
        self._check_request_body(op, body, has_body=has_body, flag=flag)
        return op, out

    def _check_value(self, param: dict[str, Any], raw: str, where: str, flag: Any) -> None:
        schema = param.get("schema")
        if schema is None:
            return
        resolved, _ = self.resolve(schema, f"{param['_pointer']}/schema")
        value = _coerce(raw, resolved)
        validator = self.validator(f"{param['_pointer']}/schema", request=True)
        for error in _errors(validator, value):
            flag(where, str(error.validator), f"{raw!r}: {error.message}")

    def _check_request_body(self, op: Operation, body: Any, *, has_body: bool, flag: Any) -> None:
        raw = op.spec.get("requestBody")
        if raw is None:
            if has_body:
                flag("body", "unexpected", f"{op.id} takes no request body")
            return
        spec, pointer = self.resolve(raw, f"{op.pointer}/requestBody")
        if not has_body:
            if spec.get("required"):
                flag("body", "required", f"{op.id} requires a JSON body")
            return
        media = _json_media(spec.get("content", {}))
        if media is None or "schema" not in spec["content"][media]:
            return
        validator = self.validator(f"{pointer}/content/{_escape(media)}/schema", request=True)
        for error in _errors(validator, body):
            flag(f"body at {error.json_path}", str(error.validator), error.message)

    def check_response(
        self, op: Operation, method: str, path: str, status: int, body: Any, *, is_json: bool
    ) -> list[Violation]:
        """Check an answer to an operation ``check_request`` found."""
        out: list[Violation] = []
        responses = op.spec.get("responses", {})
        raw = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
        pointer = f"{op.pointer}/responses/{status}"
        if raw is None:
            if status == 304 and method == "GET":
                return out  # a conditional GET: no body
            if status not in ANY_ENDPOINT_STATUSES and (op.id, status) not in KNOWN_OMISSIONS:
                documented = ", ".join(sorted(responses))
                return [
                    Violation(
                        method,
                        path,
                        "response",
                        "status",
                        "undocumented",
                        f"{status} is not an answer {op.id} gives (it documents {documented})",
                        op.id,
                    )
                ]
            spec: Any = {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/basic-error"}}
                }
            }
            pointer = "/components/responses/_any"
            schema_pointer = "/components/schemas/basic-error"
        else:
            spec, pointer = self.resolve(raw, pointer)
            schema_pointer = ""
        content = spec.get("content") or {}
        media = _json_media(content)
        if media is None or "schema" not in content.get(media, {}):
            if content and not media and is_json:
                out.append(
                    Violation(
                        method,
                        path,
                        "response",
                        "body",
                        "media-type",
                        f"{status} answers {sorted(content)}, not JSON",
                        op.id,
                    )
                )
            return out
        if not schema_pointer:
            schema_pointer = f"{pointer}/content/{_escape(media)}/schema"
        if not is_json:
            out.append(
                Violation(
                    method,
                    path,
                    "response",
                    "body",
                    "media-type",
                    f"{status} must be JSON ({media})",
                    op.id,
                )
            )
            return out
        validator = self.validator(schema_pointer, request=False)
        for error in _errors(validator, body):
            out.append(
                Violation(
                    method,
                    path,
                    "response",
                    f"{status} body at {error.json_path}",
                    str(error.validator),
                    error.message,
                    op.id,
                )
            )
        return out


def _errors(validator: Any, instance: Any) -> Iterable[ValidationError]:
    """The most useful error per failing branch (``best_match`` within each top-level error,
    so an ``anyOf``/``oneOf`` mismatch names the rule that failed, not only the union), with
    the missing required properties of one object reported together."""
    missing: dict[str, ValidationError] = {}
    for error in validator.iter_errors(instance):
        error = best_match([error]) if error.context else error
        if error.validator == "required":
            name = error.message.split(" is a required property")[0]
            first = missing.get(error.json_path)
            if first is None:
                missing[error.json_path] = error
                error.message = f"lacks required {name}"
            else:
                first.message += f", {name}"
            continue
        yield error
    yield from missing.values()


def _json_media(content: dict[str, Any]) -> str | None:
    for media in content:
        if media == "application/json" or media.endswith("+json"):
            return media
    return None


def _coerce(raw: str, schema: Any) -> Any:
    """A path or query string as the JSON value its schema expects (``per_page=30`` is an
    integer); a string that is not one stays a string, so the type check reports it."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    if kind == "array":
        return raw.split(",")
    return raw
