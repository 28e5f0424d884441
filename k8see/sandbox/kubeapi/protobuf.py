"""Decoding the few protobuf request bodies real clients send.

Helm 3.17 stores releases through a typed client that writes Secrets as
``application/vnd.kubernetes.protobuf`` (and client-go falls back to JSON only for CBOR), so
the sandbox must read that format for Secrets and ConfigMaps. Responses stay JSON, which the
clients accept (their Accept header lists it). The wire format: the magic ``k8s\\0``, then a
``runtime.Unknown`` whose ``raw`` field holds the object; field numbers come from
``k8s.io/api/core/v1/generated.proto`` and ``apimachinery/pkg/apis/meta/v1/generated.proto``.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from k8see.sandbox.kubeapi.apierrors import bad_request

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
Fields = dict[int, list[Any]]

# field number -> (json name, kind); kinds: str, bytes, int, bool, map_str, map_bytes, time,
# meta, list_str, owner.
OBJECT_META = {
    1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"), 5: ("uid", "str"),
    6: ("resourceVersion", "str"), 7: ("generation", "int"), 8: ("creationTimestamp", "time"),
    9: ("deletionTimestamp", "time"), 10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map_str"), 12: ("annotations", "map_str"), 13: ("ownerReferences", "owner"),
    14: ("finalizers", "list_str"),
}  # fmt: skip
OWNER_REF = {
    5: ("apiVersion", "str"), 1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"),
    6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool"),
}  # fmt: skip
KINDS = {
    "Secret": {1: ("metadata", "meta"), 2: ("data", "map_bytes"), 3: ("type", "str"),
               4: ("stringData", "map_str"), 5: ("immutable", "bool")},
    "ConfigMap": {1: ("metadata", "meta"), 2: ("data", "map_str"), 3: ("binaryData", "map_bytes"),
                  4: ("immutable", "bool")},
}  # fmt: skip


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(data: bytes) -> Fields:
    """Field number -> raw values (ints for varints, bytes for length-delimited)."""
    out: Fields = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _str(raw: Any) -> str:
    return bytes(raw).decode()


def _message(data: bytes, schema: dict[int, tuple[str, str]]) -> dict[str, Any]:
    fields = _fields(data)
    obj: dict[str, Any] = {}
    for number, (name, kind) in schema.items():
        values = fields.get(number)
        if not values:
            continue
        if kind == "str":
            obj[name] = _str(values[-1])
        elif kind == "int":
            obj[name] = values[-1]
        elif kind == "bool":
            obj[name] = bool(values[-1])
        elif kind in ("map_str", "map_bytes"):
            entries = {}
            for entry in values:
                pair = _fields(entry)
                key = _str(pair.get(1, [b""])[0])
                value = bytes(pair.get(2, [b""])[0])
                entries[key] = (
                    value.decode() if kind == "map_str" else base64.b64encode(value).decode()
                )
            obj[name] = entries
        elif kind == "list_str":
            obj[name] = [_str(v) for v in values]
        elif kind == "time":
            seconds = _fields(values[-1]).get(1, [0])[0]
            obj[name] = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind == "meta":
            obj[name] = _message(values[-1], OBJECT_META)
        elif kind == "owner":
            obj[name] = [_message(v, OWNER_REF) for v in values]
    return obj


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded Secret or ConfigMap; 415-like 400 for others."""
    if not body.startswith(MAGIC):
        raise bad_request("the body is not a Kubernetes protobuf message (missing k8s magic)")
    try:
        unknown = _fields(body[len(MAGIC) :])
        type_meta = _fields(unknown.get(1, [b""])[0])
        api_version = _str(type_meta.get(1, [b""])[0])
        kind = _str(type_meta.get(2, [b""])[0])
        schema = KINDS.get(kind)
        if schema is None:
            raise bad_request(
                f"the sandbox reads protobuf only for Secret and ConfigMap, not {kind!r}; send JSON"
            )
        obj = _message(unknown.get(2, [b""])[0], schema)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise bad_request(f"the protobuf body could not be decoded: {exc}") from exc
    obj.update(apiVersion=api_version or "v1", kind=kind)
    return obj
