"""The native rule algebra (sigma_arrow/_calgebra.c) gives exactly what its Python definitions give.

* ``row_groups`` (a column's rows grouped by value) equals a stable argsort;
* ``gather_rows`` (candidate rows: the rows of some values inside a route) equals its numpy definition;
* ``group_rows`` (rows grouped by their route columns' values) equals grouping row by row;
* ``Batch.evaluate`` equals a per-row short-circuit evaluation of the program, and asks for a kernel
  leaf's answers exactly for the distinct values of the rows that reach the leaf (laziness);
* the engine gives the same rows with and without the extension (the pure-Python fallback).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import (
    KEYWORD_FIELD,
    And,
    Cidr,
    Compare,
    Const,
    Exists,
    FieldRef,
    IsNull,
    Keyword,
    Node,
    Not,
    Or,
    Regex,
    StrMatch,
    Wildcard,
)
from compiler.model import CompiledRule, Route, RuleMeta
from compiler.reference import evaluate_rule
from sigma_arrow.engine import Engine, columns
from sigma_arrow.engine.native import (
    OP_AND,
    OP_CONST,
    OP_EXISTS,
    OP_ISNULL,
    OP_KERNEL,
    OP_MASK,
    OP_NOT,
    OP_OR,
    OP_ROWS,
)
from sigma_arrow.schema import RESERVED_COLUMNS

_calgebra = pytest.importorskip("sigma_arrow._calgebra")


# ---------------------------------------------------------------- row_groups


def grouped_by_value(codes: list[int], valid: list[int] | None) -> tuple[list[int], list[int]]:
    """The definition: rows sorted by value, ascending within a value; offsets per value."""
    rows = valid if valid is not None else list(range(len(codes)))
    order = [rows[i] for i in np.argsort(np.array(codes, dtype=np.int64), kind="stable")]
    n_distinct = max(codes, default=-1) + 1
    counts = np.bincount(np.array(codes, dtype=np.int64), minlength=n_distinct)
    return order, [0, *np.cumsum(counts).tolist()]


ROW_GROUP_CASES: dict[str, tuple[list[int], list[int] | None, type]] = {
    "empty column": ([], None, np.int64),
    "every row, one value": ([0, 0, 0], None, np.int64),
    "every row, interleaved values": ([2, 0, 1, 0, 2, 1, 1], None, np.int64),
    "sparse int32 rows": ([1, 0, 1, 1], [3, 7, 64, 130], np.int32),
    "sparse int64 rows": ([0, 2, 2, 1, 0], [0, 5, 6, 63, 64], np.int64),
    "sparse, no row": ([], [], np.int32),
}


@pytest.mark.parametrize(("codes", "valid", "dtype"), ROW_GROUP_CASES.values(), ids=ROW_GROUP_CASES.keys())
def test_row_groups_is_a_stable_sort(codes: list[int], valid: list[int] | None, dtype: type) -> None:
    n_distinct = max(codes, default=-1) + 1
    n_rows = (max(valid, default=-1) + 1 if valid is not None else len(codes)) + 3
    order_bytes, offsets_bytes = _calgebra.row_groups(
        np.array(codes, dtype=np.int64),
        None if valid is None else np.array(valid, dtype=dtype),
        n_distinct,
        n_rows,
    )
    expected_order, expected_offsets = grouped_by_value(codes, valid)
    assert np.frombuffer(order_bytes, dtype=np.int32).tolist() == expected_order
    assert np.frombuffer(offsets_bytes, dtype=np.int64).tolist() == expected_offsets


@pytest.mark.parametrize(
    ("codes", "valid", "n_distinct", "n_rows"),
    [([0, 3], None, 3, 2), ([0, -1], None, 3, 2), ([0, 1], [0, 9], 2, 9), ([0], [0, 1], 2, 5)],
    ids=["code too big", "negative code", "row beyond n_rows", "lengths differ"],
)
def test_row_groups_rejects_bad_input(
    codes: list[int], valid: list[int] | None, n_distinct: int, n_rows: int
) -> None:
    with pytest.raises(ValueError):
        _calgebra.row_groups(
            np.array(codes, dtype=np.int64),
            None if valid is None else np.array(valid, dtype=np.int64),
            n_distinct,
            n_rows,
        )


def test_column_view_row_groups_fallback_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    values = pa.array(["b", None, "a", "b", None, "c", "a", "a"] * 20)
    native_view = columns.ColumnView("x", values)
    monkeypatch.setenv(columns.PURE_PYTHON_ENV, "1")
    python_view = columns.ColumnView("x", values)
    for got, expected in zip(native_view.row_groups(), python_view.row_groups(), strict=True):
        assert got.tolist() == expected.tolist()
    assert native_view.counts.tolist() == python_view.counts.tolist()
    wanted = np.array([0, 2], dtype=np.int64)
    assert sorted(native_view.rows_of(wanted).tolist()) == sorted(python_view.rows_of(wanted).tolist())


# ---------------------------------------------------------------- gather_rows


def gathered(
    n_rows: int, parts: list[tuple[list[int], list[int], list[int]]], key: list[int], chosen: list[bool]
) -> list[int]:
    """The definition: distinct sorted rows of the wanted values whose group is chosen."""
    rows = {
        order[i]
        for order, offsets, wanted in parts
        for v in wanted
        for i in range(offsets[v], offsets[v + 1])
    }
    return sorted(r for r in rows if chosen[key[r]])


GATHER_CASES: dict[str, tuple[int, list[tuple[list[int], list[int], list[int]]], list[int], list[bool]]] = {
    "no part": (4, [], [0, 0, 0, 0], [True]),
    "no value wanted": (4, [([1, 3], [0, 2], [])], [0, 0, 0, 0], [True]),
    "one value": (6, [([5, 1, 2], [0, 2, 3], [0])], [0] * 6, [True]),
    "route filters": (6, [([5, 1, 2], [0, 2, 3], [0, 1])], [0, 1, 0, 0, 0, 1], [True, False]),
    "two columns overlap": (
        8,
        [([0, 4, 6], [0, 1, 3], [1]), ([4, 7, 1], [0, 2, 3], [0, 1])],
        [0] * 8,
        [True],
    ),
    "many rows (bitmap path)": (
        300,
        [(list(range(299, -1, -1)), [0, 150, 300], [0, 1])],
        [r % 3 for r in range(300)],
        [True, False, True],
    ),
    "rows past 64 (sort path)": (5000, [([4999, 70, 64], [0, 3], [0])], [0] * 5000, [True]),
}


@pytest.mark.parametrize(("n_rows", "parts", "key", "chosen"), GATHER_CASES.values(), ids=GATHER_CASES.keys())
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_gather_rows(
    n_rows: int,
    parts: list[tuple[list[int], list[int], list[int]]],
    key: list[int],
    chosen: list[bool],
    dtype: type,
) -> None:
    arrays = [
        (np.array(order, dtype=dtype), np.array(offsets, dtype=np.int64), np.array(wanted, dtype=dtype))
        for order, offsets, wanted in parts
    ]
    found = _calgebra.gather_rows(n_rows, arrays, np.array(key, dtype=np.int64), np.array(chosen, dtype=bool))
    assert np.frombuffer(found, dtype=np.int64).tolist() == gathered(n_rows, parts, key, chosen)


@pytest.mark.parametrize(
    "part",
    [([0, 1], [0, 2], [1]), ([0, 1], [0, 3], [0]), ([0, 9], [0, 2], [0])],
    ids=["value beyond offsets", "offset beyond order", "row beyond n_rows"],
)
def test_gather_rows_rejects_bad_input(part: tuple[list[int], list[int], list[int]]) -> None:
    arrays = [tuple(np.array(p, dtype=np.int64) for p in part)]
    with pytest.raises(ValueError):
        _calgebra.gather_rows(4, arrays, np.zeros(4, dtype=np.int64), np.ones(1, dtype=bool))


# ---------------------------------------------------------------- group_rows

GroupColumn = tuple[list[int] | None, list[int], int]  # (set rows or None: every row, codes, n_distinct)


def grouped_rows(n_rows: int, cols: list[GroupColumn]) -> list[list[int]]:
    """The definition: rows with equal values in every column (no value counts as one), by first row."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row in range(n_rows):
        values = []
        for valid, codes, n_distinct in cols:
            if valid is None:
                values.append(codes[row])
            else:
                values.append(codes[valid.index(row)] if row in valid else n_distinct)
        groups.setdefault(tuple(values), []).append(row)
    return list(groups.values())


GROUP_CASES: dict[str, tuple[int, list[GroupColumn]]] = {
    "no rows": (0, [(None, [], 2)]),
    "no columns: one group": (5, []),
    "one dense column": (6, [(None, [1, 0, 1, 2, 0, 1], 3)]),
    "sparse column, the others null": (7, [([1, 2, 5], [0, 1, 0], 2)]),
    "all-null column": (4, [([], [], 0), (None, [0, 1, 0, 1], 2)]),
    "two columns": (8, [(None, [0, 0, 1, 1, 0, 0, 1, 1], 2), ([0, 3, 4, 7], [1, 1, 1, 0], 2)]),
    "many groups (table grows)": (3000, [(None, [r % 1500 for r in range(3000)], 1500)]),
}


@pytest.mark.parametrize(("n_rows", "cols"), GROUP_CASES.values(), ids=GROUP_CASES.keys())
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_group_rows(n_rows: int, cols: list[GroupColumn], dtype: type) -> None:
    arrays = [
        (None if valid is None else np.array(valid, dtype=dtype), np.array(codes, dtype=np.int64), n_distinct)
        for valid, codes, n_distinct in cols
    ]
    found = _calgebra.group_rows(n_rows, arrays)
    group_of_row, first_rows, order, offsets = (np.frombuffer(b, dtype=np.int64).tolist() for b in found)
    expected = grouped_rows(n_rows, cols)
    assert [order[offsets[g] : offsets[g + 1]] for g in range(len(first_rows))] == expected
    assert first_rows == [rows[0] for rows in expected]
    assert group_of_row == [
        next(g for g, rows in enumerate(expected) if row in rows) for row in range(n_rows)
    ]


def test_group_rows_too_many_combinations_and_bad_input() -> None:
    huge = [(None, np.zeros(2, dtype=np.int64), 2**31)] * 3
    assert _calgebra.group_rows(2, huge) is None  # the caller groups these with numpy
    with pytest.raises(ValueError):
        _calgebra.group_rows(2, [(np.array([0, 5], dtype=np.int64), np.zeros(2, dtype=np.int64), 1)])
    with pytest.raises(ValueError):
        _calgebra.group_rows(3, [(None, np.zeros(2, dtype=np.int64), 1)])


# ---------------------------------------------------------------- Batch.evaluate

Tree = tuple  # ("and"|"or", [children]) | ("not", child) | ("const", bool) | (leaf op, slot)


@dataclass
class Column:
    """A test column: absent, every row (valid None) or sparse (sorted valid rows); codes per row held."""

    absent: bool
    valid: list[int] | None
    codes: list[int]
    n_distinct: int

    def code(self, row: int, n_rows: int) -> int:
        if self.valid is None:
            return self.codes[row] if 0 <= row < n_rows else self.n_distinct
        if row in self.valid:
            return self.codes[self.valid.index(row)]
        return self.n_distinct


@dataclass
class World:
    """A batch for the native algebra: columns, literal masks, kernel answers, keyword row masks."""

    n_rows: int
    columns: list[Column]
    masks: list[tuple[int, list[int]]]  # (column, literal ids)
    hits: dict[int, list[int]]  # literal id -> distinct positions
    kernels: list[tuple[int, list[bool]]]  # (column, answer per distinct value)
    row_masks: list[list[bool]]
    wide_valid: bool = False
    asked: set[tuple[int, int]] = field(default_factory=set)

    def mask_value(self, slot: int, code: int) -> bool:
        _, literals = self.masks[slot]
        return any(code in self.hits.get(lit, []) for lit in literals)


class Resolver:
    """Answers the native algebra's requests from a World, recording what was asked."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.batch: object = None
        self.answers: dict[int, np.ndarray] = {}
        self.hit_map: dict[int, np.ndarray] = {}
        self.done = np.zeros(max(lit for _, lits in world.masks for lit in lits) + 1, dtype=bool)
        self.scanned: set[int] = set()

    def scan_literal(self, literal_id: int) -> None:
        self.scanned.add(literal_id)
        if literal_id in self.world.hits:
            self.hit_map[literal_id] = np.array(self.world.hits[literal_id], dtype=np.int32)
        self.done[literal_id] = True

    def load_column(self, slot: int) -> None:
        column = self.world.columns[slot]
        if column.absent:
            self.batch.set_column(slot, None, None, -1)  # type: ignore[attr-defined]
            return
        valid = None
        if column.valid is not None:
            valid = np.array(column.valid, dtype=np.int64 if self.world.wide_valid else np.int32)
        self.batch.set_column(slot, valid, np.array(column.codes, dtype=np.int64), column.n_distinct)  # type: ignore[attr-defined]

    def answer(self, slot: int, asked: bytes) -> None:
        column, truth = self.world.kernels[slot]
        n_distinct = self.world.columns[column].n_distinct
        if slot not in self.answers:
            state = np.full(n_distinct + 1, -1, dtype=np.int8)
            state[n_distinct] = 0
            self.answers[slot] = state
            self.batch.set_lazy(slot, state)  # type: ignore[attr-defined]
        state = self.answers[slot]
        for code in np.frombuffer(asked, dtype=np.int64).tolist():
            if code < n_distinct:
                self.world.asked.add((slot, code))
                state[code] = truth[code]

    def load_row_mask(self, slot: int) -> None:
        self.batch.set_row_mask(slot, np.array(self.world.row_masks[slot], dtype=bool))  # type: ignore[attr-defined]


def encode(tree: Tree) -> list[int]:
    """A tree as program triples (op, argument, subtree size), prefix order."""
    kind = tree[0]
    if kind in ("and", "or"):
        body = [x for child in tree[1] for x in encode(child)]
        return [OP_AND if kind == "and" else OP_OR, len(tree[1]), 1 + len(body) // 3, *body]
    if kind == "not":
        body = encode(tree[1])
        return [OP_NOT, 0, 1 + len(body) // 3, *body]
    if kind == "const":
        return [OP_CONST, int(tree[1]), 1]
    return [tree[0], tree[1], 1]


def reference(world: World, tree: Tree, row: int, reached: set[tuple[int, int]]) -> bool:
    """Per-row short-circuit evaluation, recording the kernel (slot, value) pairs a row reaches."""
    kind = tree[0]
    if kind == "and":
        return all(reference(world, child, row, reached) for child in tree[1])
    if kind == "or":
        return any(reference(world, child, row, reached) for child in tree[1])
    if kind == "not":
        return not reference(world, tree[1], row, reached)
    if kind == "const":
        return bool(tree[1])
    op, slot = tree
    if op == OP_ROWS:
        return 0 <= row < world.n_rows and world.row_masks[slot][row]
    column_slot = {OP_MASK: lambda: world.masks[slot][0], OP_KERNEL: lambda: world.kernels[slot][0]}.get(
        op, lambda: slot
    )()
    column = world.columns[column_slot]
    if column.absent:
        return op == OP_ISNULL
    code = column.code(row, world.n_rows)
    if op in (OP_EXISTS, OP_ISNULL):
        return (code == column.n_distinct) == (op == OP_ISNULL)
    if op == OP_MASK:
        return world.mask_value(slot, code)
    if code < column.n_distinct:
        reached.add((slot, code))
        return world.kernels[slot][1][code]
    return False


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, Tree, list[int]]:
    n_rows = draw(st.one_of(st.integers(0, 8), st.integers(9, 140)))
    n_columns = draw(st.integers(1, 3))
    cols = []
    for _ in range(n_columns):
        n_distinct = draw(st.integers(0, 5))
        kind = draw(st.sampled_from(["absent", "all null", "dense", "sparse", "dense", "sparse"]))
        if kind in ("dense", "sparse") and n_distinct == 0:
            kind = "all null"
        if kind == "dense":
            codes = draw(st.lists(st.integers(0, n_distinct - 1), min_size=n_rows, max_size=n_rows))
            cols.append(Column(False, None, codes, n_distinct))
        elif kind == "sparse":
            valid = (
                sorted(draw(st.sets(st.integers(0, max(n_rows - 1, 0)), max_size=n_rows))) if n_rows else []
            )
            codes = draw(st.lists(st.integers(0, n_distinct - 1), min_size=len(valid), max_size=len(valid)))
            cols.append(Column(False, valid, codes, n_distinct))
        else:
            cols.append(Column(kind == "absent", [] if kind == "all null" else None, [], n_distinct))
    hits: dict[int, list[int]] = {}
    masks = []
    for literal in range(draw(st.integers(1, 4))):
        column = draw(st.integers(0, n_columns - 1))
        n_distinct = cols[column].n_distinct
        if n_distinct and draw(st.booleans()):
            hits[literal] = sorted(draw(st.sets(st.integers(0, n_distinct - 1), min_size=1)))
        masks.append((column, [literal]))
    # a mask of several literals on one column (a fused Or)
    first_column = masks[0][0]
    masks.append((first_column, [lits[0] for column, lits in masks if column == first_column]))
    kernels = []
    holding = [i for i, c in enumerate(cols) if c.codes] or list(range(n_columns))
    for _ in range(draw(st.integers(1, 3))):
        column = draw(st.sampled_from(holding) if draw(st.integers(0, 3)) else st.integers(0, n_columns - 1))
        n_distinct = cols[column].n_distinct
        kernels.append((column, draw(st.lists(st.booleans(), min_size=n_distinct, max_size=n_distinct))))
    row_masks = [draw(st.lists(st.booleans(), min_size=n_rows, max_size=n_rows)) for _ in range(2)]
    world = World(n_rows, cols, masks, hits, kernels, row_masks, draw(st.booleans()))
    kernel_leaf = st.tuples(st.just(OP_KERNEL), st.integers(0, len(kernels) - 1))
    leaves = st.one_of(
        st.tuples(st.just(OP_MASK), st.integers(0, len(masks) - 1)),
        st.tuples(st.sampled_from([OP_EXISTS, OP_ISNULL]), st.integers(0, n_columns - 1)),
        kernel_leaf,
        kernel_leaf,
        st.tuples(st.just(OP_ROWS), st.integers(0, 1)),
        st.tuples(st.just("const"), st.booleans()),
    )
    subtrees = st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, max_size=4)),
            st.tuples(st.just("not"), inner),
        ),
        max_leaves=10,
    )
    tree = draw(st.tuples(st.sampled_from(["and", "or"]), st.lists(subtrees, min_size=1, max_size=4)))
    # rows: any order, repeats, rows without a value and rows past the batch
    rows = draw(st.lists(st.integers(0, n_rows + 3), min_size=min(n_rows, 20), max_size=60))
    if draw(st.booleans()):
        rows = sorted(set(rows))
    return world, tree, rows


def native_batch(world: World, scanned: bool = True) -> tuple[object, Resolver]:
    """A Batch over a world; ``scanned``: every literal's hits are known up front (else asked for)."""
    resolver = Resolver(world)
    layout = [
        np.array([column for column, _ in world.masks], dtype=np.int32).tobytes(),
        np.array(np.cumsum([0] + [len(lits) for _, lits in world.masks]), dtype=np.int32).tobytes(),
        np.array([lit for _, lits in world.masks for lit in lits], dtype=np.int32).tobytes(),
        np.array([column for column, _ in world.kernels], dtype=np.int32).tobytes(),
    ]
    if scanned:
        resolver.hit_map.update({lit: np.array(hits, dtype=np.int64) for lit, hits in world.hits.items()})
        resolver.done[:] = True
    batch = _calgebra.Batch(
        world.n_rows,
        len(world.columns),
        *layout,
        resolver.hit_map,
        len(world.row_masks),
        resolver,
        resolver.done,
    )
    resolver.batch = batch
    return batch, resolver


@settings(max_examples=300, deadline=None)
@given(case=worlds(), wide_rows=st.booleans())
def test_evaluate_equals_per_row_short_circuit(case: tuple[World, Tree, list[int]], wide_rows: bool) -> None:
    world, tree, rows = case
    batch, _ = native_batch(world)
    program = np.array(encode(tree), dtype=np.int32).tobytes()
    matched = batch.evaluate(program, np.array(rows, dtype=np.int64 if wide_rows else np.int32), wide_rows)  # type: ignore[attr-defined]
    reached: set[tuple[int, int]] = set()
    expected = [row for row in rows if reference(world, tree, row, reached)]
    assert np.frombuffer(matched, dtype=np.int64).tolist() == expected
    assert world.asked == reached  # kernel leaves were asked about exactly the values reaching them


EDGE_CASES: dict[str, tuple[Tree, list[int], list[int]]] = {
    # (tree over the fixed world below, rows, expected rows)
    "no rows": (("and", [(OP_MASK, 0)]), [], []),
    "empty and is true, empty or is false": (("or", [("and", []), ("or", [])]), [0, 1], [0, 1]),
    "literal mask on a sparse column": ((OP_MASK, 0), [0, 1, 2, 3, 4, 5], [1, 4]),
    "rows without a value are null": ((OP_ISNULL, 0), [0, 1, 2, 3, 4, 5], [0, 2, 3, 5]),
    "rows beyond the batch are null": ((OP_EXISTS, 1), [3, 5, 6, 1000], [3, 5]),
    "all-null column": (("or", [(OP_EXISTS, 2), (OP_MASK, 1)]), [0, 1, 2], []),
    "absent column: isnull true, others false": (
        ("and", [(OP_ISNULL, 3), ("not", (OP_EXISTS, 3)), ("not", (OP_MASK, 2))]),
        [0, 4],
        [0, 4],
    ),
    "literal without hits": ((OP_MASK, 3), [0, 1, 4], []),
    "kernel leaf": (("and", [(OP_EXISTS, 0), (OP_KERNEL, 0)]), [0, 1, 4, 5], [4]),
    "keyword row mask": ((OP_ROWS, 0), [0, 1, 2, 5, 99], [1, 5]),
    "unsorted rows keep their order": (("not", (OP_MASK, 0)), [5, 4, 3, 2, 1, 0], [5, 3, 2, 0]),
}


def edge_world() -> World:
    return World(
        n_rows=6,
        columns=[
            Column(False, [1, 4], [0, 1], 2),  # sparse
            Column(False, None, [0, 1, 0, 1, 0, 1], 2),  # every row
            Column(False, [], [], 0),  # all null
            Column(True, None, [], 1),  # absent
        ],
        masks=[(0, [0, 1]), (2, [2]), (3, [3]), (1, [4])],
        hits={0: [0], 1: [1]},
        kernels=[(0, [False, True])],
        row_masks=[[False, True, False, False, False, True]],
    )


@pytest.mark.parametrize(("tree", "rows", "expected"), EDGE_CASES.values(), ids=EDGE_CASES.keys())
@pytest.mark.parametrize("wide_rows", [False, True])
def test_evaluate_edge_cases(tree: Tree, rows: list[int], expected: list[int], wide_rows: bool) -> None:
    world = edge_world()
    batch, _ = native_batch(world)
    program = np.array(encode(tree), dtype=np.int32).tobytes()
    matched = batch.evaluate(program, np.array(rows, dtype=np.int64 if wide_rows else np.int32), wide_rows)  # type: ignore[attr-defined]
    assert np.frombuffer(matched, dtype=np.int64).tolist() == expected
    assert [row for row in rows if reference(world, tree, row, set())] == expected


def test_literals_not_scanned_yet_are_asked_for_when_reached() -> None:
    world = edge_world()
    batch, resolver = native_batch(world, scanned=False)
    tree = ("and", [(OP_MASK, 0), ("not", (OP_MASK, 3))])  # mask 3 (no hits) is reached by rows 1 and 4
    program = np.array(encode(tree), dtype=np.int32).tobytes()
    matched = batch.evaluate(program, np.arange(6, dtype=np.int64), True)  # type: ignore[attr-defined]
    assert np.frombuffer(matched, dtype=np.int64).tolist() == [1, 4]
    assert resolver.scanned == {0, 1, 4}  # mask 0 unites literals 0 and 1; mask 3 is literal 4
    unreached = np.array(encode(("and", [("const", False), (OP_MASK, 1)])), dtype=np.int32).tobytes()
    batch.evaluate(unreached, np.arange(6, dtype=np.int64), True)  # type: ignore[attr-defined]
    assert 2 not in resolver.scanned


@pytest.mark.parametrize(
    "program",
    [
        [],
        [OP_AND, 2, 2, OP_CONST, 1, 1],
        [OP_NOT, 0, 1],
        [OP_MASK, 9, 1],
        [42, 0, 1],
        [OP_CONST, 1, 2],
        [OP_AND, 2, 3, OP_CONST, 1, -5, OP_CONST, 1, 1],
        [OP_OR, 1, 3, OP_CONST, 1, 0, OP_CONST, 1, 1],
    ],
    ids=[
        "empty",
        "missing child",
        "not without child",
        "mask slot out of range",
        "unknown op",
        "bad size",
        "negative child size",
        "zero child size",
    ],
)
def test_malformed_programs_are_rejected(program: list[int]) -> None:
    batch, _ = native_batch(edge_world())
    with pytest.raises(ValueError):
        batch.evaluate(np.array(program, dtype=np.int32).tobytes(), np.zeros(1, dtype=np.int64), True)  # type: ignore[attr-defined]


def test_resolver_errors_propagate() -> None:
    class Failing(Resolver):
        def load_column(self, slot: int) -> None:
            raise KeyError(slot)

    world = edge_world()
    resolver = Failing(world)
    layout = [np.array([0], dtype=np.int32).tobytes(), np.array([0, 0], dtype=np.int32).tobytes(), b"", b""]
    batch = _calgebra.Batch(6, 4, *layout, {}, 0, resolver, resolver.done)
    with pytest.raises(KeyError):
        batch.evaluate(
            np.array([OP_EXISTS, 0, 1], dtype=np.int32).tobytes(), np.zeros(2, dtype=np.int64), True
        )


@pytest.mark.parametrize(
    ("valid", "codes", "n_distinct"),
    [([0, 1], [0], 2), ([0, 9], [0, 1], 2), (None, [0], 1)],
    ids=["lengths differ", "row beyond the batch", "too few codes"],
)
def test_set_column_rejects_bad_input(valid: list[int] | None, codes: list[int], n_distinct: int) -> None:
    batch, _ = native_batch(edge_world())
    with pytest.raises(ValueError):
        batch.set_column(
            0,
            None if valid is None else np.array(valid, dtype=np.int64),
            np.array(codes, dtype=np.int64),
            n_distinct,
        )  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the engine with and without the extension

EVENTS = {
    "EventID": [1, 1, 4688, 1, 4624, 1, 1, 3],
    "Image": [
        "C:\\w\\cmd.exe",
        "C:\\t\\PsExec.exe",
        None,
        "c:\\x\\CMD.EXE",
        None,
        "C:\\w\\cmd.exe",
        None,
        "a.exe",
    ],
    "CommandLine": [
        "cmd /c whoami",
        "psexec -s cmd",
        "whoami /all",
        "",
        None,
        "cmd /c whoami",
        "x",
        "evil 10.1.1.1",
    ],
    "DestinationIp": ["10.1.2.3", "192.168.0.1", "fe80::1", "bad", None, "10.9.9.9", None, "10.1.1.1"],
    "Count": pa.array([3, None, 10, 7, 0, 3, 1, 2], type=pa.int64()),
    "User": ["ACME\\a", "acme\\b", "ACME\\a", None, "x", "ACME\\a", "y", "z"],
    "TargetUser": ["acme\\A", "b", "ACME\\a", None, "x", "q", "y", "Z"],
}
SYSMON = StrMatch("EventID", "equals", "1")
DETECTIONS: list[Node] = [
    And((StrMatch("Image", "endswith", "\\cmd.exe"), StrMatch("CommandLine", "contains", "whoami"))),
    And(
        (
            Or((StrMatch("Image", "endswith", "\\cmd.exe"), Regex("CommandLine", "^psexec"))),
            Not(IsNull("Image")),
        )
    ),
    And(
        (
            Exists("CommandLine"),
            Not(Or((StrMatch("Image", "contains", "cmd"), Wildcard("Image", "*psexec*")))),
        )
    ),
    And((StrMatch("CommandLine", "contains", "whoami"), Cidr("DestinationIp", "10.0.0.0/8"))),
    And((Compare("Count", "gte", 3), Not(StrMatch("Image", "startswith", "c:\\x")))),
    Keyword(StrMatch(KEYWORD_FIELD, "contains", "evil")),
    And((Keyword(StrMatch(KEYWORD_FIELD, "contains", "whoami")), Regex("CommandLine", "cmd"))),
    And((FieldRef("User", "TargetUser"), StrMatch("CommandLine", "contains", "whoami"))),
    Or((StrMatch("NoSuchColumn", "equals", "x"), IsNull("NoSuchColumn"))),
    Const(True),
]


def engine_rules() -> list[CompiledRule]:
    rules = []
    for i, detection in enumerate(DETECTIONS):
        routes = (
            (Route(SYSMON, detection), Route(Not(SYSMON), detection))
            if i % 2
            else (Route(Const(True), detection),)
        )
        rules.append(CompiledRule(RuleMeta(f"r{i}", f"rule {i}", "high"), detection, routes))
    return rules


def test_engine_without_the_extension_gives_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = pa.RecordBatch.from_pydict(
        {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in EVENTS.items()}
    )
    rules = engine_rules()
    native_engine = Engine(rules)
    assert sum(unit.program is not None for unit in native_engine._plan.units) > 0  # type: ignore[union-attr]
    with_extension = [rows.tolist() for rows in native_engine.match_rows(batch)]
    monkeypatch.setenv(columns.PURE_PYTHON_ENV, "1")
    python_engine = Engine(rules)
    assert all(unit.program is None for unit in python_engine._plan.units)  # type: ignore[union-attr]
    without = [rows.tolist() for rows in python_engine.match_rows(batch)]
    switched_off_later = [rows.tolist() for rows in native_engine.match_rows(batch)]  # its programs unused
    rows = [{k: v for k, v in row.items() if k not in RESERVED_COLUMNS} for row in batch.to_pylist()]
    reference = [[i for i, row in enumerate(rows) if evaluate_rule(rule, row)] for rule in rules]
    assert with_extension == without == switched_off_later == reference
