"""Validation that answers 422 Invalid with the real server's field paths and wording.

Only the rules k8see and its charts can trip are checked: object names, label keys and values,
required workload fields, selectors matching template labels, immutable selectors, and data
keys. Everything else is accepted, as a permissive (but not silent) stand-in.
"""

from __future__ import annotations

import json
import re
from typing import Any

from k8see.sandbox.kubeapi.apierrors import invalid
from k8see.sandbox.kubeapi.resources import ResourceType
from k8see.sandbox.kubeapi.selectors import selector_from_match_labels

Obj = dict[str, Any]
Cause = tuple[str, str, str]

SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DATA_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
#: Kinds whose names must be RFC 1123 labels (no dots), not subdomains.
LABEL_NAMED = {"Namespace", "Service"}

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _name_causes(rt: ResourceType, name: str) -> list[Cause]:
    if not name:
        return [
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        ]
    if rt.kind in LABEL_NAMED:
        if len(name) > 63:
            return [
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be no more than 63 characters',
                )
            ]
        if not LABEL_RE.match(name):
            return [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {LABEL_MSG}')]
        return []
    if len(name) > 253 or not SUBDOMAIN_RE.match(name):
        return [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {SUBDOMAIN_MSG}')]
    return []


def _label_causes(labels: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if not isinstance(labels, dict):
        return causes
    for key, value in labels.items():
        name = str(key).rsplit("/", 1)[-1]
        if len(name) > 63 or not QUALIFIED_NAME_RE.match(name):
            causes.append(
                (
                    path,
                    "FieldValueInvalid",
                    f'Invalid value: "{key}": name part must '
                    "consist of alphanumeric characters, '-', '_' or '.', and must start "
                    "and end with an alphanumeric character",
                )
            )
        text = "" if value is None else str(value)
        if len(text) > 63:
            causes.append(
                (
                    path,
                    "FieldValueInvalid",
                    f'Invalid value: "{text}": must be no more than 63 characters',
                )
            )
        elif not LABEL_VALUE_RE.match(text):
            causes.append(
                (path, "FieldValueInvalid", f'Invalid value: "{text}": {LABEL_VALUE_MSG}')
            )
    return causes


def _containers(spec: Any, path: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [(path, "FieldValueRequired", "Required value")]
    containers = spec.get("containers")
    if not containers:
        return [(f"{path}.containers", "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            if not isinstance(c, dict) or not c.get("name"):
                causes.append((f"{path}.{field}[{i}].name", "FieldValueRequired", "Required value"))
            if isinstance(c, dict) and not c.get("image"):
                causes.append(
                    (f"{path}.{field}[{i}].image", "FieldValueRequired", "Required value")
                )
    return causes


def _workload(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    causes: list[Cause] = []
    if not selector:
        causes.append(("spec.selector", "FieldValueRequired", "Required value"))
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    causes += _label_causes(labels, "spec.template.labels")
    if selector and not selector_from_match_labels(selector)({"metadata": {"labels": labels}}):
        causes.append(
            (
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`",
            )
        )
    causes += _containers(template.get("spec"), "spec.template.spec")
    if old is not None and selector and old.get("spec", {}).get("selector") != selector:
        causes.append(
            (
                "spec.selector",
                "FieldValueInvalid",
                f"Invalid value: {json.dumps(selector)}: field is immutable",
            )
        )
    return causes


def _service(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    headless = spec.get("type", "ClusterIP") == "ExternalName" or spec.get("clusterIP") == "None"
    if not headless and not spec.get("ports"):
        causes.append(("spec.ports", "FieldValueRequired", "Required value"))
    for i, port in enumerate(spec.get("ports") or []):
        value = port.get("port")
        if not isinstance(value, int) or not 0 < value < 65536:
            causes.append(
                (
                    f"spec.ports[{i}].port",
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(value)}: must be between 1 and 65535, inclusive",
                )
            )
    return causes


def _data_keys(obj: Obj, old: Obj | None) -> list[Cause]:
    causes: list[Cause] = []
    for field in ("data", "binaryData"):
        for key in obj.get(field) or {}:
            if not DATA_KEY_RE.match(str(key)):
                causes.append(
                    (
                        f"{field}[{key}]",
                        "FieldValueInvalid",
                        f'Invalid value: "{key}": '
                        "a valid config key must consist of alphanumeric characters, "
                        "'-', '_' or '.'",
                    )
                )
    return causes


def _crd(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    for path, value in (
        ("spec.group", spec.get("group")),
        ("spec.names.plural", names.get("plural")),
        ("spec.names.kind", names.get("kind")),
        ("spec.versions", spec.get("versions")),
    ):
        if not value:
            causes.append((path, "FieldValueRequired", "Required value"))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if not causes and obj["metadata"].get("name") != expected:
        causes.append(
            (
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{obj["metadata"].get("name")}": must be spec.names.plural'
                '+"."+spec.group',
            )
        )
    return causes


_BY_KIND = {
    "Deployment": _workload,
    "ReplicaSet": _workload,
    "StatefulSet": _workload,
    "Pod": lambda obj, old: _containers(obj.get("spec"), "spec"),
    "Service": _service,
    "ConfigMap": _data_keys,
    "Secret": _data_keys,
    "CustomResourceDefinition": _crd,
}


def validate(rt: ResourceType, obj: Obj, *, old: Obj | None = None) -> None:
    """Raise 422 Invalid listing every broken rule, or return."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    causes = _name_causes(rt, name)
    causes += _label_causes(meta.get("labels"), "metadata.labels")
    check = _BY_KIND.get(rt.kind)
    if check is not None:
        causes += check(obj, old)
    if causes:
        raise invalid(rt, name, causes)
