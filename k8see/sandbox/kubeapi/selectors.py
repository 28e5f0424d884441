"""Label and field selectors as the API server parses them from list and watch queries.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``,
comma-separated (all must hold). Field selectors: ``metadata.name``, ``metadata.namespace`` and
(for pods) ``status.phase``, with ``=``, ``==`` and ``!=``; other fields are refused with the
real server's 400 message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from k8see.sandbox.kubeapi.apierrors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")
FIELDS = {"metadata.name", "metadata.namespace"}
POD_FIELDS = {"status.phase", "spec.nodeName", "spec.restartPolicy"}
EVENT_OBJECT_FIELDS = (
    "name",
    "namespace",
    "kind",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside ``(...)``."""
    terms, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    if m := _SET_RE.match(term):
        key, op = m.group(2), m.group(3)
        values = {v.strip() for v in m.group(4).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ_RE.match(term):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS_RE.match(term):
        neg, key = m.groups()
        if neg:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: {term.strip()!r}: invalid label selector")


def label_matcher(selector: str | None) -> Matcher:
    """A predicate on objects for a ``labelSelector`` query value."""
    if not selector:
        return lambda obj: True
    terms = [_label_term(t) for t in _split_terms(selector)]

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(term(labels) for term in terms)

    return match


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_matcher(selector: str | None, *, kind: str) -> Matcher:
    """A predicate for a ``fieldSelector`` query value; unknown fields are a 400 as for real."""
    if not selector:
        return lambda obj: True
    allowed = FIELDS | (POD_FIELDS if kind == "Pod" else set())
    if kind == "Secret":
        allowed = allowed | {"type"}
    if kind == "Event":
        allowed = (
            allowed
            | {f"involvedObject.{f}" for f in EVENT_OBJECT_FIELDS}
            | {"reason", "type", "source"}
        )
    checks: list[tuple[str, str, str]] = []
    for term in _split_terms(selector):
        m = _EQ_RE.match(term)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f"field label not supported: {path}")
        checks.append((path, op, value))

    def match(obj: dict[str, Any]) -> bool:
        for path, op, value in checks:
            equal = _field_value(obj, path) == value
            if equal == (op == "!="):
                return False
        return True

    return match


def selector_from_match_labels(selector: dict[str, Any] | None) -> Matcher:
    """A predicate for a LabelSelector object (``matchLabels`` and ``matchExpressions``)."""
    if not selector:
        return lambda obj: False
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            terms.append(str(key))
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    if not terms:
        return lambda obj: True
    return label_matcher(",".join(terms))
