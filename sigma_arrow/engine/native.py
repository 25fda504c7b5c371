"""The native whole-ruleset engine: route, one multi-literal pass per column, sparse rule algebra.

Per batch:

1. **route** -- rows are grouped by the distinct combinations of the columns route conditions read
   (Channel, EventID, ...); each distinct route condition is evaluated once per group.
2. **literal pass** -- for every (column, cased) pair, one Aho-Corasick scan of the column's distinct
   values finds every pooled literal (all rules' contains/startswith/endswith/equals values, plus a
   necessary literal of each regex / wildcard leaf).
3. **rule algebra** -- a (rule, route) unit runs only when each clause of its necessary-literal CNF has
   a hit in this batch (decided for all units at once); it is then evaluated on its candidate rows
   only (rows of its cheapest clause inside its route, gathered natively). Each unit's tree is
   compiled once per ruleset into a small program (``compile_program``) that the native algebra
   (``sigma_arrow/_calgebra.c``) evaluates over per-distinct-value masks, node at a time with
   short-circuit and/or; without the extension (or with ``SIGMA_ARROW_PURE_PYTHON_ALGEBRA=1``), and
   for trees holding field references, ``BatchEvaluation.eval`` does the same with numpy.
4. **kernels** -- regex, wildcard, cidr, numeric, timestamp, field-reference and keyword leaves are
   computed lazily for the distinct values the candidate rows actually hold (Python ``re`` etc., so
   results are exactly the reference evaluator's).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from compiler import textform
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
    MatchKind,
    Node,
    Not,
    Or,
    Regex,
    StrMatch,
    TimestampPart,
    Wildcard,
    has_keywords,
    referenced_fields,
    walk,
)
from compiler.model import CompiledRule
from compiler.passes.pool_literals import Literal, LiteralPool, literal_of
from compiler.reference import evaluate as reference_evaluate
from compiler.reference import str_match
from sigma_arrow.engine import regex_batch
from sigma_arrow.engine.columns import BoolArray, ColumnView, IntArray, group_order
from sigma_arrow.engine.literals import GroupAutomaton, literal_hits, native_scan_enabled
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.engine.triggers import necessary_clauses

try:  # the native scanner's helpers (setup.py builds it when a C compiler is there)
    from sigma_arrow import _cscan
except ImportError:  # pragma: no cover - depends on the build
    _cscan = None  # type: ignore[assignment]
from sigma_arrow.engine.columns import native_algebra
from sigma_arrow.schema import RESERVED_COLUMNS

STAGES = ("prepare", "route", "literals", "algebra", "kernels", "output")
#: A route selecting at most this share of a batch's rows is "narrow": keyword literals used only on
#: narrow routes are scanned on those rows only.
NARROW_ROUTE = 0.1
#: ... provided all narrow routes together select at most this share (else one full scan is cheaper).
NARROW_UNION = 0.2
#: Distinct values per chunk when a big literal scan is split across threads.
SCAN_CHUNK = 100_000
#: A text kernel leaf remembers at most this many value -> answer pairs across batches.
KERNEL_MEMO_SIZE = 1 << 17
#: A kernel memo holding at least MEMO_PROBE answers that recalls under 1/MEMO_USEFUL of a call's
#: values (values that never repeat, e.g. command lines with unique arguments) is dropped, and its
#: leaf asks without one for its next MEMO_REST calls: lookups and inserts cost more than they save.
MEMO_PROBE = 1024
MEMO_USEFUL = 16
MEMO_REST = 16
#: A cidr leaf asked about at least this many distinct values parses them vectorised (Arrow), not
#: one by one with ``ipaddress``.
VECTOR_CIDR = 64

_EMPTY = np.empty(0, dtype=np.int64)
#: What a literal scan job runs: a group's prebuilt automaton, or literal_hits over these literals.
Scanner = list[tuple[MatchKind, str]] | GroupAutomaton


def _cost(node: Node) -> int:
    """Rough evaluation cost, to evaluate cheap children first (and/or short-circuit on the rest)."""
    if isinstance(node, StrMatch | Exists | IsNull | Const):
        return 1
    if isinstance(node, Not):
        return _cost(node.child)
    if isinstance(node, And | Or):
        return max((_cost(c) for c in node.children), default=1) + 1
    if isinstance(node, Keyword):
        return 100
    return 20


def order_cheap_first(node: Node) -> Node:
    """Return the same tree with and/or children sorted cheapest first (two-valued logic: same meaning)."""
    if isinstance(node, And | Or):
        kids = sorted((order_cheap_first(c) for c in node.children), key=_cost)
        return type(node)(tuple(kids))
    if isinstance(node, Not):
        return Not(order_cheap_first(node.child))
    return node


def check_supported(node: Node) -> str | None:
    """Why the native engine cannot run a tree (None when it can)."""
    for leaf in walk(node):
        try:
            if isinstance(leaf, Regex):
                textform.python_regex(leaf.pattern, leaf.flags)
            elif isinstance(leaf, Cidr):
                textform.parse_network(leaf.network)
        except re.error as exc:
            return f"invalid regex {getattr(leaf, 'pattern', '')!r}: {exc}"
        except Exception as exc:  # UnsupportedError for a bad network
            return str(exc)
    return None


@dataclass(frozen=True, slots=True, eq=False)
class FusedLeaves:
    """Literal leaves of one and/or node on one column, evaluated as one distinct-value mask.

    ``CommandLine|contains: [a, b, c]`` is an Or of three leaves on one column: their union over the
    column's distinct values is gathered to rows once, instead of once per leaf. (Hashed by identity.)
    """

    field: str
    leaves: tuple[StrMatch, ...]
    any_of: bool  # True: Or (union); False: And (intersection)
    literal_ids: IntArray  # the leaves' pooled literal ids


def fuse_leaves(node: And | Or, leaf_literals: dict[Node, int]) -> list[Node | FusedLeaves]:
    """Return the node's children with its pooled literal leaves grouped per column (2 or more fused).

    Two-valued logic makes and/or commutative: a group takes the place of its first leaf.
    """
    by_field: dict[str, list[StrMatch]] = {}
    for child in node.children:
        if isinstance(child, StrMatch) and child.field != KEYWORD_FIELD and child in leaf_literals:
            by_field.setdefault(child.field, []).append(child)
    fused = {id(leaf): name for name, leaves in by_field.items() if len(leaves) > 1 for leaf in leaves}
    parts: list[Node | FusedLeaves] = []
    for child in node.children:
        name = fused.get(id(child))
        if name is None:
            parts.append(child)
        elif name in by_field:  # the group takes its first leaf's place
            leaves = tuple(by_field.pop(name))
            ids = np.array([leaf_literals[leaf] for leaf in leaves], dtype=np.int64)
            parts.append(FusedLeaves(name, leaves, isinstance(node, Or), ids))
    return parts


#: Program operations of the native algebra (sigma_arrow/_calgebra.c): int32 triples (op, argument,
#: subtree size) in prefix order.
OP_AND, OP_OR, OP_NOT, OP_CONST, OP_MASK, OP_EXISTS, OP_ISNULL, OP_KERNEL, OP_ROWS = range(9)
#: Kernel leaves: evaluated per distinct value by Python (``BatchEvaluation._fill_kernel``).
KERNEL_LEAVES = (Regex, Wildcard, Cidr, Compare, TimestampPart)


@dataclass(slots=True)
class AlgebraLayout:
    """The slots programs refer to: columns, literal masks (column + literals united), kernel leaves."""

    column_slots: dict[str, int] = field(default_factory=dict)
    column_names: list[str] = field(default_factory=list)
    mask_slots: dict[tuple[str, tuple[int, ...]], int] = field(default_factory=dict)
    mask_col: list[int] = field(default_factory=list)
    mask_ptr: list[int] = field(default_factory=lambda: [0])
    mask_lits: list[int] = field(default_factory=list)
    kernel_slots: dict[Node, int] = field(default_factory=dict)
    kernel_nodes: list[Node] = field(default_factory=list)
    kernel_col: list[int] = field(default_factory=list)
    #: Row-mask slots: pooled keyword literals (their rows in any string column).
    row_mask_slots: dict[int, int] = field(default_factory=dict)
    row_mask_literals: list[int] = field(default_factory=list)

    def column(self, name: str) -> int:
        """Slot of a column."""
        slot = self.column_slots.get(name)
        if slot is None:
            slot = self.column_slots[name] = len(self.column_names)
            self.column_names.append(name)
        return slot

    def mask(self, name: str, literal_ids: Sequence[int]) -> int:
        """Slot of the union of some literals' hits on a column."""
        key = (name, tuple(sorted(set(literal_ids))))
        slot = self.mask_slots.get(key)
        if slot is None:
            slot = self.mask_slots[key] = len(self.mask_col)
            self.mask_col.append(self.column(name))
            self.mask_lits.extend(key[1])
            self.mask_ptr.append(len(self.mask_lits))
        return slot

    def kernel(self, node: Node) -> int:
        """Slot of a kernel leaf (its answers per distinct value)."""
        slot = self.kernel_slots.get(node)
        if slot is None:
            slot = self.kernel_slots[node] = len(self.kernel_nodes)
            self.kernel_nodes.append(node)
            self.kernel_col.append(self.column(getattr(node, "field")))  # noqa: B009
        return slot

    def row_mask(self, literal_id: int) -> int:
        """Slot of a keyword literal's row mask."""
        slot = self.row_mask_slots.get(literal_id)
        if slot is None:
            slot = self.row_mask_slots[literal_id] = len(self.row_mask_literals)
            self.row_mask_literals.append(literal_id)
        return slot

    def arrays(self) -> tuple[bytes, bytes, bytes, bytes]:
        """(mask_col, mask_ptr, mask_lits, kernel_col) as int32 bytes, as ``_calgebra.Batch`` takes them."""
        return tuple(  # type: ignore[return-value]
            np.array(values, dtype=np.int32).tobytes()
            for values in (self.mask_col, self.mask_ptr, self.mask_lits, self.kernel_col)
        )


def compile_program(node: Node, leaf_literals: dict[Node, int], layout: AlgebraLayout) -> bytes | None:
    """Compile a detection tree to a native algebra program (None: it holds a leaf only Python runs).

    Children keep ``BatchEvaluation.eval``'s order (``fuse_leaves`` groups included), so the same
    rows reach each kernel leaf as in the Python evaluator.
    """
    code: list[int] = []

    def leaf(op: int, argument: int) -> None:
        code.extend((op, argument, 1))

    def emit(item: Node | FusedLeaves) -> bool:
        start = len(code)
        if isinstance(item, FusedLeaves):
            if item.any_of:
                leaf(OP_MASK, layout.mask(item.field, item.literal_ids.tolist()))
                return True
            code.extend((OP_AND, len(item.leaves), 0))
            for one in item.leaves:
                leaf(OP_MASK, layout.mask(one.field, [leaf_literals[one]]))
        elif isinstance(item, And | Or):
            parts = fuse_leaves(item, leaf_literals)
            code.extend((OP_AND if isinstance(item, And) else OP_OR, len(parts), 0))
            if not all(emit(part) for part in parts):
                return False
        elif isinstance(item, Not):
            code.extend((OP_NOT, 0, 0))
            if not emit(item.child):
                return False
        elif isinstance(item, Const):
            leaf(OP_CONST, int(item.value))
            return True
        elif isinstance(item, StrMatch) and item.field != KEYWORD_FIELD and item in leaf_literals:
            leaf(OP_MASK, layout.mask(item.field, [leaf_literals[item]]))
            return True
        elif isinstance(item, Exists | IsNull) and item.field != KEYWORD_FIELD:
            leaf(OP_EXISTS if isinstance(item, Exists) else OP_ISNULL, layout.column(item.field))
            return True
        elif isinstance(item, KERNEL_LEAVES) and getattr(item, "field", KEYWORD_FIELD) != KEYWORD_FIELD:
            leaf(OP_KERNEL, layout.kernel(item))
            return True
        elif isinstance(item, Keyword) and item.match in leaf_literals:
            leaf(OP_ROWS, layout.row_mask(leaf_literals[item.match]))
            return True
        else:  # field references, keywords without a pooled literal: Python evaluates the unit
            return False
        code[start + 2] = (len(code) - start) // 3
        return True

    if not emit(node):
        return None
    return np.array(code, dtype=np.int32).tobytes()


@dataclass(slots=True)
class Unit:
    """One (rule, route) pair: evaluate ``detection`` on rows where ``route`` holds."""

    rule_position: int
    route: int  # index into Plan.routes
    detection: Node
    clauses: list[list[int]]  # necessary-literal CNF as pooled literal ids
    #: (field, cased) literal groups the unit reads (the literal pass runs only for active ones).
    groups: frozenset[tuple[str, bool]] = frozenset()
    #: Every pooled literal id the unit reads (clause atoms and StrMatch leaves).
    literal_ids: tuple[int, ...] = ()
    #: The detection as a native algebra program (None: Python evaluates it; see ``compile_program``).
    program: bytes | None = None


@dataclass(slots=True)
class Plan:
    """Everything about a ruleset the engine precomputes once."""

    rules: list[CompiledRule]
    units: list[Unit] = field(default_factory=list)
    routes: list[Node] = field(default_factory=list)
    pool: LiteralPool = field(default_factory=LiteralPool)
    literals: list[Literal] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    route_fields: list[str] = field(default_factory=list)
    route_per_row: bool = False
    fields: set[str] = field(default_factory=set)
    # CSR of clauses: clause_atoms[clause_ptr[k]:clause_ptr[k+1]] are clause k's literal ids.
    #: Per (field, cased) group: its literal ids and (kind, value) pairs, in pool order.
    group_literals: dict[tuple[str, bool], tuple[IntArray, list[tuple[MatchKind, str]]]] = field(
        default_factory=dict
    )
    #: StrMatch leaf -> pooled literal id (keyword leaves under the field "*").
    leaf_literals: dict[Node, int] = field(default_factory=dict)
    clause_atoms: IntArray = field(default_factory=lambda: _EMPTY)
    clause_ptr: IntArray = field(default_factory=lambda: _EMPTY)
    unit_clause_ptr: IntArray = field(default_factory=lambda: _EMPTY)
    #: Per clause: it has literals; the same number for clauses of the same literals (a cache key).
    clause_nonempty: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    clause_key: IntArray = field(default_factory=lambda: _EMPTY)
    clause_atom_lists: list[list[int]] = field(default_factory=list)
    clause_key_list: list[int] = field(default_factory=list)
    #: Column of each pooled literal (``KEYWORD_FIELD`` for keywords).
    literal_fields: list[str] = field(default_factory=list)
    #: Per unit: it has clauses; its route.
    unit_has_clauses: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    unit_routes: IntArray = field(default_factory=lambda: _EMPTY)
    #: Units' literal ids and (column, cased) groups, concatenated unit by unit, with counts per unit;
    #: whether a unit reads keywords (every string column).
    unit_literals: IntArray = field(default_factory=lambda: _EMPTY)
    unit_literal_counts: IntArray = field(default_factory=lambda: _EMPTY)
    group_list: list[tuple[str, bool]] = field(default_factory=list)
    unit_group_ids: IntArray = field(default_factory=lambda: _EMPTY)
    unit_group_counts: IntArray = field(default_factory=lambda: _EMPTY)
    unit_reads_keywords: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Text kernel leaf -> {value: 0/1}: answers remembered across batches (see ``_per_value``).
    kernel_memo: dict[Node, dict[str, int]] = field(default_factory=dict)
    #: Text kernel leaf -> how many more calls go without the memo (it recalled too little).
    memo_resting: dict[Node, int] = field(default_factory=dict)
    automata: dict[tuple[str, bool], GroupAutomaton] = field(default_factory=dict)
    #: id(and/or node) -> (the node, its children with literal leaves fused; see ``fuse_leaves``).
    parts: dict[int, tuple[Node, list[Node | FusedLeaves]]] = field(default_factory=dict)
    #: Slots of the units' native algebra programs, and the layout arrays ``_calgebra.Batch`` takes.
    layout: AlgebraLayout = field(default_factory=AlgebraLayout)
    layout_arrays: tuple[bytes, bytes, bytes, bytes] | None = None

    def automaton(self, group: tuple[str, bool]) -> GroupAutomaton:
        """Return the automaton of a (column, cased) group's literals (``build_plan`` builds them all)."""
        built = self.automata.get(group)
        if built is None:
            # Uncased groups' literals are lowercase: the native scanner folds the values as it reads.
            built = self.automata[group] = GroupAutomaton(self.group_literals[group][1], fold=not group[1])
        return built


def build_plan(rules: Sequence[CompiledRule]) -> Plan:
    """Pool literals, number route conditions and derive each unit's necessary-literal CNF."""
    plan = Plan(list(rules))
    route_ids: dict[Node, int] = {}
    for position, rule in enumerate(rules):
        reason = None
        for route in rule.routes:
            reason = check_supported(route.condition) or check_supported(route.detection)
            if reason:
                break
        if reason:
            plan.skipped.append((rule.id, reason))
            continue
        for route in rule.routes:
            if route.condition not in route_ids:
                route_ids[route.condition] = len(plan.routes)
                plan.routes.append(route.condition)
            detection = order_cheap_first(route.detection)
            necessary = necessary_clauses(detection)
            clauses = [sorted(plan.pool.add(lit) for lit in clause) for clause in necessary]
            groups = {(lit.field, lit.cased) for clause in necessary for lit in clause}
            used = {atom for clause in clauses for atom in clause}
            for leaf in walk(detection):
                if isinstance(leaf, StrMatch):
                    literal = literal_of(leaf)
                    plan.leaf_literals[leaf] = plan.pool.add(literal)
                    used.add(plan.leaf_literals[leaf])
                    groups.add((literal.field, literal.cased))
            plan.fields |= referenced_fields(detection)
            plan.units.append(
                Unit(
                    position,
                    route_ids[route.condition],
                    detection,
                    clauses,
                    frozenset(groups),
                    tuple(sorted(used)),
                )
            )
    route_fields: set[str] = set()
    for condition in plan.routes:
        route_fields |= referenced_fields(condition)
        for leaf in walk(condition):
            if isinstance(leaf, StrMatch):
                plan.leaf_literals[leaf] = plan.pool.add(literal_of(leaf))
    plan.route_fields = sorted(route_fields)
    # Route conditions are evaluated once per combination of the route columns' values; a keyword
    # (every string column) in a route condition breaks that, so such plans group row by row.
    plan.route_per_row = any(has_keywords(condition) for condition in plan.routes)
    plan.fields |= route_fields
    plan.literals = plan.pool.literals()
    for group, literals in plan.pool.by_column.items():
        plan.group_literals[group] = (
            np.array([plan.pool.ids[lit] for lit in literals], dtype=np.int64),
            [(lit.kind, lit.value) for lit in literals],
        )
    atoms: list[int] = []
    clause_ptr = [0]
    unit_ptr = [0]
    for unit in plan.units:
        for clause in unit.clauses:
            atoms.extend(clause)
            clause_ptr.append(len(atoms))
        unit_ptr.append(len(clause_ptr) - 1)
    plan.clause_atoms = np.array(atoms, dtype=np.int64)
    plan.clause_ptr = np.array(clause_ptr, dtype=np.int64)
    plan.unit_clause_ptr = np.array(unit_ptr, dtype=np.int64)
    plan.clause_nonempty = plan.clause_ptr[1:] > plan.clause_ptr[:-1]
    plan.clause_atom_lists = [atoms[a:b] for a, b in itertools.pairwise(clause_ptr)]
    keys: dict[tuple[int, ...], int] = {}  # clauses of the same literals share a key
    plan.clause_key_list = [keys.setdefault(tuple(lits), len(keys)) for lits in plan.clause_atom_lists]
    plan.clause_key = np.array(plan.clause_key_list, dtype=np.int64)
    plan.literal_fields = [literal.field for literal in plan.literals]
    plan.unit_has_clauses = plan.unit_clause_ptr[1:] > plan.unit_clause_ptr[:-1]
    plan.unit_routes = np.array([unit.route for unit in plan.units], dtype=np.int64)
    plan.unit_literals = np.array([i for unit in plan.units for i in unit.literal_ids], dtype=np.int64)
    plan.unit_literal_counts = np.array([len(unit.literal_ids) for unit in plan.units], dtype=np.int64)
    group_ids: dict[tuple[str, bool], int] = {}
    per_unit = [sorted(group_ids.setdefault(g, len(group_ids)) for g in unit.groups) for unit in plan.units]
    plan.group_list = list(group_ids)
    plan.unit_group_ids = np.array([g for ids in per_unit for g in ids], dtype=np.int64)
    plan.unit_group_counts = np.array([len(ids) for ids in per_unit], dtype=np.int64)
    plan.unit_reads_keywords = np.array(
        [
            (KEYWORD_FIELD, False) in unit.groups or (KEYWORD_FIELD, True) in unit.groups
            for unit in plan.units
        ],
        dtype=bool,
    )
    # Every group's automaton is part of compiling the ruleset (~0.14 s for SigmaHQ's 405 groups):
    # built here, not by the first batches that happen to need them.
    for group in plan.group_literals:
        plan.automaton(group)
    if native_algebra() is not None:
        for unit in plan.units:
            unit.program = compile_program(unit.detection, plan.leaf_literals, plan.layout)
        plan.layout_arrays = plan.layout.arrays()
    return plan


class _Grouping:
    """Rows grouped by a small integer key, with row lists per group."""

    def __init__(
        self, key: IntArray, n_groups: int, order: IntArray | None = None, offsets: IntArray | None = None
    ):
        """Group rows by ``key`` (``order``/``offsets``: the rows group by group, when already known)."""
        self.key = key
        if order is None or offsets is None:
            self.counts = np.bincount(key, minlength=n_groups)
            self.order = group_order(key, n_groups)
            self.offsets = np.concatenate(([0], np.cumsum(self.counts)))
        else:
            self.counts, self.order, self.offsets = np.diff(offsets), order, offsets

    def rows_of(self, groups: IntArray) -> IntArray:
        parts = [self.order[self.offsets[g] : self.offsets[g + 1]] for g in groups.tolist()]
        return np.sort(np.concatenate(parts)) if parts else _EMPTY


class KeywordView:
    """Every string column's distinct values side by side: the pseudo-column keywords search."""

    def __init__(self, views: list[ColumnView], n_rows: int, row_map: IntArray | None = None) -> None:
        self.views = views
        self.n_rows = n_rows
        #: Batch row of each view row when the views cover a subset of the batch's rows (sorted).
        self.row_map = row_map
        sizes = [v.n_distinct for v in views]
        self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.n_distinct = int(self.offsets[-1])
        self._row_masks: dict[int, BoolArray] = {}
        self._counts: IntArray | None = None
        self._values: dict[bool, pa.Array] = {}

    def chunks(self, cased: bool) -> pa.ChunkedArray | pa.Array:
        """Distinct values of all columns as one chunk per column (``values`` when their types differ)."""
        parts = [v.values(cased) for v in self.views]
        if not parts or any(p.type != parts[0].type for p in parts):
            return self.values(cased)
        return pa.chunked_array(parts)

    def values(self, cased: bool) -> pa.Array:
        """Distinct values of all columns, concatenated (string; large_string past 2 GiB)."""
        found = self._values.get(cased)
        if found is not None:
            return found
        parts = [v.values(cased) for v in self.views]
        if not parts:
            found = pa.array([], type=pa.string())
        elif all(pa.types.is_string(p.type) for p in parts) and sum(p.nbytes for p in parts) < 2**31 - 1:
            found = pa.concat_arrays(parts)  # no cast: most batches are far below the 32-bit limit
        else:
            found = pa.concat_arrays([p.cast(pa.large_string()) for p in parts])
        self._values[cased] = found
        return found

    @property
    def counts(self) -> IntArray:
        """Rows per concatenated distinct value."""
        if self._counts is None:
            parts = [v.counts[: v.n_distinct] for v in self.views]
            self._counts = np.concatenate(parts) if parts else _EMPTY
        return self._counts

    def counts_at(self, positions: IntArray) -> IntArray:
        """Rows per concatenated distinct value at some positions (only their columns are counted)."""
        owner = np.searchsorted(self.offsets, positions, side="right") - 1
        found = np.empty(len(positions), dtype=np.int64)
        for column in np.unique(owner).tolist():
            inside = owner == column
            found[inside] = _rows_at(self.views[column], positions[inside] - self.offsets[column])
        return found

    def rows_of(self, positions: IntArray) -> IntArray:
        """Rows where some column holds one of the concatenated distinct values (sorted, unique)."""
        owner = np.searchsorted(self.offsets, positions, side="right") - 1
        parts = []
        for column in np.unique(owner).tolist():
            local = positions[owner == column] - self.offsets[column]
            parts.append(self.views[column].rows_of(local))
        rows = np.unique(np.concatenate(parts)) if parts else _EMPTY
        return rows if self.row_map is None else self.row_map[rows]

    def row_mask(self, literal_id: int, positions: IntArray) -> BoolArray:
        """Row mask of a keyword literal (cached)."""
        mask = self._row_masks.get(literal_id)
        if mask is None:
            mask = np.zeros(self.n_rows, dtype=bool)
            mask[self.rows_of(positions)] = True
            self._row_masks[literal_id] = mask
        return mask


class BatchEvaluation:
    """The state of evaluating one batch: column views, literal hits and leaf caches."""

    def __init__(
        self,
        plan: Plan,
        batch: pa.RecordBatch | SparseBatch,
        timings: dict[str, float],
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.plan = plan
        self.pool = pool
        self.batch = batch
        self.n_rows = batch.num_rows
        self.timings = timings
        self.names = set(batch.schema.names)
        self.columns: dict[str, ColumnView] = {}
        self._keyword_view: KeywordView | None = None
        self._narrow_view: KeywordView | None = None
        #: Keyword literals scanned only on the rows of narrow routes (see ``run``).
        self.narrow_keywords: BoolArray | None = None
        self.narrow_rows: IntArray = _EMPTY
        self.keyword_owner: dict[int, KeywordView] = {}
        self._string_columns: list[ColumnView] | None = None
        self._bound: dict[tuple[Node, str], Node] = {}
        self.dmask_cache: dict[Node, BoolArray] = {}
        self._fused_masks: dict[FusedLeaves, BoolArray] = {}
        self.lazy_cache: dict[Node, np.ndarray] = {}
        n_literals = len(plan.literals)
        self.hit_map: dict[int, IntArray] = {}
        self.literal_hit = np.zeros(n_literals, dtype=np.int8)
        self.literal_rows = np.zeros(n_literals, dtype=np.int64)
        self.literal_done = np.zeros(n_literals, dtype=bool)
        self.kernel_seconds = 0.0
        #: (cheapest clause's key, route) -> candidate rows, shared by the units that have both.
        self._candidate_cache: dict[tuple[int, int], IntArray] = {}
        #: The native algebra's state of this batch (built for the first unit with a program).
        self._algebra: Any = None
        self._kernels_set: set[int] = set()
        #: ``literal_done`` as a list, for the candidate loop (a literal scanned later is looked up again).
        self._scanned: list[bool] | None = None

    # ------------------------------------------------------------ columns

    def column(self, name: str) -> ColumnView | None:
        """Return the view of a batch column (None when the batch has no such column)."""
        view = self.columns.get(name)
        if view is None:
            if name not in self.names or name in RESERVED_COLUMNS:
                return None
            if isinstance(self.batch, SparseBatch):
                set_rows, values = self.batch.sparse_column(name)
                view = ColumnView(name, values, set_rows, self.n_rows)
            else:
                view = ColumnView(name, self.batch.column(name))
            self.columns[name] = view
        return view

    def keyword_view(self) -> KeywordView:
        """Return the concatenation of all string columns (built once per batch)."""
        if self._keyword_view is None:
            self._keyword_view = KeywordView(self.string_columns(), self.n_rows)
        return self._keyword_view

    def narrow_keyword_view(self) -> KeywordView:
        """Return the string columns restricted to ``narrow_rows`` (keyword literals of narrow routes)."""
        if self._narrow_view is None:
            views = self._narrowed_views(self.string_columns())
            self._narrow_view = KeywordView(views, self.n_rows, self.narrow_rows)
        return self._narrow_view

    def _narrowed_views(self, full: list[ColumnView]) -> list[ColumnView]:
        """Restrict the whole-batch views to ``narrow_rows`` (renumbered 0..n-1), without Arrow takes.

        Each view's rows are looked up in one row -> narrow position map, so the cost follows the
        columns' set values; the narrow views keep only the distinct values their rows hold.
        """
        narrow = self.narrow_rows
        place = np.full(self.n_rows, -1, dtype=np.int64)
        place[narrow] = np.arange(len(narrow), dtype=np.int64)
        kept_bits = np.packbits(place >= 0, bitorder="little")
        views = []
        for view in full:
            if _cscan is not None:
                # One native pass per column: kept rows, their renumbered codes and the values used.
                if view.valid_rows is None:
                    rows, codes = narrow, view.codes[narrow]
                else:
                    rows, codes = view.valid_rows, view.codes
                if rows.dtype != np.int32:
                    rows = np.ascontiguousarray(rows, dtype=np.int64)
                local_bytes, code_bytes, distinct_bytes = _cscan.narrow(
                    kept_bits,
                    place,
                    np.ascontiguousarray(rows),
                    rows.dtype == np.int64,
                    np.ascontiguousarray(codes, dtype=np.int64),
                    view.n_distinct,
                )
                local = np.frombuffer(local_bytes, dtype=np.int64)
                if len(local) == 0:
                    continue
                inverse = np.frombuffer(code_bytes, dtype=np.int32)
                distinct = np.frombuffer(distinct_bytes, dtype=np.int64)
            else:
                if view.valid_rows is None:
                    local, codes = np.arange(len(narrow), dtype=np.int64), view.codes[narrow]
                else:
                    places = place[view.valid_rows]
                    inside = np.flatnonzero(places >= 0)
                    local, codes = places[inside], view.codes[inside]
                if len(local) == 0:
                    continue
                # np.unique(codes, return_inverse=True) without its sort: codes are < view.n_distinct.
                used = np.zeros(view.n_distinct, dtype=bool)
                used[codes] = True
                distinct = np.flatnonzero(used)
                inverse = ((np.cumsum(used) - 1)[codes]).astype(np.int32, copy=False)
            values = view.text.take(pa.array(distinct, type=pa.int64()))
            indices = pa.array(inverse.reshape(-1), type=pa.int32())
            encoded = pa.DictionaryArray.from_arrays(indices, values)
            views.append(ColumnView(view.name, encoded, local, len(narrow)))
        return views

    def string_column_names(self) -> list[str]:
        """Names of every string-typed event column (what keywords search), all-null ones left out."""
        names = []
        for name, data_type in zip(self.batch.schema.names, self.batch.schema.types, strict=True):
            if name in RESERVED_COLUMNS:
                continue
            if pa.types.is_dictionary(data_type):
                data_type = data_type.value_type
            if (
                pa.types.is_string(data_type)
                or pa.types.is_large_string(data_type)
                or (pa.types.is_string_view(data_type))
            ) and self._null_count(name) < self.n_rows:
                names.append(name)
        return names

    def _null_count(self, name: str) -> int:
        if isinstance(self.batch, SparseBatch):
            return self.batch.null_count(name)
        return int(self.batch.column(name).null_count)

    def string_columns(self) -> list[ColumnView]:
        """Return views of every string-typed event column that holds a value."""
        if self._string_columns is not None:
            return self._string_columns
        views = []
        for name in self.string_column_names():
            view = self.column(name)
            assert view is not None
            views.append(view)
        self._string_columns = views
        return views

    # ------------------------------------------------------------ stages

    def literal_pass(self, groups: set[tuple[str, bool]], wanted: BoolArray | None = None) -> None:
        """Scan each (column, cased) group once for its pooled literals (only ``wanted`` ones if given)."""
        jobs: list[tuple[ColumnView | KeywordView, IntArray, pa.Array, Scanner]] = []
        for group in sorted(groups):
            if group not in self.plan.group_literals:
                continue
            ids = self.plan.group_literals[group][0]
            selected = ~self.literal_done[ids]
            if wanted is not None:
                selected &= wanted[ids]
            if not selected.any():
                continue
            name, cased = group
            if name != KEYWORD_FIELD:
                small = self.column(name)
                automaton = self.plan.automaton(group)
                if small is not None and small.n_distinct > 0 and automaton.scans_whole(small.n_distinct):
                    # Few values, or the native scanner: the group's prebuilt automaton finds every
                    # literal of the group (hits of literals not wanted yet cost less than a rescan).
                    self.literal_done[ids] = True
                    jobs.append((small, ids, small.values(cased or automaton.folds), automaton))
                    continue
            self.literal_done[ids[selected]] = True
            tiers: list[tuple[ColumnView | KeywordView | None, BoolArray]]
            if name != KEYWORD_FIELD:
                tiers = [(self.column(name), selected)]
            elif self.narrow_keywords is None or self._scans_narrow_rows_whole():
                # One scan of every string column for all wanted keyword literals: natively that
                # costs less than restricting the columns to the narrow routes' rows first (their
                # hits are then known on every row, a superset of what those routes read).
                tiers = [(self.keyword_view(), selected)]
            else:
                narrow = self.narrow_keywords[ids]
                tiers = []
                if (selected & ~narrow).any():
                    tiers.append((self.keyword_view(), selected & ~narrow))
                if (selected & narrow).any():
                    tiers.append((self.narrow_keyword_view(), selected & narrow))
            for view, chosen_mask in tiers:
                if view is None or view.n_distinct == 0:
                    continue
                global_ids = ids[chosen_mask]
                if isinstance(view, KeywordView):
                    for literal_id in global_ids.tolist():
                        self.keyword_owner[literal_id] = view
                chosen = self.plan.automaton(group).subset(np.flatnonzero(chosen_mask))
                folds = isinstance(chosen, GroupAutomaton) and chosen.folds
                if isinstance(view, KeywordView) and isinstance(chosen, GroupAutomaton) and chosen.native:
                    values = view.chunks(cased or folds)  # the native scanner reads each column in place
                else:
                    values = view.values(cased or folds)
                jobs.append((view, global_ids, values, chosen))
        for view, global_ids, per_literal, val_pos in self._scan(jobs):
            if len(val_pos) == 0:
                continue
            hit = np.flatnonzero(per_literal)
            last = np.cumsum(per_literal)[hit]
            first = last - per_literal[hit]
            # A keyword view counts only the columns holding hits (not all of its hundreds).
            counts = view.counts_at(val_pos) if isinstance(view, KeywordView) else _rows_at(view, val_pos)
            row_counts = np.add.reduceat(counts, first)
            hit_ids = global_ids[hit]
            self.literal_hit[hit_ids] = 1
            self.literal_rows[hit_ids] = row_counts
            self.hit_map.update(
                zip(
                    hit_ids.tolist(),
                    [val_pos[start:end] for start, end in zip(first.tolist(), last.tolist(), strict=True)],
                    strict=True,
                )
            )

    def _scans_narrow_rows_whole(self) -> bool:
        """Whether keyword literals of narrow routes are scanned over whole columns (natively)."""
        return native_scan_enabled()

    def _scan(
        self, jobs: list[tuple[ColumnView | KeywordView, IntArray, pa.Array, Scanner]]
    ) -> list[tuple[ColumnView | KeywordView, IntArray, IntArray, IntArray]]:
        """Run the literal scans (see ``_scan_values``), split into chunks on the thread pool if any."""
        if self.pool is None:
            return [(v, ids, *_scan_values(values, pairs)) for v, ids, values, pairs in jobs]
        tasks: list[tuple[int, int, pa.Array, Scanner]] = []
        for job_index, (_, _, values, pairs) in enumerate(jobs):
            if isinstance(pairs, GroupAutomaton) and pairs.native is None:
                tasks.append((job_index, 0, values, pairs))
                continue
            n_chunks = max(1, min(4, len(values) // SCAN_CHUNK))
            size = -(-len(values) // n_chunks)
            for start in range(0, len(values), size):
                tasks.append((job_index, start, values.slice(start, size), pairs))
        tasks.sort(key=lambda t: -len(t[2]))  # biggest first: better balance
        results = list(self.pool.map(lambda t: _scan_values(t[2], t[3]), tasks))
        merged: list[list[tuple[IntArray, IntArray]]] = [[] for _ in jobs]
        for (job_index, start, _, _), (per_literal, val_pos) in zip(tasks, results, strict=True):
            lit_pos = np.repeat(np.arange(len(per_literal), dtype=np.int64), per_literal)
            merged[job_index].append((lit_pos, val_pos + start))
        out = []
        for (view, ids, _, _), parts in zip(jobs, merged, strict=True):
            if len(parts) == 1:
                lit_pos, val_pos = parts[0]
            else:
                lit_pos = np.concatenate([p[0] for p in parts])
                val_pos = np.concatenate([p[1] for p in parts])
                order = np.lexsort((val_pos, lit_pos))
                lit_pos, val_pos = lit_pos[order], val_pos[order]
            out.append((view, ids, np.bincount(lit_pos, minlength=len(ids)).astype(np.int64), val_pos))
        return out

    def hits(self, literal_id: int) -> IntArray:
        """Distinct-value positions where a pooled literal hits."""
        if not self.literal_done[literal_id]:
            literal = self.plan.literals[literal_id]
            wanted = np.zeros(len(self.literal_done), dtype=bool)
            wanted[literal_id] = True
            self.literal_pass({(literal.field, literal.cased)}, wanted)
        return self.hit_map.get(literal_id, _EMPTY)

    def route_masks(self) -> tuple[_Grouping | None, list[BoolArray]]:
        """Per route condition, which row groups it selects."""
        plan = self.plan
        algebra = native_algebra()
        if algebra is not None and not plan.route_per_row and self.n_rows:
            # One native pass: rows grouped by their route columns' values (groups numbered by first row).
            parts = []
            for name in plan.route_fields:
                view = self.column(name)
                if view is not None:
                    valid = view.valid_rows
                    if valid is not None:
                        valid = np.ascontiguousarray(
                            valid, dtype=np.int32 if valid.dtype == np.int32 else np.int64
                        )
                    parts.append((valid, np.ascontiguousarray(view.codes, dtype=np.int64), view.n_distinct))
            found = algebra.group_rows(self.n_rows, parts)
            if found is not None:
                group_of_row, first_rows, order, offsets = (np.frombuffer(b, dtype=np.int64) for b in found)
                grouping = _Grouping(group_of_row, len(first_rows), order, offsets)
                return grouping, [self.eval(condition, first_rows) for condition in plan.routes]
        key = np.zeros(self.n_rows, dtype=np.int64)
        size = 1
        if plan.route_per_row:
            key, size = np.arange(self.n_rows, dtype=np.int64), max(self.n_rows, 1)
        for name in [] if plan.route_per_row else plan.route_fields:
            view = self.column(name)
            if view is None:
                continue
            width = view.n_distinct + 1
            if size * width > 2**40:
                _, key = np.unique(key, return_inverse=True)
                size = int(key.max()) + 1 if len(key) else 1
            key = key * width + view.full_index()
            size *= width
        if self.n_rows == 0:
            return None, [np.zeros(0, dtype=bool) for _ in plan.routes]
        if size <= max(4 * self.n_rows, 1 << 16):
            present = np.bincount(key, minlength=size) > 0
            lookup = np.cumsum(present) - 1
            group_of_row = lookup[key]
            representatives = np.zeros(int(present.sum()), dtype=np.int64)
            representatives[group_of_row[::-1]] = np.arange(self.n_rows - 1, -1, -1)
        else:
            _, first_rows, group_of_row = np.unique(key, return_index=True, return_inverse=True)
            representatives = first_rows.astype(np.int64)
        grouping = _Grouping(group_of_row.astype(np.int64), len(representatives))
        masks = [self.eval(condition, representatives) for condition in plan.routes]
        return grouping, masks

    # ------------------------------------------------------------ evaluation over rows

    def eval(self, node: Node, rows: IntArray) -> BoolArray:
        """Evaluate a node on the given rows."""
        if isinstance(node, And):
            result = np.ones(len(rows), dtype=bool)
            alive = np.arange(len(rows))
            for part in self._parts(node):
                if len(alive) == 0:
                    break
                sub = (
                    self._fused(part, rows[alive])
                    if isinstance(part, FusedLeaves)
                    else self.eval(part, rows[alive])
                )
                result[alive[~sub]] = False
                alive = alive[sub]
            return result
        if isinstance(node, Or):
            result = np.zeros(len(rows), dtype=bool)
            pending = np.arange(len(rows))
            for part in self._parts(node):
                if len(pending) == 0:
                    break
                sub = (
                    self._fused(part, rows[pending])
                    if isinstance(part, FusedLeaves)
                    else self.eval(part, rows[pending])
                )
                result[pending[sub]] = True
                pending = pending[~sub]
            return result
        if isinstance(node, Not):
            return ~self.eval(node.child, rows)
        if isinstance(node, Const):
            return np.full(len(rows), node.value, dtype=bool)
        if isinstance(node, Keyword):
            return self._keyword(node, rows)
        if isinstance(node, FieldRef):
            return self._field_ref(node, rows)
        return self._leaf(node, rows)

    def _parts(self, node: And | Or) -> list[Node | FusedLeaves]:
        """Return an and/or node's children, its literal leaves fused per column (once per plan)."""
        entry = self.plan.parts.get(id(node))
        if entry is None or entry[0] is not node:
            entry = self.plan.parts[id(node)] = (node, fuse_leaves(node, self.plan.leaf_literals))
        return entry[1]

    def _fused(self, part: FusedLeaves, rows: IntArray) -> BoolArray:
        """Evaluate fused literal leaves: one mask over the column's distinct values, one gather."""
        view = self.column(part.field)
        if view is None:
            return np.zeros(len(rows), dtype=bool)
        mask = self._fused_masks.get(part)
        if mask is None:
            if part.any_of:
                mask = np.zeros(view.n_distinct + 1, dtype=bool)
                ids = part.literal_ids
                for literal_id in ids[~self.literal_done[ids]].tolist():
                    self.hits(literal_id)  # scans the literals no pass has looked for yet
                for literal_id in ids[self.literal_hit[ids] > 0].tolist():  # most leaves hit nothing
                    mask[self.hit_map[literal_id]] = True
            else:
                mask = self._str_dmask(part.leaves[0], view).copy()
                for leaf in part.leaves[1:]:
                    mask &= self._str_dmask(leaf, view)
            self._fused_masks[part] = mask
        found: BoolArray = mask[view.index_at(rows)]
        return found

    def _leaf(self, node: Node, rows: IntArray) -> BoolArray:
        name = getattr(node, "field", None)
        assert isinstance(name, str)
        view = self.column(name)
        if view is None:
            return np.full(len(rows), isinstance(node, IsNull), dtype=bool)
        if isinstance(node, Exists | IsNull):
            present: BoolArray = view.index_at(rows) != view.n_distinct
            return present if isinstance(node, Exists) else ~present
        if isinstance(node, StrMatch):
            return self._str_dmask(node, view)[view.index_at(rows)]
        return self._lazy(node, view, view.index_at(rows))

    def _str_dmask(self, node: StrMatch, view: ColumnView) -> BoolArray:
        cached = self.dmask_cache.get(node)
        if cached is not None:
            return cached
        mask = np.zeros(view.n_distinct + 1, dtype=bool)
        literal_id = self.plan.leaf_literals.get(node)
        if literal_id is not None:
            mask[self.hits(literal_id)] = True
        else:  # keyword leaves bound to a concrete column: Arrow kernel over all distinct values
            started = time.perf_counter()
            values = view.values(node.cased)
            literal = node.value if node.cased else node.value.lower()
            if node.kind == "contains":
                found = pc.match_substring(values, literal)
            elif node.kind == "startswith":
                found = pc.starts_with(values, literal)
            elif node.kind == "endswith":
                found = pc.ends_with(values, literal)
            else:
                found = pc.equal(values, literal)
            mask[: view.n_distinct] = pc.fill_null(found, False).to_numpy(zero_copy_only=False)
            self.kernel_seconds += time.perf_counter() - started
        self.dmask_cache[node] = mask
        return mask

    def _lazy(self, node: Node, view: ColumnView, distinct: IntArray) -> BoolArray:
        """Evaluate a kernel leaf (regex, glob, cidr, compare, timestamp part) per distinct value."""
        state = self._kernel_state(node, view)
        values = state[distinct]
        unknown = distinct[values < 0]
        if len(unknown):
            self._fill_kernel(node, view, state, unknown)
            values = state[distinct]
        return values > 0

    def _kernel_state(self, node: Node, view: ColumnView) -> npt.NDArray[np.int8]:
        """Return a kernel leaf's answers per distinct value (-1: not asked yet; the null slot is 0)."""
        state = self.lazy_cache.get(node)
        if state is None:
            state = np.full(view.n_distinct + 1, -1, dtype=np.int8)
            state[view.n_distinct] = 0
            self.lazy_cache[node] = state
        return state

    def _fill_kernel(
        self, node: Node, view: ColumnView, state: npt.NDArray[np.int8], unknown: IntArray
    ) -> None:
        """Answer a kernel leaf for some distinct values (repeats allowed) into ``state``."""
        if len(unknown):
            started = time.perf_counter()
            if len(unknown) * 16 > view.n_distinct:  # many: a flag per distinct value beats a sort
                flags = np.zeros(view.n_distinct + 1, dtype=bool)
                flags[unknown] = True
                needed = np.flatnonzero(flags)
            else:
                needed = np.unique(unknown)
            test = _kernel(node)
            if isinstance(node, Compare | TimestampPart):
                inputs = view.raw_python(needed)
                state[needed] = [1 if (v is not None and test(v)) else 0 for v in inputs]
            elif isinstance(node, Cidr) and len(needed) >= VECTOR_CIDR:
                network = textform.parse_network(node.network)
                if network.version == 4:
                    # Every cidr leaf of the column shares one vectorised parse of its addresses.
                    addresses = view.ipv4_at(needed)
                    low, high = int(network.network_address), int(network.broadcast_address)
                    state[needed] = (addresses >= low) & (addresses <= high)
                else:  # only texts holding a colon can be IPv6 addresses
                    texts = view.text.take(pa.array(needed, type=pa.int64()))
                    colon = pc.fill_null(pc.match_substring(texts, ":"), False).to_numpy(zero_copy_only=False)
                    state[needed] = 0
                    candidates = needed[colon]
                    state[candidates] = self._per_value(node, view, candidates, test)
            elif (
                isinstance(node, Regex)
                and len(needed) >= regex_batch.MIN_VALUES
                and (found := regex_batch.regex_hits(node, view.text.take(pa.array(needed)))) is not None
            ):
                state[needed] = found  # many values: one RE2 pass (same answers as Python's ``re``)
            else:
                state[needed] = self._per_value(node, view, needed, test)
            self.kernel_seconds += time.perf_counter() - started

    def _per_value(
        self, node: Node, view: ColumnView, needed: IntArray, test: Callable[[object], bool]
    ) -> list[int]:
        """Answer a text kernel (0/1) for some distinct values, one call per value not remembered.

        Text kernels remember their answers across batches: logs repeat values (images, command
        lines, addresses) far beyond one batch.
        """
        plan = self.plan
        texts = view.texts_at(needed)
        resting = plan.memo_resting.get(node, 0)
        if resting:
            # The memo recalled too little lately (values that never repeat): ask without it.
            plan.memo_resting[node] = resting - 1
            if isinstance(node, Regex):
                search = _searcher(node)
                return [0 if text is None or search(text) is None else 1 for text in texts]
            return [1 if text is not None and test(text) else 0 for text in texts]
        memo = plan.kernel_memo.get(node)
        if memo is None or len(memo) > KERNEL_MEMO_SIZE:
            memo = plan.kernel_memo[node] = {}
        known = len(memo)
        recall = memo.get
        answers = [recall(text, -1) if text is not None else 0 for text in texts]
        missed = 0
        if isinstance(node, Regex):  # the commonest kernel: its compiled search called directly
            search = _searcher(node)
            for position, answer in enumerate(answers):
                if answer < 0:
                    text = texts[position]
                    assert text is not None
                    answers[position] = memo[text] = 0 if search(text) is None else 1
                    missed += 1
        else:
            for position, answer in enumerate(answers):
                if answer < 0:
                    text = texts[position]
                    assert text is not None
                    answers[position] = memo[text] = 1 if test(text) else 0
                    missed += 1
        if known >= MEMO_PROBE and missed * MEMO_USEFUL > len(texts) * (MEMO_USEFUL - 1):
            # A well-filled memo answered under 1/MEMO_USEFUL of the values: rest it for a while.
            plan.memo_resting[node] = MEMO_REST
            del plan.kernel_memo[node]
        return answers

    def _keyword(self, node: Keyword, rows: IntArray) -> BoolArray:
        literal_id = self.plan.leaf_literals.get(node.match)
        if literal_id is not None:
            hits = self.hits(literal_id)
            owner = self.keyword_owner.get(literal_id) or self.keyword_view()
            return owner.row_mask(literal_id, hits)[rows]
        result = np.zeros(len(rows), dtype=bool)
        for view in self.string_columns():
            pending = np.flatnonzero(~result)
            if len(pending) == 0:
                break
            distinct = view.index_at(rows[pending])
            present = distinct != view.n_distinct
            if not present.any():
                continue
            key = (node.match, view.name)
            bound = self._bound.get(key)
            if bound is None:
                bound = _bind_keyword(node.match, view.name)
                self._bound[key] = bound
            pending = pending[present]
            result[pending] = self._lazy(bound, view, distinct[present])
        return result

    def _field_ref(self, node: FieldRef, rows: IntArray) -> BoolArray:
        left, right = self.column(node.field), self.column(node.other)
        if left is None or right is None or len(rows) == 0:
            return np.zeros(len(rows), dtype=bool)
        started = time.perf_counter()
        # One int64 key per (left value, right value) pair: a 1-D unique is far cheaper than axis=0.
        width = right.n_distinct + 1
        keys = left.index_at(rows) * width + right.index_at(rows)
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        left_text = left.texts_at(unique_keys // width)
        right_text = right.texts_at(unique_keys % width)
        outcomes = [
            a is not None
            and b is not None
            and str_match(node.kind, textform.fold(a, node.cased), textform.fold(b, node.cased))
            for a, b in zip(left_text, right_text, strict=True)
        ]
        self.kernel_seconds += time.perf_counter() - started
        answers: BoolArray = np.array(outcomes, dtype=bool)[inverse.reshape(-1)]
        return answers

    # ------------------------------------------------------------ the whole batch

    def run(self) -> list[IntArray]:
        """Return the matching rows (sorted) of every rule position of the plan."""
        plan = self.plan
        timings = self.timings
        started = time.perf_counter()
        grouping, route_groups = self.route_masks()
        if grouping is not None and route_groups:
            route_rows = np.stack(route_groups).astype(np.int64) @ grouping.counts
        else:
            route_rows = np.zeros(len(route_groups), dtype=np.int64)
        route_counts: list[int] = route_rows.tolist()
        # Per unit (vectorised over all of them): its route's rows, whether it runs at all.
        unit_rows = route_rows[plan.unit_routes] if len(plan.units) else _EMPTY
        live = unit_rows > 0
        active: list[int] = np.flatnonzero(live).tolist()
        now = time.perf_counter()
        timings["route"] += now - started
        started = now
        wanted = np.zeros(len(plan.literals), dtype=bool)
        wide = np.zeros(len(plan.literals), dtype=bool)
        wanted[plan.unit_literals[np.repeat(live, plan.unit_literal_counts)]] = True
        needed = {
            plan.group_list[g]
            for g in np.unique(plan.unit_group_ids[np.repeat(live, plan.unit_group_counts)]).tolist()
        }
        keyword_units = live & plan.unit_reads_keywords
        wide_units = keyword_units & (unit_rows > NARROW_ROUTE * self.n_rows)
        wide[plan.unit_literals[np.repeat(wide_units, plan.unit_literal_counts)]] = True
        narrow_routes = set(plan.unit_routes[keyword_units & ~wide_units].tolist())
        if narrow_routes and grouping is not None:
            # Keyword literals only narrow routes use are scanned on those routes' rows only.
            selected_groups = np.zeros(len(grouping.counts), dtype=bool)
            for route in narrow_routes:
                selected_groups |= route_groups[route]
            narrow_rows = grouping.rows_of(np.flatnonzero(selected_groups))
            if len(narrow_rows) <= NARROW_UNION * self.n_rows:
                self.narrow_rows = narrow_rows
                self.narrow_keywords = wanted & ~wide
        for name, _cased in needed:
            if name != KEYWORD_FIELD:
                self.column(name)
        if any(name == KEYWORD_FIELD for name, _ in needed):
            self.keyword_view()
        now = time.perf_counter()
        timings["prepare"] += now - started
        started = now
        self.literal_pass(needed, wanted)
        now = time.perf_counter()
        timings["literals"] += now - started
        started = now
        self.kernel_seconds = 0.0

        results: list[list[IntArray]] = [[] for _ in plan.rules]
        if grouping is not None and plan.units:
            route_rows_cache: dict[int, IntArray] = {}
            native = native_algebra() is not None  # (switched off after the plan was built: numpy)
            try:
                for unit_index, best in self._units_to_evaluate(active, route_counts):
                    unit = plan.units[unit_index]
                    candidates = self._candidates(unit, best, grouping, route_groups, route_rows_cache)
                    if len(candidates) == 0:
                        continue
                    if unit.program is not None and native:
                        matched = self._run_program(unit.program, candidates)
                    else:
                        matched = candidates[self.eval(unit.detection, candidates)]
                    if len(matched):
                        results[unit.rule_position].append(matched)
            finally:
                self._algebra = None  # it refers back to this evaluation (its resolver): no cycle left
        timings["kernels"] += self.kernel_seconds
        timings["algebra"] += time.perf_counter() - started - self.kernel_seconds
        merged: list[IntArray] = []
        for parts in results:
            if not parts:
                merged.append(_EMPTY)
            elif len(parts) == 1:
                merged.append(parts[0].astype(np.int64, copy=False))  # int32 from sparse row lists
            else:
                merged.append(np.unique(np.concatenate(parts)).astype(np.int64, copy=False))
        return merged

    def _run_program(self, program: bytes, rows: IntArray) -> IntArray:
        """Rows (of ``rows``, in their order) where a unit's native program holds.

        The native evaluator asks an ``_AlgebraResolver`` for what it needs as it goes: column
        views, kernel answers for the distinct values reaching a kernel leaf, keyword row masks.
        """
        algebra = self._algebra
        if algebra is None:
            plan = self.plan
            assert plan.layout_arrays is not None
            module = native_algebra()
            assert module is not None  # programs exist only when it does
            algebra = self._algebra = module.Batch(
                self.n_rows,
                len(plan.layout.column_names),
                *plan.layout_arrays,
                self.hit_map,
                len(plan.layout.row_mask_literals),
                _AlgebraResolver(self),
                self.literal_done,
            )
        wide = rows.dtype != np.int32
        matched = algebra.evaluate(
            program, np.ascontiguousarray(rows, dtype=np.int64 if wide else np.int32), wide
        )
        return np.frombuffer(matched, dtype=np.int64) if matched else _EMPTY

    def _units_to_evaluate(self, active: list[int], route_counts: list[int]) -> list[tuple[int, int]]:
        """Return (unit, its cheapest clause or -1) for the active units whose every clause has a hit.

        Vectorised over all units: a clause holds when one of its literals hits; its estimate is its
        literals' row count; a unit's cheapest clause (the first of the least estimate) narrows its
        candidate rows when it selects fewer rows than the unit's route.
        """
        plan = self.plan
        n_clauses = len(plan.clause_ptr) - 1
        if n_clauses == 0 or not active:
            return [(unit, -1) for unit in active]
        starts = plan.clause_ptr[:-1][plan.clause_nonempty]
        clause_ok = np.zeros(n_clauses, dtype=np.int8)
        clause_rows = np.full(n_clauses, 1 << 40, dtype=np.int64)  # empty clauses never hold anyway
        if len(starts):
            clause_ok[plan.clause_nonempty] = np.maximum.reduceat(self.literal_hit[plan.clause_atoms], starts)
            clause_rows[plan.clause_nonempty] = np.add.reduceat(self.literal_rows[plan.clause_atoms], starts)
        has = plan.unit_has_clauses
        unit_starts = plan.unit_clause_ptr[:-1][has]
        n_units = len(plan.units)
        unit_ok = np.ones(n_units, dtype=bool)
        best = np.full(n_units, -1, dtype=np.int64)
        if len(unit_starts):
            unit_ok[has] = np.minimum.reduceat(clause_ok, unit_starts) > 0
            # The first clause of least estimate: estimates and positions ordered together.
            ranked = clause_rows * n_clauses + np.arange(n_clauses, dtype=np.int64)
            least = np.minimum.reduceat(ranked, unit_starts)
            narrows = least // n_clauses < np.asarray(route_counts, dtype=np.int64)[plan.unit_routes[has]]
            best[has] = np.where(narrows, least % n_clauses, -1)
        chosen = np.asarray(active, dtype=np.int64)
        chosen = chosen[unit_ok[chosen]]
        return list(zip(chosen.tolist(), best[chosen].tolist(), strict=True))

    def _candidates(
        self,
        unit: Unit,
        best: int,
        grouping: _Grouping,
        route_groups: list[BoolArray],
        route_rows_cache: dict[int, IntArray],
    ) -> IntArray:
        """Rows a unit must be evaluated on: its route, narrowed by its cheapest literal clause (-1: none)."""
        plan = self.plan
        route_mask = route_groups[unit.route]
        if best < 0:
            rows = route_rows_cache.get(unit.route)
            if rows is None:
                rows = grouping.rows_of(np.flatnonzero(route_mask))
                route_rows_cache[unit.route] = rows
            return rows
        key = (plan.clause_key_list[best], unit.route)
        cached = self._candidate_cache.get(key)
        if cached is not None:
            return cached  # several units (rules) share their cheapest clause, e.g. an Image suffix
        found: IntArray
        algebra = native_algebra()
        if algebra is not None:
            native = self._native_candidates(algebra, best, grouping, route_mask)
            if native is not None:
                self._candidate_cache[key] = native
                return native
        atoms = plan.clause_atoms[plan.clause_ptr[best] : plan.clause_ptr[best + 1]]
        if not self.literal_done[atoms].all():
            for atom in atoms[~self.literal_done[atoms]].tolist():
                self.hits(atom)  # scans the literals no pass has looked for yet
        hit_map = self.hit_map
        by_view: dict[int, tuple[ColumnView | KeywordView, list[IntArray]]] = {}
        for atom in plan.clause_atom_lists[best]:
            hits = hit_map.get(atom)
            if hits is not None and len(hits):
                name = plan.literal_fields[atom]
                view: ColumnView | KeywordView
                if name == KEYWORD_FIELD:
                    view = self.keyword_owner.get(atom) or self.keyword_view()
                else:
                    view = self.columns[name]
                entry = by_view.get(id(view))
                if entry is None:
                    by_view[id(view)] = (view, [hits])
                else:
                    entry[1].append(hits)
        if not by_view:
            found = _EMPTY
        else:
            pieces = []
            for view, hit_lists in by_view.values():
                distinct = np.unique(np.concatenate(hit_lists)) if len(hit_lists) > 1 else hit_lists[0]
                pieces.append(view.rows_of(distinct))
            rows = np.unique(np.concatenate(pieces)) if len(pieces) > 1 else np.sort(pieces[0])
            found = rows[route_mask[grouping.key[rows]]]
        self._candidate_cache[key] = found
        return found

    def _native_candidates(
        self, algebra: ModuleType, clause: int, grouping: _Grouping, route_mask: BoolArray
    ) -> IntArray | None:
        """Return a clause's rows inside a route, sorted (None: a keyword literal; the caller handles it).

        One native pass over the rows of every value a literal of the clause hits.
        """
        plan = self.plan
        done = self._scanned
        if done is None:
            done = self._scanned = self.literal_done.tolist()
        hit_map, fields, columns = self.hit_map, plan.literal_fields, self.columns
        parts = []
        for atom in plan.clause_atom_lists[clause]:
            if not done[atom]:
                self.hits(atom)  # scans the literals no pass has looked for yet
                done[atom] = True
            hits = hit_map.get(atom)
            if hits is None:
                continue
            name = fields[atom]
            if name == KEYWORD_FIELD:
                return None
            order, offsets = columns[name].row_groups()
            parts.append((order, offsets, hits))
        if not parts:
            return _EMPTY
        return np.frombuffer(
            algebra.gather_rows(self.n_rows, parts, grouping.key, route_mask), dtype=np.int64
        )


class _AlgebraResolver:
    """What the native algebra (``_calgebra.Batch``) asks a batch's evaluation for, on first need."""

    __slots__ = ("evaluation",)

    def __init__(self, evaluation: BatchEvaluation) -> None:
        self.evaluation = evaluation

    def load_column(self, slot: int) -> None:
        """Hand a column view to the native algebra (or say the batch has no such column)."""
        evaluation = self.evaluation
        algebra = evaluation._algebra
        assert algebra is not None
        view = evaluation.column(evaluation.plan.layout.column_names[slot])
        if view is None:
            algebra.set_column(slot, None, None, -1)
            return
        valid = view.valid_rows
        if valid is not None:
            valid = np.ascontiguousarray(valid, dtype=np.int32 if valid.dtype == np.int32 else np.int64)
        algebra.set_column(slot, valid, np.ascontiguousarray(view.codes, dtype=np.int64), view.n_distinct)

    def scan_literal(self, literal_id: int) -> None:
        """Find a literal's hits (one the literal pass has not looked for)."""
        self.evaluation.hits(literal_id)

    def answer(self, slot: int, asked: bytes) -> None:
        """Answer a kernel slot for some distinct values of its column (repeats allowed)."""
        evaluation = self.evaluation
        algebra = evaluation._algebra
        assert algebra is not None
        layout = evaluation.plan.layout
        node = layout.kernel_nodes[slot]
        view = evaluation.columns[layout.column_names[layout.kernel_col[slot]]]  # loaded before it asks
        state = evaluation._kernel_state(node, view)
        if slot not in evaluation._kernels_set:
            algebra.set_lazy(slot, state)
            evaluation._kernels_set.add(slot)
        codes = np.frombuffer(asked, dtype=np.int64)
        evaluation._fill_kernel(node, view, state, codes[state[codes] < 0])  # the null slot is known

    def load_row_mask(self, slot: int) -> None:
        """Hand a keyword literal's row mask to the native algebra."""
        evaluation = self.evaluation
        algebra = evaluation._algebra
        assert algebra is not None
        literal_id = evaluation.plan.layout.row_mask_literals[slot]
        hits = evaluation.hits(literal_id)
        owner = evaluation.keyword_owner.get(literal_id) or evaluation.keyword_view()
        algebra.set_row_mask(slot, owner.row_mask(literal_id, hits))


def _rows_at(view: ColumnView, positions: IntArray) -> IntArray:
    """Rows holding each of some distinct values of a column (natively: one pass, no full bincount)."""
    if _cscan is None:
        return view.counts[positions]
    codes = np.ascontiguousarray(view.codes, dtype=np.int64)
    found = _cscan.rows_at(codes, view.n_distinct, np.ascontiguousarray(positions, dtype=np.int64))
    return np.frombuffer(found, dtype=np.int64)


def _scan_values(values: pa.Array, scanner: Scanner) -> tuple[IntArray, IntArray]:
    """Literal hits of one scan job (a prebuilt group automaton, or the given literals).

    Grouped: (hits per literal position, value positions sorted by literal then value).
    """
    if isinstance(scanner, GroupAutomaton):
        return scanner.hits_grouped(values)
    literal_pos, value_pos = literal_hits(values, scanner)
    return np.bincount(literal_pos, minlength=len(scanner)).astype(np.int64, copy=False), value_pos


def _bind_keyword(match: Node, name: str) -> Node:
    """Return a keyword's leaf bound to a concrete column."""
    changed: Node = replace(match, field=name)  # type: ignore[call-arg]
    return changed


@functools.lru_cache(maxsize=4096)
def _kernel(node: Node) -> Callable[[object], bool]:
    """Build a per-value test for a kernel leaf, with exactly the reference evaluator's semantics."""
    if isinstance(node, Regex):
        compiled = textform.python_regex(node.pattern, node.flags)
        return lambda text: compiled.search(str(text)) is not None
    if isinstance(node, Wildcard):
        tokens = textform.fold_glob(textform.parse_glob(node.pattern), node.cased)
        glob = re.compile(textform.glob_to_python_regex(tokens), re.DOTALL)
        cased = node.cased
        return lambda text: glob.match(textform.fold(str(text), cased)) is not None
    if isinstance(node, Cidr):
        network = textform.parse_network(node.network)
        low, high = int(network.network_address), int(network.broadcast_address)
        version = network.version

        def in_network(text: object) -> bool:
            text = str(text)
            if (":" in text) != (version == 6):
                return False  # IPv4 addresses never hold a colon, IPv6 ones always do: no parse
            parsed = _parse_address(text)
            return parsed is not None and parsed[0] == version and low <= parsed[1] <= high

        return in_network
    name = getattr(node, "field", "")
    return lambda value: reference_evaluate(node, {name: value})


@functools.lru_cache(maxsize=4096)
def _searcher(node: Regex) -> Callable[[str], re.Match[str] | None]:
    """Return the compiled ``search`` of a regex leaf (``re``'s own cache holds only 512 patterns)."""
    return textform.python_regex(node.pattern, node.flags).search


@functools.lru_cache(maxsize=1 << 16)
def _parse_address(text: str) -> tuple[int, int] | None:
    """(IP version, integer) of an address in ``ipaddress.ip_address`` syntax; None if it is none."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, int(address)


def clear_caches() -> None:
    """Forget the process-wide kernel and address caches (benchmarks start each run cold)."""
    _kernel.cache_clear()
    _searcher.cache_clear()
    _parse_address.cache_clear()
