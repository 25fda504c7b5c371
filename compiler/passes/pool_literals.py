"""Pool the string literals of a whole ruleset per column: the input of the multi-literal pass.

Every ``StrMatch`` leaf becomes a ``Literal``:
its field, match kind, case handling and its *folded* value (``str.lower`` unless ``cased``), which is
exactly what a row's text (lowered the same way unless ``cased``) is compared with. Identical literals
used by many rules are one entry, so the engine scans each column once for all of them. Keyword
leaves (``Keyword(StrMatch("*", ...))``) pool under the field ``KEYWORD_FIELD`` ("*"): the engine
scans every string column for them in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from compiler.ir import MatchKind, Node, StrMatch, children


@dataclass(frozen=True, slots=True)
class Literal:
    """One pooled literal: ``value`` is already folded (lowercased) unless ``cased``."""

    field: str
    kind: MatchKind
    value: str
    cased: bool = False


def literal_of(leaf: StrMatch) -> Literal:
    """Return the pooled literal a ``StrMatch`` leaf compares with."""
    value = leaf.value if leaf.cased else leaf.value.lower()
    return Literal(leaf.field, leaf.kind, value, leaf.cased)


@dataclass(slots=True)
class LiteralPool:
    """Literals keyed by (field, cased); ``ids`` numbers every literal densely in insertion order."""

    by_column: dict[tuple[str, bool], list[Literal]] = field(default_factory=dict)
    ids: dict[Literal, int] = field(default_factory=dict)

    def add(self, literal: Literal) -> int:
        """Add a literal (idempotent) and return its id."""
        known = self.ids.get(literal)
        if known is not None:
            return known
        number = len(self.ids)
        self.ids[literal] = number
        self.by_column.setdefault((literal.field, literal.cased), []).append(literal)
        return number

    def __len__(self) -> int:
        return len(self.ids)

    def literals(self) -> list[Literal]:
        """All literals, indexed by id."""
        return list(self.ids)


def _str_matches(node: Node) -> Iterable[StrMatch]:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, StrMatch):
            yield current
        stack.extend(children(current))


def pool_literals(trees: Iterable[Node], pool: LiteralPool | None = None) -> LiteralPool:
    """Pool the ``StrMatch`` literals of ``trees`` (added to ``pool`` when given)."""
    pool = pool if pool is not None else LiteralPool()
    for tree in trees:
        for leaf in _str_matches(tree):
            pool.add(literal_of(leaf))
    return pool
