"""The native column encoder (sigma_arrow/_cdict.c) gives exactly what the Arrow kernels give."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_arrow.engine import columns

pytestmark = pytest.mark.skipif(columns._cdict is None, reason="native extension not built")

values = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "A", "cmd.exe", "CMD.EXE", "Ünïcode", "ǅ", "İstanbul", "x" * 70]),
    st.text(max_size=40),
)


def arrow_view(array: pa.Array) -> tuple[list[int], list[str]]:
    """Rows holding a value and each row's value, the Arrow way."""
    rows = [i for i, v in enumerate(array.to_pylist()) if v is not None]
    return rows, [array[i].as_py() for i in rows]


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(values, max_size=300),
    large=st.booleans(),
    start=st.integers(0, 10),
    stop=st.integers(0, 10),
)
def test_encode_matches_arrow(items: list[str | None], large: bool, start: int, stop: int) -> None:
    array = pa.array(items, type=pa.large_string() if large else pa.string())
    array = array.slice(min(start, len(array)), max(0, len(array) - start - stop))  # non-zero offsets
    found = columns._native_encode(array)
    assert found is not None
    rows, codes, distinct = found
    expected_rows, expected_values = arrow_view(array)
    got_rows = list(range(len(array))) if rows is None else rows.tolist()
    assert got_rows == expected_rows
    assert [distinct[int(c)].as_py() for c in codes] == expected_values
    # distinct values are distinct, in first-occurrence order, like dictionary_encode
    assert distinct.to_pylist() == pc.dictionary_encode(array.drop_null()).dictionary.to_pylist()


@settings(max_examples=150, deadline=None)
@given(items=st.lists(values, max_size=50))
def test_lower_is_python_lower(items: list[str | None]) -> None:
    array = pa.array(items, type=pa.string())
    assert columns.python_lower(array).to_pylist() == [v.lower() if v is not None else None for v in items]


def test_sparse_bitmaps_and_long_runs_of_nulls() -> None:
    items: list[str | None] = [None] * 5000
    for position in (0, 63, 64, 127, 128, 129, 4095, 4999):
        items[position] = f"v{position % 3}"
    array = pa.array(items)
    for offset in (0, 1, 7, 63, 64, 65):
        piece = array.slice(offset)
        found = columns._native_encode(piece)
        assert found is not None
        rows, codes, distinct = found
        assert rows is not None
        assert rows.tolist() == arrow_view(piece)[0]
        assert [distinct[int(c)].as_py() for c in codes] == arrow_view(piece)[1]


def test_column_view_is_the_same_either_way() -> None:
    array = pa.array(["b", None, "a", "b", "", None, "Ä", "a"] * 100)
    native = columns.ColumnView("f", array)
    saved = columns._cdict
    columns._cdict = None
    try:
        arrow = columns.ColumnView("f", array)
    finally:
        columns._cdict = saved
    assert native.text.to_pylist() == arrow.text.to_pylist()
    assert native.lower.to_pylist() == arrow.lower.to_pylist()
    assert np.array_equal(native.full_index(), arrow.full_index())
    assert np.array_equal(native.counts, arrow.counts)


GROUP_CASES = [
    # (codes, number of groups)
    ([], 0),
    ([], 3),
    ([0], 1),
    ([2, 0, 2, 1, 0, 2], 3),
    ([4, 4, 4, 4], 5),  # one group used, the others empty
    (list(np.random.default_rng(7).integers(0, 1000, size=20_000)), 1000),
]


@pytest.mark.parametrize(("codes", "n_groups"), GROUP_CASES)
def test_group_order_is_a_stable_argsort(codes: list[int], n_groups: int) -> None:
    array = np.array(codes, dtype=np.int64)
    expected = np.argsort(array, kind="stable")
    assert np.array_equal(columns.group_order(array, n_groups), expected)
    rows = columns.ColumnView("f", pa.array([str(c) for c in codes], pa.string()))
    saved = columns._cdict
    columns._cdict = None
    try:  # the numpy path gives the same rows of each value
        arrow = columns.ColumnView("f", pa.array([str(c) for c in codes], pa.string()))
    finally:
        columns._cdict = saved
    distinct = np.arange(rows.n_distinct, dtype=np.int64)
    assert (
        sorted(rows.rows_of(distinct).tolist())
        == sorted(arrow.rows_of(distinct).tolist())
        == list(range(len(codes)))
    )


@pytest.mark.skipif(columns._cdict is None, reason="sigma_arrow._cdict is not built")
@pytest.mark.parametrize(("codes", "n_groups"), [([0, 3], 3), ([-1], 2)])
def test_group_order_rejects_codes_out_of_range(codes: list[int], n_groups: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        columns._cdict.group_order(np.array(codes, dtype=np.int64), n_groups)
