"""The persister's array literals: the fast paths write exactly what the per-element path writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from predmarket.persister.writer import _array, _element

TIMES = st.integers(min_value=0, max_value=4_000_000_000_000).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))
#: A column holds one type, NULLs allowed (as the persister's rows do).
COLUMNS = st.one_of(*(
    st.lists(st.one_of(values, st.none()) if nullable else values, min_size=1, max_size=30)
    for values in (st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1), TIMES,
                   st.sampled_from(["12.500000", "0.000000", "-3.000001", "user:u1", 'a"b', "c\\d", "NULL", ""]))
    for nullable in (False, True)
))


def reference(values: list[Any]) -> str:
    return "{" + ",".join(map(_element, values)) + "}"


@given(COLUMNS)
def test_fast_paths_match_the_per_element_literal(values: list[Any]) -> None:
    assert _array(values) == reference(values)


def test_text_needing_escapes_is_escaped() -> None:
    assert _array(['a"b', "c\\d", "plain"]) == '{"a\\"b","c\\\\d","plain"}'
    assert _array(["x", None]) == '{"x",NULL}'
    assert _array([1, 2, 3]) == "{1,2,3}"
