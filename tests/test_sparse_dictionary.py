"""The native gather and merge of dictionary string columns (``_cdict.dict_rows`` / ``unify``).

Each is checked against a numpy / Arrow reference, over tables of cases: nulls, empty and all-null
columns, sliced arrays (offsets inside the validity bitmap and the indices), whole 64-row words set
or unset, shared and disjoint dictionaries; and through ``SparseBatch`` (``from_batch`` /
``concat``) against what the same columns read as plain strings give.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_arrow.engine import sparse
from sigma_arrow.engine.sparse import SparseBatch

pytestmark = pytest.mark.skipif(sparse._cdict is None, reason="native extension not built")

DICT = pa.dictionary(pa.int32(), pa.string())


def dict_array(values: list[str | None], dictionary: list[str] | None = None) -> pa.DictionaryArray:
    """A dictionary<int32, string> array of ``values`` (codes into ``dictionary`` when given)."""
    if dictionary is None:
        return pa.array(values, pa.string()).dictionary_encode()
    codes = [None if v is None else dictionary.index(v) for v in values]
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(dictionary, pa.string()))


def reference_rows(array: pa.DictionaryArray) -> tuple[np.ndarray, np.ndarray]:
    """Set rows and their codes, with numpy."""
    rows = np.flatnonzero(array.is_valid().to_numpy(zero_copy_only=False))
    codes = array.indices.to_numpy(zero_copy_only=False)
    return rows, codes[rows].astype(np.int32)


def gathered(array: pa.DictionaryArray) -> tuple[np.ndarray, np.ndarray]:
    validity, indices = array.buffers()[:2]
    assert validity is not None and indices is not None
    rows, codes = sparse._cdict.dict_rows(
        validity, indices, array.offset, len(array), len(array) - array.null_count
    )
    return np.frombuffer(rows, dtype=np.int32), np.frombuffer(codes, dtype=np.int32)


def _pattern(n: int, every: int, phase: int = 0) -> list[str | None]:
    return [f"v{i % 5}" if (i + phase) % every == 0 else None for i in range(n)]


# (name, values, slice start, slice length or None)
GATHER_CASES: list[tuple[str, list[str | None], int, int | None]] = [
    ("one null", ["a", None, "b"], 0, None),
    ("one value", [None, None, "x", None], 0, None),
    ("sparse long", _pattern(5000, 97), 0, None),
    ("dense with holes", [None if i % 11 == 3 else f"v{i % 7}" for i in range(3000)], 0, None),
    ("whole words set", [None if i in (5, 200) else "w" for i in range(256)], 0, None),
    ("whole words unset", [None] * 128 + ["z"] + [None] * 200 + ["y"], 0, None),
    ("sliced mid byte", _pattern(1000, 3), 5, 700),
    ("sliced mid word", _pattern(1000, 2, 1), 67, 500),
    ("sliced to a tail", _pattern(300, 4), 250, None),
    ("sliced short", ["a", None, "b", None, "c", None, "d"], 3, 3),
]


@pytest.mark.parametrize(
    ("name", "values", "start", "length"), GATHER_CASES, ids=[c[0] for c in GATHER_CASES]
)
def test_dict_rows_matches_numpy(name: str, values: list[str | None], start: int, length: int | None) -> None:
    array = dict_array(values)
    array = array.slice(start, length) if length is not None else array.slice(start)
    assert 0 < array.null_count < len(array), name
    rows, codes = gathered(array)
    expected_rows, expected_codes = reference_rows(array)
    assert rows.tolist() == expected_rows.tolist()
    assert codes.tolist() == expected_codes.tolist()


def test_dict_rows_rejects_a_wrong_count_and_short_buffers() -> None:
    array = dict_array(["a", None, "b", None])
    validity, indices = array.buffers()[:2]
    with pytest.raises(ValueError, match="disagrees"):
        sparse._cdict.dict_rows(validity, indices, 0, 4, 1)
    with pytest.raises(ValueError, match="disagrees"):
        sparse._cdict.dict_rows(validity, indices, 0, 4, 3)
    with pytest.raises(ValueError, match="shorter"):
        sparse._cdict.dict_rows(validity, indices, 0, 400, 2)


# (name, parts: values of each part, dictionaries (None: dictionary_encode of the values))
UNIFY_CASES: list[tuple[str, list[list[str]], list[list[str]] | None]] = [
    ("same dictionary", [["a", "b", "a"], ["b", "a"]], [["a", "b"], ["a", "b"]]),
    ("disjoint", [["a", "b"], ["c", "d", "c"]], None),
    ("overlapping", [["x", "y"], ["y", "z"], ["z", "x", "w"]], None),
    ("unused entries", [["b"], ["d"]], [["a", "b", "c"], ["c", "d", "e"]]),
    ("empty strings", [["", "a", ""], ["a", ""]], None),
    ("an empty part", [["a", "b"], [], ["b", "c"]], [["a", "b"], [], ["b", "c"]]),
    ("long values", [["x" * 100, "y" * 33], ["y" * 33, "x" * 99]], None),
    ("unicode", [["Ünïcode", "ǅ"], ["ǅ", "İstanbul"]], None),
    ("many values", [[f"v{i}" for i in range(2000)], [f"v{i}" for i in range(1000, 3000, 3)]], None),
]


def _parts_of(case: tuple[str, list[list[str]], list[list[str]] | None]) -> list[pa.DictionaryArray]:
    _, parts, dictionaries = case
    if dictionaries is None:
        return [dict_array(list(values)) for values in parts]
    return [dict_array(list(v), d) for v, d in zip(parts, dictionaries, strict=True)]


@pytest.mark.parametrize("case", UNIFY_CASES, ids=[c[0] for c in UNIFY_CASES])
def test_concat_values_is_arrows_concat(case: tuple[str, list[list[str]], list[list[str]] | None]) -> None:
    arrays = _parts_of(case)
    merged = sparse._concat_values(list(arrays))
    expected = pa.concat_arrays(arrays)
    assert merged.type == DICT
    assert merged.to_pylist() == expected.to_pylist()
    # One entry per distinct value, in Arrow's order (first appearance, part by part).
    assert merged.dictionary.to_pylist() == expected.dictionary.unique().to_pylist()


def test_concat_values_of_sliced_dictionaries_and_codes() -> None:
    whole = dict_array(["a", "b", "c", "d", "e", "f"], ["q", "a", "b", "c", "d", "e", "f"])
    sliced = pa.DictionaryArray.from_arrays(whole.indices.slice(2, 3), whole.dictionary.slice(1, 6))
    other = dict_array(["z", "c"])
    merged = sparse._concat_values([sliced, other])
    assert merged.to_pylist() == pa.concat_arrays([sliced, other]).to_pylist()


def test_concat_values_falls_back_for_other_types() -> None:
    # Null codes, large strings, plain strings: Arrow's concatenation, same values.
    cases = [
        [dict_array(["a", None]), dict_array(["b"])],
        [
            pa.array(["a"], pa.large_string()).dictionary_encode(),
            pa.array(["b"], pa.large_string()).dictionary_encode(),
        ],
        [pa.array(["a", None]), pa.array(["b"])],
    ]
    for arrays in cases:
        assert sparse._concat_values(list(arrays)).to_pylist() == pa.concat_arrays(arrays).to_pylist()


def test_unify_rejects_codes_outside_their_dictionary() -> None:
    bad = pa.DictionaryArray.from_buffers(
        DICT, 1, [None, pa.py_buffer(np.array([5], dtype=np.int32))], pa.array(["a"], pa.string())
    )
    with pytest.raises(ValueError, match="outside"):
        sparse._concat_values([bad, dict_array(["b"])])


values_strategy = st.lists(
    st.one_of(st.none(), st.sampled_from(["", "a", "b", "cmd.exe", "Ünï", "x" * 40])), max_size=200
)


@settings(max_examples=80, deadline=None)
@given(parts=st.lists(values_strategy, min_size=1, max_size=4), cut=st.integers(0, 70))
def test_sparse_batches_of_dictionary_columns(parts: list[list[str | None]], cut: int) -> None:
    """from_batch + concat of dictionary columns: the values the same columns as plain strings give."""
    batches = []
    plain = []
    for values in parts:
        column = pa.array(values, pa.string())
        start = min(cut, len(column))
        column = column.slice(start)  # offsets into the buffers
        plain.append(column)
        batches.append(pa.record_batch({"C": column.dictionary_encode()}))
    sparse_batch = SparseBatch.concat([SparseBatch.from_batch(b) for b in batches], consume=True)
    expected = pa.concat_arrays(plain)
    assert sparse_batch.num_rows == len(expected)
    assert sparse_batch.column("C").to_pylist() == expected.to_pylist()
    assert sparse_batch.null_count("C") == expected.null_count
    rows, values = sparse_batch.sparse_column("C")
    valid = np.flatnonzero(expected.is_valid().to_numpy(zero_copy_only=False))
    assert (list(range(len(expected))) if rows is None else rows.tolist()) == valid.tolist()
    assert values.type == DICT and values.null_count == 0
    assert pc.count_distinct(values.dictionary).as_py() == len(values.dictionary)


def test_sparse_batch_of_all_null_and_full_dictionary_columns() -> None:
    n = 130
    batch = pa.record_batch(
        {
            "empty": pa.array([None] * n, pa.string()).dictionary_encode(),
            "full": pa.array([f"v{i % 3}" for i in range(n)], pa.string()).dictionary_encode(),
            "some": pa.array([None if i % 2 else "s" for i in range(n)], pa.string()).dictionary_encode(),
        }
    )
    merged = SparseBatch.concat([SparseBatch.from_batch(batch), SparseBatch.from_batch(batch.slice(7))])
    assert merged.sparse_column("full")[0] is None
    assert len(merged.sparse_column("empty")[0]) == 0
    for name in ("empty", "full", "some"):
        expected = pa.concat_arrays([batch.column(name), batch.column(name).slice(7)]).dictionary_decode()
        assert merged.column(name).to_pylist() == expected.to_pylist()
