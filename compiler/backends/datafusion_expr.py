"""IR -> ``datafusion.Expr`` (``DataFrame.filter`` / ``select``), null-free booleans.

Columns are referenced quoted, so mixed-case field names survive DataFusion's identifier
normalisation. Lowercasing is ``lower()`` (Rust ``to_lowercase``, same as Python ``str.lower``);
regexes run on the Rust ``regex`` crate after :func:`compiler.textform.portable_regex`.
"""

from __future__ import annotations

import operator
from functools import reduce, singledispatch

import pyarrow as pa
from datafusion import Expr, col, lit
from datafusion import functions as F

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


def translate_rule(rule: CompiledRule, ctx: Context | None = None) -> Expr:
    """Translate a compiled rule's whole predicate."""
    return translate_rule_with(translate, rule, ctx)


def to_display(expr: Expr) -> str:
    """Render an expression for humans (``compile --to datafusion``)."""
    return str(expr.canonical_name())


def column(name: str) -> Expr:
    """Refer to column ``name`` exactly (quoted: no lowercasing, dots are part of the name)."""
    return col('"' + name.replace('"', '""') + '"')


def _leaf(expr: Expr) -> Expr:
    return F.coalesce(expr, lit(False))


def _text(field: str, ctx: Context, construct: str) -> Expr | None:
    """Return the text form of a column, or None when it is missing or has no text form."""
    kind = ctx.kind(field)
    if kind is None or kind in NO_TEXT:
        return None
    value = column(field)
    if kind == "string":
        return value
    if kind in ("int", "bool", "categorical"):
        return value.cast(pa.string())
    if kind == "float":
        integral = (F.floor(value) == value) & (F.abs(value) < lit(2.0**63)) & ~F.isnan(value)
        as_int = F.when(integral, value).otherwise(lit(0.0)).cast(pa.int64()).cast(pa.string())
        return F.when(integral, as_int).otherwise(value.cast(pa.string()))
    raise unsupported_column(field, construct)


def _as_string(field: str, kind: str) -> Expr:
    """Return a string-kind column as a string expression (categoricals are cast)."""
    value = column(field)
    return value if kind == "string" else value.cast(pa.string())


def _fold(expr: Expr, cased: bool) -> Expr:
    return expr if cased else F.lower(expr)


def _str_match(kind: str, text: Expr, literal: Expr) -> Expr:
    if kind == "equals":
        return text == literal
    if kind == "contains":
        return F.strpos(text, literal) > lit(0)
    if kind == "startswith":
        return F.starts_with(text, literal)
    return F.ends_with(text, literal)


def _regex(text: Expr, pattern: str) -> Expr:
    return _leaf(F.regexp_like(text, lit(pattern)))


@singledispatch
def translate(node: Node, ctx: Context = _DEFAULT) -> Expr:
    """Translate an IR node to a null-free boolean ``datafusion.Expr``."""
    raise UnsupportedError(f"datafusion backend: unsupported construct {type(node).__name__}")


@translate.register
def _(node: Const, ctx: Context = _DEFAULT) -> Expr:
    return lit(node.value)


@translate.register
def _(node: And, ctx: Context = _DEFAULT) -> Expr:
    parts = [translate(c, ctx) for c in node.children]
    return reduce(operator.and_, parts) if parts else lit(True)


@translate.register
def _(node: Or, ctx: Context = _DEFAULT) -> Expr:
    parts = [translate(c, ctx) for c in node.children]
    return reduce(operator.or_, parts) if parts else lit(False)


@translate.register
def _(node: Not, ctx: Context = _DEFAULT) -> Expr:
    return ~translate(node.child, ctx)


@translate.register
def _(node: StrMatch, ctx: Context = _DEFAULT) -> Expr:
    text = _text(node.field, ctx, "StrMatch")
    if text is None:
        return lit(False)
    literal = lit(textform.fold(node.value, node.cased))
    return _leaf(_str_match(node.kind, _fold(text, node.cased), literal))


@translate.register
def _(node: Wildcard, ctx: Context = _DEFAULT) -> Expr:
    text = _text(node.field, ctx, "Wildcard")
    if text is None:
        return lit(False)
    tokens = textform.fold_glob(textform.parse_glob(node.pattern), node.cased)
    simple = textform.glob_as_strmatch(tokens)
    if simple is not None:
        return _leaf(_str_match(simple[0], _fold(text, node.cased), lit(simple[1])))
    return _regex(_fold(text, node.cased), textform.glob_to_regex(tokens))


@translate.register
def _(node: Regex, ctx: Context = _DEFAULT) -> Expr:
    text = _text(node.field, ctx, "Regex")
    pattern = textform.portable_regex(node.pattern, node.flags, "rust")
    return lit(False) if text is None else _regex(text, pattern)


@translate.register
def _(node: Cidr, ctx: Context = _DEFAULT) -> Expr:
    text = _text(node.field, ctx, "Cidr")
    pattern = textform.cidr_regex(node.network)
    return lit(False) if text is None else _regex(text, pattern)


@translate.register
def _(node: Compare, ctx: Context = _DEFAULT) -> Expr:
    kind = ctx.kind(node.field)
    value = column(node.field)
    if kind in TEXT_KINDS:
        value = _as_string(node.field, kind)
        guard = F.regexp_like(value, lit(textform.NUMBER_REGEX))
        number = F.when(guard, value.try_cast(pa.float64())).end()
    elif kind in ("int", "float"):
        as_float = value.cast(pa.float64())
        # arrow-rs orders NaN above every number: exclude it explicitly
        number = F.when(~F.isnan(as_float), as_float).end()
    elif kind is None or kind in NOT_NUMERIC:
        return lit(False)
    else:
        raise unsupported_column(node.field, "Compare")
    op = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}[node.op]
    return _leaf(op(number, lit(float(node.value))))


@translate.register
def _(node: Exists, ctx: Context = _DEFAULT) -> Expr:
    return lit(False) if ctx.kind(node.field) is None else column(node.field).is_not_null()


@translate.register
def _(node: IsNull, ctx: Context = _DEFAULT) -> Expr:
    return lit(True) if ctx.kind(node.field) is None else column(node.field).is_null()


@translate.register
def _(node: FieldRef, ctx: Context = _DEFAULT) -> Expr:
    text, other = _text(node.field, ctx, "FieldRef"), _text(node.other, ctx, "FieldRef")
    if text is None or other is None:
        return lit(False)
    return _leaf(_str_match(node.kind, _fold(text, node.cased), _fold(other, node.cased)))


def _part(stamp: Expr, part: str) -> Expr:
    return F.date_part(part, stamp).cast(pa.int64())


@translate.register
def _(node: TimestampPart, ctx: Context = _DEFAULT) -> Expr:
    kind = ctx.kind(node.field)
    value = column(node.field)
    if kind in ("timestamp", "date"):
        return _leaf(_part(value, node.part) == lit(node.value))
    if kind not in TEXT_KINDS:
        return lit(False)
    value = _as_string(node.field, kind)
    guard = F.regexp_like(value, lit(textform.TIMESTAMP_REGEX))
    safe = F.when(guard, value).otherwise(lit("2000-01-01"))
    date = F.substring(safe, lit(1), lit(10)).try_cast(pa.date32())
    has_time = F.character_length(safe) > lit(10)

    def number(start: int, length: int, present: Expr) -> Expr:
        digits = F.substring(safe, lit(start), lit(length)).try_cast(pa.int64())
        return F.when(present, digits).otherwise(lit(0))

    hour, minute = number(12, 2, has_time), number(15, 2, has_time)
    second = number(18, 2, has_time & (F.substring(safe, lit(17), lit(1)) == lit(":")))
    valid = guard & date.is_not_null() & (hour < lit(24)) & (minute < lit(60)) & (second < lit(60))
    valid = valid & (_part(date, "year") > lit(0))
    part = {"hour": hour, "minute": minute}.get(node.part)
    if part is None:
        part = _part(date, node.part)
    return _leaf(valid & (part == lit(node.value)))


@translate.register
def _(node: Keyword, ctx: Context = _DEFAULT) -> Expr:
    branches = [
        translate(rename_fields(node.match, {KEYWORD_FIELD: name}), ctx) for name in ctx.keyword_targets()
    ]
    return reduce(operator.or_, branches) if branches else lit(False)
