"""Row-group pruning: whether any rule can match a row of a row group, from statistics and partition keys.

A three-valued evaluation of IR predicates where every leaf answers True, False or "unknown" (None)
from what the footer and the hive partition keys say about the whole row group. A row group is skipped
only when every predicate is False, so pruning never drops a row any rule could match.

What decides a leaf (everything else is unknown):

* a field that no column can supply (no column of that name, case-insensitively or as the last part
  of a dotted name, and no nested column that flattening could turn into it) is missing: every leaf
  on it is False except ``IsNull`` (True);
* a hive partition key (a column that is not in the file, or is) is a known constant string:
  ``StrMatch``/``Exists``/``IsNull`` are evaluated exactly, with the IR's text-form semantics;
* ``StrMatch`` equals on an integer column prunes by its min/max when the literal is an integer's
  decimal text (and is False when it is not: no integer's text is "01" or "abc");
* ``StrMatch`` equals on a string column prunes by min/max: cased literals exactly; case-insensitive
  literals (the default) through the range of their case variants (ASCII literals only: from the
  all-upper to the all-lower spelling, and the Kelvin sign for ``k``), so digit-only values such as
  EventIDs prune exactly and mixed-letter values such as Channel names prune only when the whole
  case range lies outside the row group's min/max;
* ``Exists`` is False when every value is null, ``IsNull`` False when none is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from compiler.ir import (
    KEYWORD_FIELD,
    And,
    Const,
    Exists,
    FieldRef,
    IsNull,
    Node,
    Not,
    Or,
    StrMatch,
)

Truth = bool | None

_INTEGER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)\Z")


@dataclass(frozen=True)
class ColumnStats:
    """What the footer says about one flat column in one row group."""

    kind: str  # "int", "string" or "other"
    minimum: Any
    maximum: Any
    null_count: int | None
    num_rows: int


@dataclass
class RowGroupFacts:
    """Everything known about the rows of one row group: column statistics and partition constants."""

    names: frozenset[str]
    lower_names: frozenset[str]
    tails: frozenset[str]
    nested: bool
    stats: dict[str, ColumnStats] = field(default_factory=dict)
    constants: dict[str, str | None] = field(default_factory=dict)
    cache: dict[Node, Truth] = field(default_factory=dict)

    @classmethod
    def from_metadata(
        cls, schema: pa.Schema, row_group: Any, constants: Mapping[str, str | None]
    ) -> RowGroupFacts:
        """Facts from an Arrow schema, a pyarrow ``RowGroupMetaData`` and hive partition keys."""
        names = set(schema.names) | set(constants)
        nested = any(pa.types.is_nested(f.type) for f in schema)
        stats: dict[str, ColumnStats] = {}
        flat = {f.name: f.type for f in schema if not pa.types.is_nested(f.type)}
        for c in range(row_group.num_columns):
            chunk = row_group.column(c)
            name = chunk.path_in_schema
            if name not in flat or not chunk.is_stats_set:
                continue
            statistics = chunk.statistics
            data_type = flat[name]
            if pa.types.is_dictionary(data_type):
                data_type = data_type.value_type
            if pa.types.is_integer(data_type):
                kind = "int"
            elif pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
                kind = "string"
            else:
                kind = "other"
            has_range = statistics.has_min_max and kind != "other"
            minimum = statistics.min if has_range else None
            maximum = statistics.max if has_range else None
            if kind == "string" and not (isinstance(minimum, str) and isinstance(maximum, str)):
                minimum = maximum = None
            stats[name] = ColumnStats(
                kind,
                minimum,
                maximum,
                statistics.null_count if statistics.has_null_count else None,
                row_group.num_rows,
            )
        return cls(
            names=frozenset(names),
            lower_names=frozenset(n.lower() for n in names),
            tails=frozenset(n.lower().rsplit(".", 1)[-1] for n in names),
            nested=nested,
            stats=stats,
            constants=dict(constants),
        )

    def missing(self, name: str) -> bool:
        """Tell whether no column can supply ``name`` (so every leaf on it reads a missing field)."""
        lower = name.lower()
        return not (
            self.nested
            or name in self.names
            or lower in self.lower_names
            or lower.rsplit(".", 1)[-1] in self.tails
        )


def could_match(predicates: Iterable[Node], facts: RowGroupFacts) -> bool:
    """Whether some predicate may be true for some row (False only when all are surely False)."""
    return any(evaluate(p, facts) is not False for p in predicates)


def evaluate(node: Node, facts: RowGroupFacts) -> Truth:
    """Three-valued truth of ``node`` over a whole row group: True, False, or None (unknown)."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, And):
        result: Truth = True
        for child in node.children:
            value = evaluate(child, facts)
            if value is False:
                return False
            if value is None:
                result = None
        return result
    if isinstance(node, Or):
        result = False
        for child in node.children:
            value = evaluate(child, facts)
            if value is True:
                return True
            if value is None:
                result = None
        return result
    if isinstance(node, Not):
        value = evaluate(node.child, facts)
        return None if value is None else not value
    if node in facts.cache:
        return facts.cache[node]
    answer = _leaf(node, facts)
    facts.cache[node] = answer
    return answer


def _leaf(node: Node, facts: RowGroupFacts) -> Truth:
    name = getattr(node, "field", None)
    if not isinstance(name, str) or name == KEYWORD_FIELD:
        return None  # keywords and unknown node kinds
    if facts.missing(name) or (isinstance(node, FieldRef) and facts.missing(node.other)):
        return isinstance(node, IsNull)
    if name in facts.constants:
        return _on_constant(node, facts.constants[name])
    column = facts.stats.get(name)
    if column is None:
        return None
    if isinstance(node, Exists | IsNull) and column.null_count is not None:
        all_null = column.null_count >= column.num_rows
        if isinstance(node, Exists):
            return False if all_null else None
        return False if column.null_count == 0 else (True if all_null else None)
    if isinstance(node, StrMatch) and node.kind == "equals":
        if column.null_count is not None and column.null_count >= column.num_rows:
            return False
        if column.minimum is None:
            return None
        if column.kind == "int":
            if not _INTEGER_TEXT.match(node.value) or node.value == "-0":
                return False
            return None if column.minimum <= int(node.value) <= column.maximum else False
        if column.kind == "string":
            low, high = (node.value, node.value) if node.cased else case_range(node.value)
            if low is None or high is None:
                return None
            return None if (low <= column.maximum and high >= column.minimum) else False
    return None


def _on_constant(node: Node, value: str | None) -> Truth:
    if isinstance(node, Exists):
        return value is not None
    if isinstance(node, IsNull):
        return value is None
    if not isinstance(node, StrMatch):
        return None
    if value is None:
        return False
    text, literal = (value, node.value) if node.cased else (value.lower(), node.value.lower())
    if node.kind == "equals":
        return text == literal
    if node.kind == "contains":
        return literal in text
    if node.kind == "startswith":
        return text.startswith(literal)
    return text.endswith(literal)


def case_range(value: str) -> tuple[str | None, str | None]:
    """Smallest and largest string whose ``str.lower()`` equals ``value.lower()`` (ASCII values only).

    Every such string has the same length and, per character, lies between the smallest and largest
    character lowering to it (an ASCII letter's upper and lower case, plus U+212A KELVIN SIGN for
    ``k``), so it sorts between the two returned strings. Non-ASCII values give (None, None).
    """
    target = value.lower()
    if not target.isascii():
        return None, None
    low = "".join(c.upper() if c.isalpha() else c for c in target)
    high = "".join("\u212a" if c == "k" else c for c in target)
    return low, high
