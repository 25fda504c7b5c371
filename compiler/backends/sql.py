r"""IR -> SQL predicate text in the DataFusion dialect (``SELECT ... FROM t WHERE <predicate>``).

Identifiers are double-quoted (DataFusion lowercases unquoted names), string literals single-quoted
with ``''`` doubling (DataFusion does not treat backslashes in literals specially), every leaf is
wrapped in ``COALESCE(..., false)`` so NULL never leaks. Globs become ``LIKE ... ESCAPE '\\'``;
regexes use ``regexp_like`` (Rust ``regex`` after :func:`compiler.textform.portable_regex`).
"""

from __future__ import annotations

import math
from functools import singledispatch

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


def rule_to_sql(rule: CompiledRule, ctx: Context | None = None) -> str:
    """Translate a compiled rule's whole predicate to SQL text."""
    return translate_rule_with(translate, rule, ctx)


translate_rule = rule_to_sql


def to_display(expr: str) -> str:
    """Render the predicate for humans (``compile --to sql``)."""
    return expr


def quote_identifier(name: str) -> str:
    """Quote a column name for DataFusion SQL."""
    return '"' + name.replace('"', '""') + '"'


def quote_string(text: str) -> str:
    """Quote a string literal for DataFusion SQL."""
    if "\x00" in text:
        raise UnsupportedError("sql backend: a NUL character in a string literal")
    return "'" + text.replace("'", "''") + "'"


def _leaf(sql: str) -> str:
    return f"COALESCE({sql}, false)"


def _text(field: str, ctx: Context, construct: str) -> str | None:
    """Return the SQL text form of a column, or None when it is missing or has no text form."""
    kind = ctx.kind(field)
    if kind is None or kind in NO_TEXT:
        return None
    name = quote_identifier(field)
    if kind == "string":
        return name
    if kind in ("int", "bool", "categorical"):
        return f"CAST({name} AS VARCHAR)"
    if kind == "float":
        integral = f"(floor({name}) = {name} AND abs({name}) < 9.223372036854776e18 AND NOT isnan({name}))"
        return (
            f"CASE WHEN {integral} THEN CAST(CAST({name} AS BIGINT) AS VARCHAR) "
            f"ELSE CAST({name} AS VARCHAR) END"
        )
    raise unsupported_column(field, construct)


def _as_string(field: str, kind: str) -> str:
    """Return a string-kind column as a string expression (categoricals are cast)."""
    name = quote_identifier(field)
    return name if kind == "string" else f"CAST({name} AS VARCHAR)"


def _fold(sql: str, cased: bool) -> str:
    return sql if cased else f"lower({sql})"


def _str_match(kind: str, text: str, literal: str) -> str:
    if kind == "equals":
        return f"{text} = {literal}"
    if kind == "contains":
        return f"strpos({text}, {literal}) > 0"
    if kind == "startswith":
        return f"starts_with({text}, {literal})"
    return f"ends_with({text}, {literal})"


def _regex(text: str, pattern: str) -> str:
    return _leaf(f"regexp_like({text}, {quote_string(pattern)})")


def _join(op: str, parts: list[str], empty: str) -> str:
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else "(" + f" {op} ".join(parts) + ")"


@singledispatch
def translate(node: Node, ctx: Context = _DEFAULT) -> str:
    """Translate an IR node to a SQL boolean expression that is never NULL."""
    raise UnsupportedError(f"sql backend: unsupported construct {type(node).__name__}")


@translate.register
def _(node: Const, ctx: Context = _DEFAULT) -> str:
    return "true" if node.value else "false"


@translate.register
def _(node: And, ctx: Context = _DEFAULT) -> str:
    return _join("AND", [translate(c, ctx) for c in node.children], "true")


@translate.register
def _(node: Or, ctx: Context = _DEFAULT) -> str:
    return _join("OR", [translate(c, ctx) for c in node.children], "false")


@translate.register
def _(node: Not, ctx: Context = _DEFAULT) -> str:
    return f"(NOT {translate(node.child, ctx)})"


@translate.register
def _(node: StrMatch, ctx: Context = _DEFAULT) -> str:
    text = _text(node.field, ctx, "StrMatch")
    if text is None:
        return "false"
    literal = quote_string(textform.fold(node.value, node.cased))
    return _leaf(_str_match(node.kind, _fold(text, node.cased), literal))


@translate.register
def _(node: Wildcard, ctx: Context = _DEFAULT) -> str:
    text = _text(node.field, ctx, "Wildcard")
    if text is None:
        return "false"
    tokens = textform.fold_glob(textform.parse_glob(node.pattern), node.cased)
    like = quote_string(textform.glob_to_like(tokens, "\\"))
    return _leaf(f"{_fold(text, node.cased)} LIKE {like} ESCAPE '\\'")


@translate.register
def _(node: Regex, ctx: Context = _DEFAULT) -> str:
    text = _text(node.field, ctx, "Regex")
    pattern = textform.portable_regex(node.pattern, node.flags, "rust")
    return "false" if text is None else _regex(text, pattern)


@translate.register
def _(node: Cidr, ctx: Context = _DEFAULT) -> str:
    text = _text(node.field, ctx, "Cidr")
    pattern = textform.cidr_regex(node.network)
    return "false" if text is None else _regex(text, pattern)


_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


@translate.register
def _(node: Compare, ctx: Context = _DEFAULT) -> str:
    kind = ctx.kind(node.field)
    name = quote_identifier(node.field)
    if kind in TEXT_KINDS:
        name = _as_string(node.field, kind)
        guard = f"regexp_like({name}, {quote_string(textform.NUMBER_REGEX)})"
        number = f"CASE WHEN {guard} THEN TRY_CAST({name} AS DOUBLE) END"
    elif kind in ("int", "float"):
        number = f"CASE WHEN NOT isnan(CAST({name} AS DOUBLE)) THEN CAST({name} AS DOUBLE) END"
    elif kind is None or kind in NOT_NUMERIC:
        return "false"
    else:
        raise unsupported_column(node.field, "Compare")
    value = float(node.value)
    if not math.isfinite(value):
        raise UnsupportedError(f"sql backend: comparison with {value!r}")
    return _leaf(f"({number}) {_OPS[node.op]} {value!r}")


@translate.register
def _(node: Exists, ctx: Context = _DEFAULT) -> str:
    return "false" if ctx.kind(node.field) is None else f"({quote_identifier(node.field)} IS NOT NULL)"


@translate.register
def _(node: IsNull, ctx: Context = _DEFAULT) -> str:
    return "true" if ctx.kind(node.field) is None else f"({quote_identifier(node.field)} IS NULL)"


@translate.register
def _(node: FieldRef, ctx: Context = _DEFAULT) -> str:
    text, other = _text(node.field, ctx, "FieldRef"), _text(node.other, ctx, "FieldRef")
    if text is None or other is None:
        return "false"
    return _leaf(_str_match(node.kind, _fold(text, node.cased), _fold(other, node.cased)))


@translate.register
def _(node: TimestampPart, ctx: Context = _DEFAULT) -> str:
    kind = ctx.kind(node.field)
    name = quote_identifier(node.field)
    if kind in ("timestamp", "date"):
        return _leaf(f"CAST(date_part('{node.part}', {name}) AS BIGINT) = {node.value}")
    if kind not in TEXT_KINDS:
        return "false"
    name = _as_string(node.field, kind)
    guard = f"regexp_like({name}, {quote_string(textform.TIMESTAMP_REGEX)})"
    safe = f"(CASE WHEN {guard} THEN {name} ELSE '2000-01-01' END)"
    date = f"TRY_CAST(substr({safe}, 1, 10) AS DATE)"
    has_time = f"character_length({safe}) > 10"

    def number(start: int, present: str) -> str:
        return f"(CASE WHEN {present} THEN TRY_CAST(substr({safe}, {start}, 2) AS BIGINT) ELSE 0 END)"

    hour, minute = number(12, has_time), number(15, has_time)
    second = number(18, f"{has_time} AND substr({safe}, 17, 1) = ':'")
    valid = (
        f"{guard} AND {date} IS NOT NULL AND {hour} < 24 AND {minute} < 60 AND {second} < 60 "
        f"AND date_part('year', {date}) > 0"
    )
    part = {"hour": hour, "minute": minute}.get(
        node.part
    ) or f"CAST(date_part('{node.part}', {date}) AS BIGINT)"
    return _leaf(f"({valid} AND {part} = {node.value})")


@translate.register
def _(node: Keyword, ctx: Context = _DEFAULT) -> str:
    branches = [
        translate(rename_fields(node.match, {KEYWORD_FIELD: name}), ctx) for name in ctx.keyword_targets()
    ]
    return _join("OR", branches, "false")
