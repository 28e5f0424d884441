"""Kubernetes resource quantities (``100m``, ``1.5``, ``128Mi``, ``1G``, ``1e3``) as exact numbers.

Quota accounting sums requests and compares them with limits, so parsing has to be exact:
``Fraction`` keeps ``0.1 + 0.2`` equal to ``300m``.
"""

from __future__ import annotations

import re
from fractions import Fraction

from k8see.sandbox.kubeapi.apierrors import bad_request

_SUFFIX = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_RE = re.compile(r"^([+-]?[0-9.]+)(?:[eE]([+-]?[0-9]+))?(n|u|m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")


def parse(value: object) -> Fraction:
    """The exact value of a quantity; a malformed one is a 400 as the real server answers."""
    text = str(value).strip()
    m = _RE.match(text)
    if not m:
        raise bad_request(f"quantities must match the regular expression '{_RE.pattern}'")
    number = Fraction(m.group(1))
    if m.group(2):
        number *= Fraction(10) ** int(m.group(2))
    return number * _SUFFIX[m.group(3) or ""]


def format_quantity(value: Fraction, *, binary: bool) -> str:
    """A canonical-looking string: milli-units for fractions, binary suffixes for memory."""
    if value.denominator != 1:
        return f"{int(value * 1000)}m"
    whole = int(value)
    if binary and whole:
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            unit = int(_SUFFIX[suffix])
            if whole % unit == 0:
                return f"{whole // unit}{suffix}"
    return str(whole)


def is_memory_like(resource: str) -> bool:
    return "memory" in resource or "storage" in resource
