r"""IR -> ``pyarrow.compute.Expression`` (a dataset filter, or ``Table.filter``), null-free booleans.

Case-insensitive leaves lower the column with ``utf8_lower`` (Unicode simple lowercasing) after
rewriting the two things Python's ``str.lower`` does differently: ``İ`` becomes ``i̇`` and, when the
literal contains a sigma, a final capital sigma becomes ``ς``. Regexes go through RE2: ``\\b``/``\\B``
and anything else RE2 cannot express exactly raise UnsupportedError; so does FieldRef other than
``equals`` (Arrow has no substring kernel taking the pattern from a column).
"""

from __future__ import annotations

import operator
from functools import reduce, singledispatch
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from compiler import textform
from compiler.backends.context import (
    NO_TEXT,
    NOT_NUMERIC,
    TEXT_KINDS,
    Context,
    translate_rule_with,
    unsupported_column,
)
from compiler.errors import UnsupportedError
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
    rename_fields,
)
from compiler.model import CompiledRule

Expression = Any  # pc.Expression (pyarrow ships no type hints)
_DEFAULT = Context()
_TRUE = pc.scalar(True)
_FALSE = pc.scalar(False)


def translate_rule(rule: CompiledRule, ctx: Context | None = None) -> Expression:
    """Translate a compiled rule's whole predicate."""
    return translate_rule_with(translate, rule, ctx)


def to_display(expr: Expression) -> str:
    """Render an expression for humans (``compile --to pyarrow``)."""
    return str(expr)


def _and(left: Expression, right: Expression) -> Expression:
    return left & right


def _leaf(expr: Expression) -> Expression:
    return pc.coalesce(expr, _FALSE)


def _text(field: str, ctx: Context, construct: str) -> Expression | None:
    """Return the text form of a column, or None when it is missing or has no text form."""
    kind = ctx.kind(field)
    if kind is None or kind in NO_TEXT:
        return None
    column = pc.field(field)
    if kind == "string":
        return column
    if kind in ("int", "bool", "categorical"):
        return column.cast(pa.string())
    if kind == "float":
        integral = _and(
            pc.is_finite(column),
            _and(pc.equal(pc.floor(column), column), pc.less(pc.abs(column), 2.0**63)),
        )
        as_int = pc.if_else(integral, column, 0.0).cast(pa.int64()).cast(pa.string())
        return pc.if_else(integral, as_int, column.cast(pa.string()))
    raise unsupported_column(field, construct)


def _as_string(field: str, kind: str) -> Expression:
    """Return a string-kind column as a string expression (categoricals are cast)."""
    column = pc.field(field)
    return column if kind == "string" else column.cast(pa.string())


def _fold(expr: Expression, cased: bool, sigma: bool = True) -> Expression:
    """Lowercase like Python ``str.lower`` (``utf8_lower`` alone is the simple mapping).

    ``İ`` is spelled ``i̇`` first and, when the comparison can depend on it, final capital sigmas ``ς``.
    """
    if cased:
        return expr
    expr = pc.replace_substring(expr, pattern="\u0130", replacement="i\u0307")
    if sigma:
        pattern, replacement = textform.final_sigma_rewrite()
        expr = pc.replace_substring_regex(expr, pattern=pattern, replacement=replacement)
    return pc.utf8_lower(expr)


def _str_match(kind: str, text: Expression, literal: str) -> Expression:
    if kind == "equals":
        return pc.equal(text, literal)
    if kind == "contains":
        return pc.match_substring(text, literal)
    if kind == "startswith":
        return pc.starts_with(text, literal)
    return pc.ends_with(text, literal)


def _regex(text: Expression, pattern: str) -> Expression:
    return _leaf(pc.match_substring_regex(text, pattern))


@singledispatch
def translate(node: Node, ctx: Context = _DEFAULT) -> Expression:
    """Translate an IR node to a null-free boolean ``pc.Expression``."""
    raise UnsupportedError(f"pyarrow backend: unsupported construct {type(node).__name__}")


@translate.register
def _(node: Const, ctx: Context = _DEFAULT) -> Expression:
    return _TRUE if node.value else _FALSE


@translate.register
def _(node: And, ctx: Context = _DEFAULT) -> Expression:
    parts = [translate(c, ctx) for c in node.children]
    return reduce(operator.and_, parts) if parts else _TRUE


@translate.register
def _(node: Or, ctx: Context = _DEFAULT) -> Expression:
    parts = [translate(c, ctx) for c in node.children]
    return reduce(operator.or_, parts) if parts else _FALSE


@translate.register
def _(node: Not, ctx: Context = _DEFAULT) -> Expression:
    return ~translate(node.child, ctx)


@translate.register
def _(node: StrMatch, ctx: Context = _DEFAULT) -> Expression:
    text = _text(node.field, ctx, "StrMatch")
    if text is None:
        return _FALSE
    literal = textform.fold(node.value, node.cased)
    folded = _fold(text, node.cased, textform.needs_sigma_rewrite(literal))
    return _leaf(_str_match(node.kind, folded, literal))


@translate.register
def _(node: Wildcard, ctx: Context = _DEFAULT) -> Expression:
    text = _text(node.field, ctx, "Wildcard")
    if text is None:
        return _FALSE
    tokens = textform.fold_glob(textform.parse_glob(node.pattern), node.cased)
    sigma = any(isinstance(t, str) and textform.needs_sigma_rewrite(t) for t in tokens)
    folded = _fold(text, node.cased, sigma)
    simple = textform.glob_as_strmatch(tokens)
    if simple is not None:
        return _leaf(_str_match(simple[0], folded, simple[1]))
    return _regex(folded, textform.glob_to_regex(tokens))


@translate.register
def _(node: Regex, ctx: Context = _DEFAULT) -> Expression:
    text = _text(node.field, ctx, "Regex")
    pattern = textform.portable_regex(node.pattern, node.flags, "re2")
    return _FALSE if text is None else _regex(text, pattern)


@translate.register
def _(node: Cidr, ctx: Context = _DEFAULT) -> Expression:
    text = _text(node.field, ctx, "Cidr")
    pattern = textform.cidr_regex(node.network)
    return _FALSE if text is None else _regex(text, pattern)


@translate.register
def _(node: Compare, ctx: Context = _DEFAULT) -> Expression:
    kind = ctx.kind(node.field)
    column = pc.field(node.field)
    if kind in TEXT_KINDS:
        column = _as_string(node.field, kind)
        guard = pc.match_substring_regex(column, textform.NUMBER_REGEX)
        number = pc.if_else(guard, column, "0").cast(pa.float64())
        number = pc.if_else(guard, number, pa.scalar(None, pa.float64()))
    elif kind in ("int", "float"):
        number = column.cast(pa.float64())
    elif kind is None or kind in NOT_NUMERIC:
        return _FALSE
    else:
        raise unsupported_column(node.field, "Compare")
    op = {"lt": pc.less, "lte": pc.less_equal, "gt": pc.greater, "gte": pc.greater_equal}[node.op]
    return _leaf(op(number, float(node.value)))


@translate.register
def _(node: Exists, ctx: Context = _DEFAULT) -> Expression:
    return _FALSE if ctx.kind(node.field) is None else pc.is_valid(pc.field(node.field))


@translate.register
def _(node: IsNull, ctx: Context = _DEFAULT) -> Expression:
    return _TRUE if ctx.kind(node.field) is None else pc.is_null(pc.field(node.field))


@translate.register
def _(node: FieldRef, ctx: Context = _DEFAULT) -> Expression:
    text, other = _text(node.field, ctx, "FieldRef"), _text(node.other, ctx, "FieldRef")
    if text is None or other is None:
        return _FALSE
    text, other = _fold(text, node.cased), _fold(other, node.cased)
    if node.kind == "equals":
        return _leaf(pc.equal(text, other))
    # Arrow has no kernel taking the substring from another column: fail closed.
    raise UnsupportedError(f"pyarrow backend: field reference kind {node.kind!r}")


@translate.register
def _(node: TimestampPart, ctx: Context = _DEFAULT) -> Expression:
    kind = ctx.kind(node.field)
    column = pc.field(node.field)
    if kind in ("timestamp", "date"):
        if node.part in ("hour", "minute") and kind == "date":  # a date reads as midnight
            return _and(pc.is_valid(column), pc.scalar(node.value == 0))
        return _leaf(pc.equal(_part(column, node.part), node.value))
    if kind not in TEXT_KINDS:
        return _FALSE
    column = _as_string(node.field, kind)
    guard = pc.match_substring_regex(column, textform.TIMESTAMP_REGEX)
    safe = pc.if_else(guard, column, "2000-01-01")
    date = pc.strptime(pc.utf8_slice_codeunits(safe, 0, 10), format="%Y-%m-%d", unit="s", error_is_null=True)
    day = pc.utf8_slice_codeunits(safe, 8, 10).cast(pa.int64())
    time_part = pc.utf8_slice_codeunits(safe, 10, 2**31 - 1)
    has_time = pc.greater(pc.utf8_length(time_part), 0)
    hour = pc.if_else(has_time, pc.utf8_slice_codeunits(safe, 11, 13), "0").cast(pa.int64())
    minute = pc.if_else(has_time, pc.utf8_slice_codeunits(safe, 14, 16), "0").cast(pa.int64())
    has_second = _and(has_time, pc.equal(pc.utf8_slice_codeunits(safe, 16, 17), ":"))
    second = pc.if_else(has_second, pc.utf8_slice_codeunits(safe, 17, 19), "0").cast(pa.int64())
    valid = _and(
        _and(guard, pc.equal(pc.day(date), day)),  # strptime rolls Feb 30 over to March
        _and(
            _and(pc.less(hour, 24), pc.less(minute, 60)),
            _and(pc.less(second, 60), pc.greater(pc.year(date), 0)),
        ),
    )
    if node.part == "hour":
        value = hour
    elif node.part == "minute":
        value = minute
    else:
        value = _part(date, node.part)
    return _leaf(_and(valid, pc.equal(value, node.value)))


def _part(stamp: Expression, part: str) -> Expression:
    functions = {
        "minute": pc.minute,
        "hour": pc.hour,
        "day": pc.day,
        "week": pc.iso_week,
        "month": pc.month,
        "year": pc.year,
    }
    return functions[part](stamp)


@translate.register
def _(node: Keyword, ctx: Context = _DEFAULT) -> Expression:
    branches = [
        translate(rename_fields(node.match, {KEYWORD_FIELD: name}), ctx) for name in ctx.keyword_targets()
    ]
    return reduce(operator.or_, branches) if branches else _FALSE
