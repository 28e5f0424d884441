"""Kubernetes quantities, parsed exactly, in one place (``k8see/quantity.py``).

The quota, the LimitRange, the platform's ceilings and the config's "requests within limits"
check all read quantities through it; floats made ``1.1`` cores 1101 millicores.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from k8see.errors import ConfigError
from k8see.manifests.quota import cpu_millicores, memory_mib
from k8see.quantity import MAX_LENGTH, QuantityError, ceil_scaled, parse_quantity


@pytest.mark.parametrize(
    ("text", "exact"),
    [
        ("250m", Decimal("0.25")),
        ("1", Decimal(1)),
        ("0.1", Decimal("0.1")),
        ("1.1", Decimal("1.1")),
        (".5", Decimal("0.5")),
        ("100n", Decimal("1e-7")),
        ("5u", Decimal("5e-6")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("2Ti", Decimal(2 * 2**40)),
        ("1Pi", Decimal(2**50)),
        ("1Ei", Decimal(2**60)),
        ("129M", Decimal(129_000_000)),
        ("129e6", Decimal(129_000_000)),
        ("12E", Decimal(12 * 10**18)),
        ("1e-3", Decimal("0.001")),
        ("+3k", Decimal(3000)),
    ],
)
def test_every_suffix_of_the_kubernetes_grammar_is_read_exactly(text: str, exact: Decimal) -> None:
    assert parse_quantity(text) == exact


def test_decimal_cpu_is_not_rounded_up_by_float_error() -> None:
    # float("1.1") * 1000 == 1100.0000000000002, which rounded up to 1101m
    assert cpu_millicores("1.1") == 1100
    assert cpu_millicores("0.3") == 300
    assert cpu_millicores("100m") == 100
    assert cpu_millicores("1500u") == 2  # rounded up to whole millicores


def test_memory_in_any_unit_rounds_up_to_whole_mebibytes() -> None:
    assert memory_mib("1Gi") == 1024
    assert memory_mib("129e6") == 124  # 123.02 MiB
    assert memory_mib("1G") == 954
    assert memory_mib("1Ki") == 1
    assert ceil_scaled("3Gi", 2**30) == 3


@pytest.mark.parametrize(
    "hostile",
    [
        "0x" + "f" * 3700,  # the 3.7 KB value that crashed validate
        "1" * (MAX_LENGTH + 1),
        "1e999999999",  # an exponent that would build an enormous integer
        "-1Gi",
        "1Gb",
        "1.2.3",
        "Infinity",
        "NaN",
        "1_000",
        "１２",  # full-width digits: str.isdigit says yes, Kubernetes says no
        "",
        "Mi",
    ],
)
def test_hostile_quantities_are_refused_with_a_short_message(hostile: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(hostile)
    assert len(str(info.value)) < 120
    with pytest.raises(ConfigError) as config_info:
        memory_mib(hostile, field="databases.postgresql.storage")
    assert "databases.postgresql.storage" in config_info.value.message
    assert config_info.value.hint
