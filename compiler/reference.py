r"""The slow, obvious, pure-Python reference evaluator: the test oracle of every backend and the engine.

``evaluate(node, row)`` implements the semantics of :mod:`compiler.ir` over one event given as a
mapping (a missing key is the same as a null value). Decisions the IR docstring leaves open, fixed here
(and implemented in :mod:`compiler.textform`, which the backends share):

* Text form (:func:`compiler.textform.text_of`): ``str`` as is, ``bool`` -> ``true``/``false``, ``int``
  -> decimal digits, integral ``float`` -> the integer's digits (``4688.0`` -> ``4688``), other floats ->
  ``repr`` (``1.5``, ``1e-07``, ``nan``, ``inf``). Any other value (list, dict, bytes, datetime) has no
  text form: string leaves on it are False (``Exists`` is still True).
* Case-insensitive means both sides go through Python ``str.lower`` (full lowercasing: ``İ`` -> ``i̇``,
  final sigma ``Σ`` -> ``ς``); globs and ``StrMatch`` then compare the lowered texts.
* ``Wildcard``: ``*`` any run, ``?`` exactly one code point, both across newlines; ``\`` escapes the
  next character whatever it is; a lone trailing backslash is literal.
* ``Regex``: ``re.search`` with the flags; the text is not lowered (``i`` does case-insensitivity).
* ``Cidr``: ``ipaddress.ip_address(text)`` (no trimming; IPv6 scope ids allowed) of the network's version
  inside the network; an IPv4 address never matches an IPv6 network nor the reverse.
* ``Compare``: ints and floats (not bools) and strings of the form ``[-+]?[0-9]+(\.[0-9]+)?`` (no
  spaces, no exponent) become float64 and are compared in float64; NaN and anything else is False.
* ``TimestampPart``: ``datetime``/``date`` values, or text ``YYYY-MM-DD`` optionally followed by
  ``[T ]HH:MM[:SS[.fraction]][Z|±HH[:]MM]`` (ISO 8601, "2025-11-27 07:40:10.165", EVTX SystemTime
  "2025-11-27T07:40:10.165324Z"). Parts are read as written (an offset is not applied); a missing time
  reads as 00:00. Invalid dates/times are False. ``week`` is the ISO 8601 week number, ``day`` the day of
  the month. A timezone-aware ``datetime`` (an Arrow timestamp column with a time zone) is read in its
  own zone.
* ``Keyword``: ``match`` holds for at least one key of the row whose value is a ``str`` (for Arrow
  batches: a string-typed column with a non-null value), except the reserved reader columns
  ``__source`` and ``__event_index``.
* ``FieldRef``: both fields need a text form; the kind applies with ``other``'s text as the literal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache, singledispatch

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
    Node,
    Not,
    Or,
    Regex,
    StrMatch,
    TimestampPart,
    Wildcard,
)
from compiler.model import CompiledRule

Row = Mapping[str, object]


def evaluate(node: Node, row: Row) -> bool:
    """Whether ``node`` holds for the event ``row`` (missing key == null)."""
    return _eval(node, row)


def evaluate_rule(rule: CompiledRule, row: Row) -> bool:
    """Whether a compiled rule's whole predicate (routes included) holds for ``row``."""
    return _eval(rule.predicate, row)


def str_match(kind: str, text: str, literal: str) -> bool:
    """``text`` equals / contains / starts with / ends with ``literal``."""
    if kind == "equals":
        return text == literal
    if kind == "contains":
        return literal in text
    if kind == "startswith":
        return text.startswith(literal)
    if kind == "endswith":
        return text.endswith(literal)
    raise ValueError(f"unknown match kind {kind!r}")


@lru_cache(maxsize=4096)
def _glob(pattern: str, cased: bool) -> re.Pattern[str]:
    tokens = textform.fold_glob(textform.parse_glob(pattern), cased)
    return re.compile(textform.glob_to_python_regex(tokens), re.DOTALL)


@lru_cache(maxsize=4096)
def _regex(pattern: str, flags: str) -> re.Pattern[str]:
    return textform.python_regex(pattern, flags)


@lru_cache(maxsize=4096)
def _network(network: str) -> textform.IPNetwork:
    return textform.parse_network(network)


def _text(row: Row, field: str) -> str | None:
    return textform.text_of(row.get(field))


@singledispatch
def _eval(node: Node, row: Row) -> bool:
    raise TypeError(f"reference evaluator: not an IR node: {node!r}")


@_eval.register
def _(node: Const, row: Row) -> bool:
    return node.value


@_eval.register
def _(node: And, row: Row) -> bool:
    return all(_eval(child, row) for child in node.children)


@_eval.register
def _(node: Or, row: Row) -> bool:
    return any(_eval(child, row) for child in node.children)


@_eval.register
def _(node: Not, row: Row) -> bool:
    return not _eval(node.child, row)


@_eval.register
def _(node: StrMatch, row: Row) -> bool:
    text = _text(row, node.field)
    if text is None:
        return False
    return str_match(node.kind, textform.fold(text, node.cased), textform.fold(node.value, node.cased))


@_eval.register
def _(node: Wildcard, row: Row) -> bool:
    text = _text(row, node.field)
    return (
        text is not None
        and _glob(node.pattern, node.cased).match(textform.fold(text, node.cased)) is not None
    )


@_eval.register
def _(node: Regex, row: Row) -> bool:
    text = _text(row, node.field)
    return text is not None and _regex(node.pattern, node.flags).search(text) is not None


@_eval.register
def _(node: Cidr, row: Row) -> bool:
    text = _text(row, node.field)
    return text is not None and textform.in_network(text, _network(node.network))


@_eval.register
def _(node: Compare, row: Row) -> bool:
    number = textform.parse_number(row.get(node.field))
    return number is not None and textform.compare(number, node.op, float(node.value))


@_eval.register
def _(node: Exists, row: Row) -> bool:
    return row.get(node.field) is not None


@_eval.register
def _(node: IsNull, row: Row) -> bool:
    return row.get(node.field) is None


@_eval.register
def _(node: FieldRef, row: Row) -> bool:
    text, other = _text(row, node.field), _text(row, node.other)
    if text is None or other is None:
        return False
    return str_match(node.kind, textform.fold(text, node.cased), textform.fold(other, node.cased))


@_eval.register
def _(node: TimestampPart, row: Row) -> bool:
    stamp = textform.parse_timestamp(row.get(node.field))
    return stamp is not None and textform.timestamp_part(stamp, node.part) == node.value


@_eval.register
def _(node: Keyword, row: Row) -> bool:
    return any(
        isinstance(v, str) and k not in textform.RESERVED_COLUMNS and _eval(node.match, {KEYWORD_FIELD: v})
        for k, v in row.items()
    )
