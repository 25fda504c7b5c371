"""Per-rule expression backends (polars, datafusion, pyarrow): simple, slow, differential partners.

Each rule's whole predicate is translated by ``compiler/backends/<name>_expr.translate_rule`` for the
batch's schema (cached per schema) and evaluated as one projection. Dictionary and string-view
columns are decoded to plain strings first. A rule whose translation fails (UnsupportedError) is
listed in ``skipped`` with the reason and never matches.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pyarrow as pa

from compiler.backends.context import Context
from compiler.errors import SigmaArrowError
from compiler.model import CompiledRule
from sigma_arrow.engine.columns import IntArray
from sigma_arrow.schema import RESERVED_COLUMNS


def plain_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Decode dictionary / string-view columns so every backend sees plain types."""
    arrays = []
    changed = False
    for column in batch.columns:
        data_type = column.type
        if pa.types.is_dictionary(data_type):
            column = column.dictionary_decode()
            data_type = column.type
            changed = True
        if pa.types.is_string_view(data_type):
            column = column.cast(pa.large_string())
            changed = True
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names) if changed else batch


class ExpressionBackend:
    """Evaluate each rule as one expression of a dataframe library."""

    def __init__(self, name: str, rules: list[CompiledRule]) -> None:
        self.name = name
        self.rules = rules
        self.module: Any = importlib.import_module(f"compiler.backends.{name}_expr")
        self.skipped: list[tuple[str, str]] = []
        self._reported: set[str] = set()
        self._cache: dict[pa.Schema, list[Any]] = {}

    def _translate(self, schema: pa.Schema) -> list[Any]:
        cached = self._cache.get(schema)
        if cached is not None:
            return cached
        ctx = Context.from_arrow(schema)
        keyword_columns = tuple(
            n for n, k in (ctx.columns or {}).items() if k == "string" and n not in RESERVED_COLUMNS
        )
        ctx = Context(ctx.columns, keyword_columns)
        expressions: list[Any] = []
        for rule in self.rules:
            try:
                expressions.append(self.module.translate_rule(rule, ctx))
            except SigmaArrowError as exc:
                if rule.id not in self._reported:
                    self._reported.add(rule.id)
                    self.skipped.append((rule.id, str(getattr(exc, "message", exc))))
                expressions.append(None)
        self._cache[schema] = expressions
        return expressions

    def match_rows(self, batch: pa.RecordBatch) -> list[IntArray]:
        """Sorted matching row positions per rule."""
        batch = plain_batch(batch)
        expressions = self._translate(batch.schema)
        live = [(i, e) for i, e in enumerate(expressions) if e is not None]
        masks: dict[int, Any] = {}
        if self.name == "polars":
            import polars as pl

            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            if live:
                selected = frame.select([e.alias(f"r{i}") for i, e in live])
                masks = {i: selected[f"r{i}"].to_numpy() for i, _ in live}
        elif self.name == "pyarrow":
            import pyarrow.dataset as ds

            dataset = ds.dataset(pa.Table.from_batches([batch]))
            for i, e in live:
                table = dataset.to_table(columns={"m": e})
                masks[i] = table.column("m").to_numpy()
        else:
            from datafusion import SessionContext

            session = SessionContext()
            table = session.from_arrow(pa.Table.from_batches([batch]))
            if live:
                result = table.select(*[e.alias(f"r{i}") for i, e in live]).to_arrow_table()
                masks = {i: result.column(f"r{i}").to_numpy() for i, _ in live}
        empty = np.empty(0, dtype=np.int64)
        out: list[IntArray] = []
        for i in range(len(self.rules)):
            mask = masks.get(i)
            out.append(empty if mask is None else np.flatnonzero(np.asarray(mask, dtype=bool)))
        return out
