r"""The intermediate representation every Sigma rule is lowered to.

Nodes are frozen, slotted dataclasses with tuple children, so they are hashable: identical
predicates across thousands of rules compare equal and are computed once per batch.

Semantics (every backend, the engine and the reference evaluator implement exactly these):

* Two-valued logic. Every leaf yields True or False, never null. A leaf on a missing field or a null
  value is False, except ``Exists`` (False) and ``IsNull`` (True). ``Not`` simply flips.
* String leaves compare the *text form* of the value: strings as they are, integers as decimal digits,
  floats via ``repr`` of the float only when not integral, booleans as ``true``/``false``. So
  ``EventID: 4688`` matches an int column holding 4688 and a string column holding "4688".
* Case-insensitive unless ``cased``: both sides are lowercased with Unicode simple lowercasing
  (Python ``str.lower``), the same as Arrow ``utf8_lower`` and Polars ``to_lowercase``.
* ``Wildcard.pattern`` uses ``*`` (any run, including empty) and ``?`` (exactly one character);
  a backslash escapes the next character (``\*`` is a literal star, ``\\`` a literal backslash);
  a lone trailing backslash is a literal backslash. The match is anchored on both ends.
* ``Regex`` is unanchored (search), Python ``re`` syntax, case-sensitive unless ``i`` is in flags.
* ``Compare`` parses the value as a number (ints, floats, numeric strings); unparseable is False.
* ``Keyword`` is true when its ``match`` (a leaf whose field is ``KEYWORD_FIELD``) is true for any
  string-typed column of the event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Literal

MatchKind = Literal["equals", "contains", "startswith", "endswith"]
CompareOp = Literal["lt", "lte", "gt", "gte"]
TimePart = Literal["minute", "hour", "day", "week", "month", "year"]

#: Placeholder field name inside ``Keyword.match``: "whichever string column".
KEYWORD_FIELD = "*"


@dataclass(frozen=True, slots=True)
class Node:
    """Base class of all IR nodes."""


# ---------------------------------------------------------------- boolean structure


@dataclass(frozen=True, slots=True)
class Const(Node):
    """A constant truth value (what folding leaves behind)."""

    value: bool


@dataclass(frozen=True, slots=True)
class And(Node):
    """All children are true."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    """At least one child is true."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    """The child is false."""

    child: Node


# ---------------------------------------------------------------- field predicates


@dataclass(frozen=True, slots=True)
class StrMatch(Node):
    """The field's text equals / contains / starts with / ends with ``value``."""

    field: str
    kind: MatchKind
    value: str
    cased: bool = False


@dataclass(frozen=True, slots=True)
class Wildcard(Node):
    r"""The field's text matches a Sigma wildcard pattern (anchored, ``*`` ``?`` ``\`` escapes)."""

    field: str
    pattern: str
    cased: bool = False


@dataclass(frozen=True, slots=True)
class Regex(Node):
    """The field's text contains a match of ``pattern``; ``flags`` is a sorted subset of "ims"."""

    field: str
    pattern: str
    flags: str = ""


@dataclass(frozen=True, slots=True)
class Cidr(Node):
    """The field's text is an IPv4/IPv6 address inside ``network`` (e.g. "10.0.0.0/8")."""

    field: str
    network: str


@dataclass(frozen=True, slots=True)
class Compare(Node):
    """The field's numeric value compared with ``value`` (lt, lte, gt, gte)."""

    field: str
    op: CompareOp
    value: int | float


@dataclass(frozen=True, slots=True)
class Exists(Node):
    """The field is present and not null."""

    field: str


@dataclass(frozen=True, slots=True)
class IsNull(Node):
    """The field is missing or null (Sigma ``field: null``)."""

    field: str


@dataclass(frozen=True, slots=True)
class FieldRef(Node):
    """The field's text equals / contains / ... the text of field ``other`` of the same event."""

    field: str
    other: str
    kind: MatchKind = "equals"
    cased: bool = False


@dataclass(frozen=True, slots=True)
class TimestampPart(Node):
    """A part (minute, hour, day, week, month, year) of the field's timestamp equals ``value``."""

    field: str
    part: TimePart
    value: int


@dataclass(frozen=True, slots=True)
class Keyword(Node):
    """An unbound Sigma value: ``match`` (field ``KEYWORD_FIELD``) holds for some string column."""

    match: Node


FieldPredicate = StrMatch | Wildcard | Regex | Cidr | Compare | Exists | IsNull | FieldRef | TimestampPart
LEAF_TYPES: tuple[type[Node], ...] = (
    StrMatch,
    Wildcard,
    Regex,
    Cidr,
    Compare,
    Exists,
    IsNull,
    FieldRef,
    TimestampPart,
)


# ---------------------------------------------------------------- helpers


def children(node: Node) -> tuple[Node, ...]:
    """Return the direct child nodes of ``node``."""
    if isinstance(node, And | Or):
        return node.children
    if isinstance(node, Not):
        return (node.child,)
    if isinstance(node, Keyword):
        return (node.match,)
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def referenced_fields(node: Node) -> frozenset[str]:
    """Field names a tree reads (keyword placeholders excluded)."""
    names: set[str] = set()
    for n in walk(node):
        name = getattr(n, "field", None)
        if isinstance(name, str) and name != KEYWORD_FIELD:
            names.add(name)
        if isinstance(n, FieldRef):
            names.add(n.other)
    return frozenset(names)


def has_keywords(node: Node) -> bool:
    """Whether the tree contains an unbound keyword search."""
    return any(isinstance(n, Keyword) for n in walk(node))


def rename_fields(node: Node, mapping: dict[str, str]) -> Node:
    """Return ``node`` with field names replaced through ``mapping`` (names not in it are kept)."""
    if isinstance(node, And | Or):
        return type(node)(tuple(rename_fields(c, mapping) for c in node.children))
    if isinstance(node, Not):
        return Not(rename_fields(node.child, mapping))
    if isinstance(node, Keyword):
        return node
    changes: dict[str, str] = {}
    for attr in ("field", "other"):
        value = getattr(node, attr, None)
        if isinstance(value, str) and value in mapping:
            changes[attr] = mapping[value]
    return replace(node, **changes) if changes else node


def _quote(value: object) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return repr(value)


_KIND_TEXT = {"equals": "eq", "contains": "contains", "startswith": "startswith", "endswith": "endswith"}


def to_text(node: Node) -> str:
    r"""Render a compact, stable, s-expression text form (for ``compile --to ir`` and fixture tests).

    Examples: ``(and (eq Image "c:\\x.exe") (not (contains:cased CommandLine "A")))``,
    ``(re CommandLine "a.b" i)``, ``(keyword (contains * "mimikatz"))``.
    """
    if isinstance(node, Const):
        return "true" if node.value else "false"
    if isinstance(node, And | Or):
        name = "and" if isinstance(node, And) else "or"
        return f"({name} " + " ".join(to_text(c) for c in node.children) + ")"
    if isinstance(node, Not):
        return f"(not {to_text(node.child)})"
    if isinstance(node, Keyword):
        return f"(keyword {to_text(node.match)})"
    if isinstance(node, StrMatch):
        op = _KIND_TEXT[node.kind] + (":cased" if node.cased else "")
        return f"({op} {node.field} {_quote(node.value)})"
    if isinstance(node, Wildcard):
        op = "glob" + (":cased" if node.cased else "")
        return f"({op} {node.field} {_quote(node.pattern)})"
    if isinstance(node, Regex):
        flags = f" {node.flags}" if node.flags else ""
        return f"(re {node.field} {_quote(node.pattern)}{flags})"
    if isinstance(node, Cidr):
        return f"(cidr {node.field} {_quote(node.network)})"
    if isinstance(node, Compare):
        return f"({node.op} {node.field} {node.value!r})"
    if isinstance(node, Exists):
        return f"(exists {node.field})"
    if isinstance(node, IsNull):
        return f"(null {node.field})"
    if isinstance(node, FieldRef):
        op = "ref-" + _KIND_TEXT[node.kind] + (":cased" if node.cased else "")
        return f"({op} {node.field} {node.other})"
    if isinstance(node, TimestampPart):
        return f"({node.part} {node.field} {node.value})"
    raise TypeError(f"not an IR node: {node!r}")


def node_fields(node: Node) -> dict[str, object]:
    """Return the dataclass fields of a node as a dict (handy for generic passes)."""
    return {f.name: getattr(node, f.name) for f in fields(node)}
