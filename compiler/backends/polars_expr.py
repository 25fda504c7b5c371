"""IR -> ``polars.Expr`` (use in ``DataFrame.filter`` / ``select``), null-free booleans.

Lowercasing is ``str.to_lowercase`` (Rust ``to_lowercase``: the same as Python ``str.lower`` for every
character Python's Unicode database knows). Regexes use the Rust ``regex`` crate after
:func:`compiler.textform.portable_regex`; constructs it cannot express exactly raise UnsupportedError.
"""

from __future__ import annotations

import operator
from functools import reduce, singledispatch

import polars as pl

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

_DEFAULT = Context()


def _const(value: bool) -> pl.Expr:
    # one value per row (not a scalar literal), so a constant predicate also works in ``select``
    return pl.repeat(value, pl.len())


def _true() -> pl.Expr:
    return _const(True)


def _false() -> pl.Expr:
    return _const(False)


def translate_rule(rule: CompiledRule, ctx: Context | None = None) -> pl.Expr:
    """Translate a compiled rule's whole predicate."""
    return translate_rule_with(translate, rule, ctx)


def to_display(expr: pl.Expr) -> str:
    """Render an expression for humans (``compile --to polars``)."""
    return str(expr)


def _leaf(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null(False)


def _text(field: str, ctx: Context, construct: str) -> pl.Expr | None:
    """Return the text form of a column, or None when it is missing or has no text form."""
    kind = ctx.kind(field)
    if kind is None or kind in NO_TEXT:
        return None
    column = pl.col(field)
    if kind == "string":
        return column
    if kind in ("int", "bool", "categorical"):
        return column.cast(pl.String)
    if kind == "float":
        integral = column.is_finite() & (column.floor() == column) & (column.abs() < 2.0**63)
        as_int = pl.when(integral).then(column).otherwise(0.0).cast(pl.Int64).cast(pl.String)
        return pl.when(integral).then(as_int).otherwise(column.cast(pl.String))
    raise unsupported_column(field, construct)


def _as_string(field: str, kind: str) -> pl.Expr:
    """Return a string-kind column as a string expression (categoricals are cast)."""
    column = pl.col(field)
    return column if kind == "string" else column.cast(pl.String)


def _fold(expr: pl.Expr, cased: bool) -> pl.Expr:
    return expr if cased else expr.str.to_lowercase()


def _str_match(kind: str, text: pl.Expr, literal: str | pl.Expr) -> pl.Expr:
    if kind == "equals":
        return text == literal
    if kind == "contains":
        return text.str.contains(literal, literal=True)
    if kind == "startswith":
        return text.str.starts_with(literal)
    return text.str.ends_with(literal)


@singledispatch
def translate(node: Node, ctx: Context = _DEFAULT) -> pl.Expr:
    """Translate an IR node to a null-free boolean ``pl.Expr``."""
    raise UnsupportedError(f"polars backend: unsupported construct {type(node).__name__}")


@translate.register
def _(node: Const, ctx: Context = _DEFAULT) -> pl.Expr:
    return _const(node.value)


@translate.register
def _(node: And, ctx: Context = _DEFAULT) -> pl.Expr:
    parts = [translate(c, ctx) for c in node.children]
    return reduce(operator.and_, parts) if parts else _true()


@translate.register
def _(node: Or, ctx: Context = _DEFAULT) -> pl.Expr:
    parts = [translate(c, ctx) for c in node.children]
    return reduce(operator.or_, parts) if parts else _false()


@translate.register
def _(node: Not, ctx: Context = _DEFAULT) -> pl.Expr:
    return ~translate(node.child, ctx)


@translate.register
def _(node: StrMatch, ctx: Context = _DEFAULT) -> pl.Expr:
    text = _text(node.field, ctx, "StrMatch")
    if text is None:
        return _false()
    return _leaf(_str_match(node.kind, _fold(text, node.cased), textform.fold(node.value, node.cased)))


@translate.register
def _(node: Wildcard, ctx: Context = _DEFAULT) -> pl.Expr:
    text = _text(node.field, ctx, "Wildcard")
    if text is None:
        return _false()
    tokens = textform.fold_glob(textform.parse_glob(node.pattern), node.cased)
    simple = textform.glob_as_strmatch(tokens)
    if simple is not None:
        return _leaf(_str_match(simple[0], _fold(text, node.cased), simple[1]))
    return _leaf(_fold(text, node.cased).str.contains(textform.glob_to_regex(tokens)))


@translate.register
def _(node: Regex, ctx: Context = _DEFAULT) -> pl.Expr:
    text = _text(node.field, ctx, "Regex")
    pattern = textform.portable_regex(node.pattern, node.flags, "rust")
    return _false() if text is None else _leaf(text.str.contains(pattern))


@translate.register
def _(node: Cidr, ctx: Context = _DEFAULT) -> pl.Expr:
    text = _text(node.field, ctx, "Cidr")
    pattern = textform.cidr_regex(node.network)
    return _false() if text is None else _leaf(text.str.contains(pattern))


@translate.register
def _(node: Compare, ctx: Context = _DEFAULT) -> pl.Expr:
    kind = ctx.kind(node.field)
    column = pl.col(node.field)
    if kind in TEXT_KINDS:
        column = _as_string(node.field, kind)
        number = (
            pl.when(column.str.contains(textform.NUMBER_REGEX))
            .then(column.cast(pl.Float64, strict=False))
            .otherwise(None)
        )
    elif kind in ("int", "float"):
        number = pl.when(column.cast(pl.Float64).is_nan()).then(None).otherwise(column.cast(pl.Float64))
    elif kind is None or kind in NOT_NUMERIC:
        return _false()
    else:
        raise unsupported_column(node.field, "Compare")
    value = float(node.value)
    compared = {
        "lt": number < value,
        "lte": number <= value,
        "gt": number > value,
        "gte": number >= value,
    }[node.op]
    return _leaf(compared)


@translate.register
def _(node: Exists, ctx: Context = _DEFAULT) -> pl.Expr:
    return _false() if ctx.kind(node.field) is None else pl.col(node.field).is_not_null()


@translate.register
def _(node: IsNull, ctx: Context = _DEFAULT) -> pl.Expr:
    return _true() if ctx.kind(node.field) is None else pl.col(node.field).is_null()


@translate.register
def _(node: FieldRef, ctx: Context = _DEFAULT) -> pl.Expr:
    text, other = _text(node.field, ctx, "FieldRef"), _text(node.other, ctx, "FieldRef")
    if text is None or other is None:
        return _false()
    text, other = _fold(text, node.cased), _fold(other, node.cased)
    # a null "other" must give False, not the null-propagating "pattern is null" behaviour
    return _leaf(pl.when(other.is_null()).then(False).otherwise(_str_match(node.kind, text, other)))


_PARTS = {
    "minute": lambda e: e.dt.minute(),
    "hour": lambda e: e.dt.hour(),
    "day": lambda e: e.dt.day(),
    "week": lambda e: e.dt.week(),
    "month": lambda e: e.dt.month(),
    "year": lambda e: e.dt.year(),
}


@translate.register
def _(node: TimestampPart, ctx: Context = _DEFAULT) -> pl.Expr:
    kind = ctx.kind(node.field)
    column = pl.col(node.field)
    if kind in ("timestamp", "date"):
        if kind == "date" and node.part in ("hour", "minute"):
            return _leaf(column.is_not_null() & _const(node.value == 0))
        return _leaf(_PARTS[node.part](column) == node.value)
    if kind not in TEXT_KINDS:
        return _false()
    column = _as_string(node.field, kind)
    guard = column.str.contains(textform.TIMESTAMP_REGEX)
    safe = pl.when(guard).then(column).otherwise(pl.lit("2000-01-01"))
    date = safe.str.slice(0, 10).str.strptime(pl.Date, "%Y-%m-%d", strict=False)
    has_time = safe.str.len_chars() > 10
    hour = pl.when(has_time).then(safe.str.slice(11, 2).cast(pl.Int64, strict=False)).otherwise(0)
    minute = pl.when(has_time).then(safe.str.slice(14, 2).cast(pl.Int64, strict=False)).otherwise(0)
    has_second = has_time & (safe.str.slice(16, 1) == ":")
    second = pl.when(has_second).then(safe.str.slice(17, 2).cast(pl.Int64, strict=False)).otherwise(0)
    valid = guard & date.is_not_null() & (hour < 24) & (minute < 60) & (second < 60) & (date.dt.year() > 0)
    if node.part == "hour":
        value = hour
    elif node.part == "minute":
        value = minute
    else:
        value = _PARTS[node.part](date)
    return _leaf(valid & (value == node.value))


@translate.register
def _(node: Keyword, ctx: Context = _DEFAULT) -> pl.Expr:
    branches = [
        translate(rename_fields(node.match, {KEYWORD_FIELD: name}), ctx) for name in ctx.keyword_targets()
    ]
    return reduce(operator.or_, branches) if branches else _false()
