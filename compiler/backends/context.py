"""What a backend knows about the table it translates for: column names and their kinds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from compiler.errors import UnsupportedError
from compiler.ir import Node
from compiler.model import CompiledRule
from compiler.textform import RESERVED_COLUMNS

#: How a backend treats a column: its text form, numeric value and timestamp parts depend on it.
#: ``other`` (lists, structs, binary, dictionaries...) only supports Exists / IsNull.
ColumnKind = Literal["string", "categorical", "int", "float", "bool", "timestamp", "date", "null", "other"]

#: Kinds holding strings (``categorical``: dictionary-encoded / Categorical, cast to string first).
TEXT_KINDS: tuple[ColumnKind, ...] = ("string", "categorical")
#: Kinds without a text form: string leaves on them are False (``null``: a column of only nulls).
NO_TEXT: tuple[ColumnKind, ...] = ("timestamp", "date", "null")
#: Kinds that are never a number for ``Compare``.
NOT_NUMERIC: tuple[ColumnKind, ...] = ("bool", "timestamp", "date", "null")


@dataclass(frozen=True)
class Context:
    """Translation context: the table's columns and kinds (``None``: every field is a string column).

    A field that is not a column is missing: its leaves are False (IsNull True). Keywords search
    ``keyword_columns`` (default: every string column), so they need a known schema.
    """

    columns: Mapping[str, ColumnKind] | None = None
    keyword_columns: tuple[str, ...] | None = None

    def kind(self, field: str) -> ColumnKind | None:
        """Return the kind of column ``field``, or None when the table has no such column."""
        if self.columns is None:
            return "string"
        return self.columns.get(field)

    def keyword_targets(self) -> tuple[str, ...]:
        """Return the columns a Keyword searches (raises when the schema is unknown)."""
        if self.keyword_columns is not None:
            return self.keyword_columns
        if self.columns is None:
            raise UnsupportedError("keyword search needs the table's string columns (no schema given)")
        return tuple(n for n, k in self.columns.items() if k in TEXT_KINDS and n not in RESERVED_COLUMNS)

    @classmethod
    def from_kinds(cls, columns: Mapping[str, ColumnKind]) -> Context:
        """Build a context from explicit column kinds."""
        return cls(dict(columns))

    @classmethod
    def from_arrow(cls, schema: Any) -> Context:
        """Build a context from a ``pyarrow.Schema`` (or anything with ``.names`` and ``.types``)."""
        import pyarrow as pa

        def kind(t: Any) -> ColumnKind:
            if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
                return "string"
            if pa.types.is_integer(t):
                return "int"
            if pa.types.is_floating(t):
                return "float"
            if pa.types.is_boolean(t):
                return "bool"
            if pa.types.is_timestamp(t):
                return "timestamp"
            if pa.types.is_date(t):
                return "date"
            if pa.types.is_null(t):
                return "null"
            if pa.types.is_dictionary(t) and kind(t.value_type) == "string":
                return "categorical"
            return "other"

        return cls({name: kind(t) for name, t in zip(schema.names, schema.types, strict=True)})

    @classmethod
    def from_polars(cls, schema: Mapping[str, Any]) -> Context:
        """Build a context from a ``polars.Schema`` (name -> dtype)."""
        import polars as pl

        def kind(t: Any) -> ColumnKind:
            if t == pl.String:
                return "string"
            if t.is_integer():
                return "int"
            if t.is_float():
                return "float"
            if t == pl.Boolean:
                return "bool"
            if isinstance(t, pl.Datetime):
                return "timestamp"
            if t == pl.Date:
                return "date"
            if t == pl.Null:
                return "null"
            if isinstance(t, pl.Categorical | pl.Enum):
                return "categorical"
            return "other"

        return cls({name: kind(t) for name, t in schema.items()})

    @classmethod
    def strings(cls, names: Iterable[str]) -> Context:
        """Build a context where ``names`` are the table's (string) columns."""
        return cls(dict.fromkeys(names, "string"))


def unsupported_column(field: str, construct: str) -> UnsupportedError:
    """Build the error for a leaf on a column whose type the backend cannot read as text/number."""
    return UnsupportedError(f"{construct} on column {field!r}: its type has no text form in this backend")


def attach_rule(error: UnsupportedError, rule: CompiledRule) -> UnsupportedError:
    """Fill in the rule id and path of a backend error raised while translating ``rule``."""
    error.rule_id = error.rule_id or rule.id
    if rule.meta.path and error.path == "<string>":
        error.path = rule.meta.path
    return error


_Expr = TypeVar("_Expr")


def translate_rule_with(
    translate: Callable[[Node, Context], _Expr], rule: CompiledRule, ctx: Context | None
) -> _Expr:
    """Translate a rule's whole predicate with a backend's ``translate``, naming the rule on failure."""
    try:
        return translate(rule.predicate, ctx or Context())
    except UnsupportedError as exc:
        raise attach_rule(exc, rule) from None
