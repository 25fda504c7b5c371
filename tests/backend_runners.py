"""Evaluate one IR node over a small batch with the reference evaluator and with every backend.

Shared by tests/test_backends.py (fixture tables) and tests/test_backends_property.py (hypothesis).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import datafusion
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from compiler import reference
from compiler.backends import datafusion_expr, polars_expr, pyarrow_expr, sql
from compiler.backends.context import Context
from compiler.ir import Node

Rows = Sequence[Mapping[str, object]]
INDEX = "__event_index"


def make_table(rows: Rows, schema: pa.Schema | None = None) -> pa.Table:
    """One table with the rows (missing keys are nulls) plus the reserved index column."""
    if schema is None:
        names = list(dict.fromkeys(k for r in rows for k in r))  # every row's keys, first-seen order
        table = pa.table({k: [r.get(k) for r in rows] for k in names})
    else:
        table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema)
    if table.num_columns == 0:
        return pa.table({INDEX: pa.array(range(len(rows)), pa.int64())})
    return table.append_column(INDEX, pa.array(range(len(rows)), pa.int64()))


def run_reference(node: Node, rows: Rows, table: pa.Table) -> list[bool]:
    return [reference.evaluate(node, r) for r in rows]


def run_pyarrow(node: Node, rows: Rows, table: pa.Table) -> list[bool]:
    expr = pyarrow_expr.translate(node, Context.from_arrow(table.schema))
    mask = ds.dataset(table).to_table(columns={"m": expr})["m"]
    assert mask.null_count == 0
    # the same expression must also work as a filter
    assert ds.dataset(table).to_table(filter=expr).num_rows == sum(mask.to_pylist())
    return [bool(v) for v in mask.to_pylist()]


def run_polars(node: Node, rows: Rows, table: pa.Table) -> list[bool]:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    expr = polars_expr.translate(node, Context.from_polars(frame.schema))
    mask = frame.select(expr.alias("__m"))["__m"]  # select: the mask must be one value per row
    assert mask.null_count() == 0
    return [bool(v) for v in mask.to_list()]


def _session(table: pa.Table) -> datafusion.SessionContext:
    ctx = datafusion.SessionContext()
    ctx.from_arrow(table, name="t")
    return ctx


def run_datafusion(node: Node, rows: Rows, table: pa.Table) -> list[bool]:
    expr = datafusion_expr.translate(node, Context.from_arrow(table.schema))
    frame = _session(table).table("t")
    result = frame.select(datafusion_expr.column(INDEX), expr.alias("m")).to_pydict()
    assert frame.filter(expr).count() == sum(bool(v) for v in result["m"])
    ordered = dict(zip(result[INDEX], result["m"], strict=True))
    assert None not in ordered.values()
    return [bool(ordered[i]) for i in range(len(rows))]


def run_sql(node: Node, rows: Rows, table: pa.Table) -> list[bool]:
    predicate = sql.translate(node, Context.from_arrow(table.schema))
    session = _session(table)
    result = session.sql(f'SELECT "{INDEX}", {predicate} AS m FROM t').to_pydict()
    ordered = dict(zip(result[INDEX], result["m"], strict=True))
    assert None not in ordered.values()
    # the same text must also work as a WHERE clause
    count = session.sql(f"SELECT count(*) AS c FROM t WHERE {predicate}").to_pydict()["c"][0]
    assert count == sum(bool(v) for v in ordered.values())
    return [bool(ordered[i]) for i in range(len(rows))]


Runner = Callable[[Node, Rows, pa.Table], list[bool]]
RUNNERS: dict[str, Runner] = {
    "reference": run_reference,
    "pyarrow": run_pyarrow,
    "polars": run_polars,
    "datafusion": run_datafusion,
    "sql": run_sql,
}
BACKENDS = [name for name in RUNNERS if name != "reference"]
