"""Kubernetes resource quantities (``250m``, ``1.5Gi``, ``129e6``), parsed exactly.

One parser for every place k8see reads a quantity: the config's resources, the namespace
quota and LimitRange, the platform's quota ceilings. It follows the grammar of
``k8s.io/apimachinery/pkg/api/resource`` (a signed decimal number, then a binary-SI suffix
``Ki..Ei``, a decimal-SI suffix ``n u m k M G T P E``, or an exponent ``e3``) and computes in
``Decimal``, never in floats: ``0.1`` CPU is 100 millicores, not 100.00000000000001.

The enqueue client validates configs and must stay light, which is why this is not
``kubernetes.utils.parse_quantity`` (the worker-only ``kubernetes`` package). Input is
bounded (length, exponent) so a hostile value cannot make an enormous number.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["QuantityError", "ceil_scaled", "parse_quantity"]

_QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<suffix>[KMGTPE]i|[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]{1,2}))?$"
)
_FACTORS: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")},
}
#: Longer than any quantity a person writes; a bound on the work a hostile value can cause.
MAX_LENGTH = 40


class QuantityError(ValueError):
    """The value is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """The exact amount ``value`` stands for (cores for CPU, bytes for memory and storage).

    Raises:
        QuantityError: not a quantity, too long, or negative.
    """
    text = str(value).strip()
    match = _QUANTITY_RE.fullmatch(text) if len(text) <= MAX_LENGTH else None
    if not match:
        raise QuantityError(f"{text[:MAX_LENGTH]!r} is not a Kubernetes quantity")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise QuantityError(f"{text!r} is not a Kubernetes quantity") from exc
    if number < 0:
        raise QuantityError(f"{text!r} is negative")
    if match["exponent"] is not None:
        return number.scaleb(int(match["exponent"]))
    return number * _FACTORS[match["suffix"] or ""]


def ceil_scaled(value: object, unit: Decimal | int) -> int:
    """``value`` in whole ``unit``s, rounded up (``ceil_scaled("1.5Gi", 2**20)`` → 1536)."""
    return math.ceil(parse_quantity(value) / Decimal(unit))
