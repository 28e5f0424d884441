"""The four PATCH content types: JSON merge, JSON patch, strategic merge, and apply.

Strategic merge is what ``kubectl apply`` and Helm 3's three-way merge send for built-in kinds:
lists of containers, env, ports, volumes and volume mounts merge by their Kubernetes merge key
instead of being replaced, and the directives ``$patch: delete|replace|merge``, ``$retainKeys``,
``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>`` are honoured. The merge keys
come from the Go struct tags of the core types (``patchMergeKey``); lists without one are
replaced, as on a real server.
"""

from __future__ import annotations

import copy
from typing import Any

from k8see.sandbox.kubeapi.apierrors import ApiError, bad_request

Obj = dict[str, Any]

#: List fields merged by key: field name -> merge key. ``ports`` depends on where it is.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
}
#: Primitive lists merged as sets (``patchStrategy:"merge"`` on a list of strings).
MERGE_PRIMITIVE = {"finalizers"}
REJECTED = "the server rejected our request due to an error in our request"


def merge_key(path: tuple[str, ...], *, kind: str) -> str | None:
    """The merge key of the list at ``path`` (field names from the root), or None to replace."""
    name = path[-1]
    if name == "ports":
        if len(path) >= 2 and path[-2] in ("containers", "initContainers", "ephemeralContainers"):
            return "containerPort"
        if kind == "Service" and path == ("spec", "ports"):
            return "port"
        return None
    if name == "conditions" and path[0] != "status":
        return None
    return MERGE_KEYS.get(name)


# -- RFC 7386 JSON merge patch -------------------------------------------------------------


def json_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


# -- RFC 6902 JSON patch -------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"{REJECTED}: invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ApiError(
                code=422,
                reason="Invalid",
                message=f"the server rejected our request due to an error in our "
                f"request: {op} operation does not apply: doc is missing path: "
                f"/{'/'.join(parts)}",
            )
    return node, parts[-1]


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request(f"{REJECTED}: json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "test":
                if _get(doc, parts) != op.get("value"):
                    raise ApiError(
                        code=422,
                        reason="Invalid",
                        message="the server rejected our "
                        f"request due to an error in our request: testing value "
                        f"{op.get('path')} failed",
                    )
                continue
            value = (
                copy.deepcopy(_get(doc, _pointer(op["from"])))
                if kind in ("move", "copy")
                else op.get("value")
            )
            if kind == "move":
                doc = _remove(doc, _pointer(op["from"]))
            if kind in ("add", "move", "copy"):
                doc = _add(doc, parts, value, replace=False)
            elif kind == "replace":
                _get(doc, parts)
                doc = _add(doc, parts, value, replace=True)
            elif kind == "remove":
                doc = _remove(doc, parts)
            else:
                raise bad_request(f"{REJECTED}: unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(
                code=422,
                reason="Invalid",
                message="the server rejected our request "
                f"due to an error in our request: {kind} operation does not apply: "
                f"doc is missing path: {op.get('path')}",
            ) from exc
    return doc


def _add(doc: Any, parts: list[str], value: Any, *, replace: bool) -> Any:
    if not parts:
        return copy.deepcopy(value)
    parent, last = _parent(doc, parts, "replace" if replace else "add")
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if replace:
            parent[index] = copy.deepcopy(value)
        else:
            if index > len(parent):
                raise IndexError(index)
            parent.insert(index, copy.deepcopy(value))
    else:
        parent[last] = copy.deepcopy(value)
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent, last = _parent(doc, parts, "remove")
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc


# -- strategic merge patch -----------------------------------------------------------------


def strategic_merge(original: Any, patch: Any, *, kind: str) -> Any:
    """Apply a strategic merge patch to ``original`` (not modified) and return the result."""
    return _merge_map(
        copy.deepcopy(original) if isinstance(original, dict) else {}, patch, (), kind
    )


def _merge_map(orig: Obj, patch: Any, path: tuple[str, ...], kind: str) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        for key in list(orig):
            if key not in retain:
                del orig[key]
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value or []
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(orig.get(field), list):
                orig[field] = [x for x in orig[field] if x not in (value or [])]
            continue
        if value is None:
            orig.pop(key, None)
            continue
        sub = (*path, key)
        current = orig.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, sub, kind)
            if merged is None:
                orig.pop(key, None)
            else:
                orig[key] = merged
        elif isinstance(value, list):
            orig[key] = _merge_list(current if isinstance(current, list) else [], value, sub, kind)
        else:
            orig[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(orig.get(field), list):
            orig[field] = _reorder(orig[field], order, merge_key((*path, field), kind=kind))
    return orig


def _merge_list(orig: list[Any], patch: list[Any], path: tuple[str, ...], kind: str) -> list[Any]:
    key = merge_key(path, kind=kind)
    if path[-1] in MERGE_PRIMITIVE:
        out = list(orig)
        out += [x for x in patch if x not in out]
        return out
    if key is None:
        if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
            return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
        return copy.deepcopy(patch)
    out = copy.deepcopy(orig)
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        out = []
    for item in patch:
        if not isinstance(item, dict) or item.get("$patch") == "replace":
            continue
        match = next(
            (i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item.get(key)),
            None,
        )
        if item.get("$patch") == "delete":
            if match is not None:
                del out[match]
            continue
        if match is None:
            out.append(_merge_map({}, item, path, kind))
        else:
            out[match] = _merge_map(out[match], item, path, kind)
    return out


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else x

    wanted = [ident(x) for x in order]
    ranked = [x for w in wanted for x in items if ident(x) == w]
    rest = [x for x in items if ident(x) not in wanted]
    return ranked + rest


# -- server-side apply (approximation) -----------------------------------------------------


def three_way(*, last_applied: Obj | None, applied: Obj, live: Obj, kind: str) -> Obj:
    """Server-side apply as a three-way merge: drop what this manager applied before but no
    longer does, then merge the new configuration over the live object by merge keys.

    The real server tracks field ownership per manager (managedFields) and reports conflicts
    between managers; the sandbox keeps each manager's last configuration instead and never
    reports conflicts. For one manager per field, as k8see uses it, the results agree.
    """
    result = copy.deepcopy(live)
    if last_applied:
        _drop_removed(result, last_applied, applied, (), kind)
    merged = strategic_merge(result, applied, kind=kind) if kind else json_merge(result, applied)
    return merged if isinstance(merged, dict) else {}


def _drop_removed(live: Any, before: Any, after: Any, path: tuple[str, ...], kind: str) -> None:
    if not isinstance(live, dict) or not isinstance(before, dict):
        return
    after = after if isinstance(after, dict) else {}
    for key, old in before.items():
        if key not in after:
            live.pop(key, None)
        elif isinstance(old, dict):
            _drop_removed(live.get(key), old, after[key], (*path, key), kind)
        elif isinstance(old, list) and isinstance(live.get(key), list):
            mkey = merge_key((*path, key), kind=kind)
            if mkey:
                keep = {x.get(mkey) for x in after[key] if isinstance(x, dict)}
                gone = {x.get(mkey) for x in old if isinstance(x, dict)} - keep
                live[key] = [
                    x for x in live[key] if not (isinstance(x, dict) and x.get(mkey) in gone)
                ]
