"""engine.units: decimal strings and JSON numbers in, micro-unit integers inside, 6-decimal strings out."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from predmarket.engine.units import (
    DECIMALS,
    MAX_LIQUIDITY,
    MAX_QUANTITY,
    MAX_TOTAL,
    MICRO,
    MIN_LIQUIDITY,
    UnitError,
    decimal_from_micro,
    format_micro,
    micro_from_decimal,
    parse_micro,
)

bounded = settings(max_examples=400, derandomize=True, deadline=None)


def test_constants() -> None:
    assert (MICRO, DECIMALS) == (1_000_000, 6)
    assert MAX_QUANTITY == 10**9 * MICRO == MAX_LIQUIDITY
    assert MIN_LIQUIDITY == MICRO
    assert MAX_TOTAL == 9 * 10**9 * MICRO < 2**53


# --------------------------------------------------------------------------- parse_micro


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.5", 12_500_000),
        ("0.000001", 1),
        ("0", 0),
        ("0.0", 0),
        ("007.250000", 7_250_000),
        ("1.000000", MICRO),
        ("1000000000", MAX_QUANTITY),
        ("9000000000.000000", MAX_TOTAL),
        ("123456789.123456", 123_456_789_123_456),
        (12, 12_000_000),
        (0, 0),
        (1_000_000_000, MAX_QUANTITY),
        (12.5, 12_500_000),
        (0.1, 100_000),
        (1e-6, 1),  # float 0.000001, repr "1e-06"
        (0.000001, 1),
        (2.5e-5, 25),
        (0.0, 0),
        (1e9, MAX_QUANTITY),
        (123456789.123456, 123_456_789_123_456),
    ],
)
def test_parse_micro_accepts(value: object, expected: int) -> None:
    assert parse_micro(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1.0000001",  # 7 decimals
        "1.1234560",  # 7 decimals, even though the 7th is a zero
        "-1",
        "+1",
        " 1",
        "1 ",
        "1\n",  # "$" alone would match before a trailing newline
        "1.5\n",
        "\t1",
        "1e3",
        "1E3",
        "1,000",
        "1_000",
        "1.",
        ".5",
        "1..5",
        "0x10",
        "NaN",
        "nan",
        "Infinity",
        "inf",
        "",
        "١",  # ARABIC-INDIC DIGIT ONE: not ASCII
        "１",  # FULLWIDTH DIGIT ONE
        "1.５",
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        -0.5,
        0.1234567,  # more than 6 decimals as a float
        1e-7,
        1.0000001,
        True,
        False,
        None,
        [],
        {},
        b"1",
        Decimal("1"),
    ],
)
def test_parse_micro_rejects(value: object) -> None:
    with pytest.raises(UnitError):
        parse_micro(value)


def test_parse_micro_rejects_out_of_range_forms() -> None:
    with pytest.raises(UnitError):
        parse_micro(1e30)  # far beyond any total
    with pytest.raises(UnitError):
        parse_micro("1" + "0" * 19)  # 20 integer digits


@bounded
@given(st.integers(0, MAX_TOTAL))
def test_parse_of_formatted_string_round_trips(micro: int) -> None:
    assert parse_micro(format_micro(micro)) == micro


@bounded
@given(st.integers(0, 10**15 - 1))
def test_parse_of_json_number_round_trips(micro: int) -> None:
    """Up to 15 significant digits a float holds the decimal exactly enough that repr() gives it back."""
    assert parse_micro(float(format_micro(micro))) == micro


@bounded
@given(st.integers(0, 10**12), st.integers(1, 9))
def test_parse_rejects_a_seventh_decimal(whole: int, seventh: int) -> None:
    with pytest.raises(UnitError):
        parse_micro(f"{whole}.000000{seventh}")


@bounded
@given(st.integers(0, 10**9))
def test_parse_int_is_whole_units(units: int) -> None:
    assert parse_micro(units) == units * MICRO
    assert parse_micro(str(units)) == units * MICRO


# --------------------------------------------------------------------------- format_micro


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0.000000"),
        (1, "0.000001"),
        (12_500_000, "12.500000"),
        (MICRO, "1.000000"),
        (999_999, "0.999999"),
        (MAX_TOTAL, "9000000000.000000"),
        (-1, "-0.000001"),
        (-12_500_000, "-12.500000"),
        (-MICRO, "-1.000000"),
        (-MAX_TOTAL - 1, "-9000000000.000001"),
    ],
)
def test_format_micro(micro: int, text: str) -> None:
    assert format_micro(micro) == text


@bounded
@given(st.integers(-MAX_TOTAL, MAX_TOTAL))
def test_format_micro_is_exactly_the_decimal_value(micro: int) -> None:
    text = format_micro(micro)
    whole, frac = text.lstrip("-").split(".")
    assert len(frac) == 6 and whole.isdigit() and (whole == "0" or not whole.startswith("0"))
    assert text.startswith("-") == (micro < 0)
    assert Decimal(text) == Decimal(micro) / MICRO


# --------------------------------------------------------------------------- NUMERIC(20,6) conversions


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        (Decimal("12.5"), 12_500_000),
        (Decimal("12.500000"), 12_500_000),
        (Decimal("0.000001"), 1),
        (Decimal("0"), 0),
        (Decimal("-3.25"), -3_250_000),
        (Decimal("1E+3"), 1_000 * MICRO),
        (Decimal("9000000000.000000"), MAX_TOTAL),
    ],
)
def test_micro_from_decimal(value: Decimal, micro: int) -> None:
    assert micro_from_decimal(value) == micro


@pytest.mark.parametrize("value", [Decimal("1.0000001"), Decimal("0.0000005"), Decimal("1E-7"), Decimal("NaN")])
def test_micro_from_decimal_rejects(value: Decimal) -> None:
    with pytest.raises(UnitError):
        micro_from_decimal(value)


def test_decimal_from_micro_keeps_six_decimals() -> None:
    assert str(decimal_from_micro(12_500_000)) == "12.500000"
    assert str(decimal_from_micro(0)) == "0.000000"
    assert str(decimal_from_micro(-1)) == "-0.000001"
    assert decimal_from_micro(MAX_TOTAL) == Decimal(9 * 10**9)


@bounded
@given(st.integers(-MAX_TOTAL, MAX_TOTAL))
def test_decimal_round_trip(micro: int) -> None:
    value = decimal_from_micro(micro)
    assert value == Decimal(micro) / MICRO
    assert micro_from_decimal(value) == micro
    assert str(value) == format_micro(micro)
