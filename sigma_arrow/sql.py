"""DataFusion SQL integration: query Sigma detections with SQL (DESIGN.md §4).

``register(ctx, rules)`` adds to a ``datafusion.SessionContext`` (names use ``prefix``, default "sigma"):

* ``sigma_matches('table')``: a table function; one match record (DESIGN.md §4 schema, the event as
  the ``event`` struct) per rule × matching row of a registered table. It returns a DataFusion plan
  over the table (engine UDF -> unnest -> join with the rule table), so it streams batch by batch
  like any DataFusion query and can be run again.
* ``sigma_annotate('table')``: a table function; every row of the table plus ``rule_ids``
  (list<string>, the matching rule ids, empty when none), streamed the same way.
* ``sigma_rule_ids(names, values)``: a scalar function; the matching rule ids of each row, given the
  field names (a constant list of strings) and their values (a list of strings, same order), e.g.
  ``sigma_rule_ids(['Image', 'CommandLine'], [Image, CommandLine])``. DataFusion Python scalar UDFs have
  exact signatures, so non-string columns need ``CAST(x AS VARCHAR)``.
* ``sigma_rules``: a table of rule metadata.

``to_sql(rule)`` gives a rule as a SQL predicate over a flattened table (compiler/backends/sql.py).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from compiler.errors import InputError, SigmaArrowError
from compiler.ir import referenced_fields
from compiler.model import CompiledRule
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.ruleset import RuleSet
from sigma_arrow.schema import INDEX_COLUMN, RESERVED_COLUMNS, SOURCE_COLUMN, TIMESTAMP_FIELDS

if TYPE_CHECKING:
    from datafusion import SessionContext

__all__ = [
    "RULE_TABLE_SCHEMA",
    "Evaluator",
    "error_message",
    "register",
    "register_path",
    "rule_table",
    "to_sql",
]

T = TypeVar("T")

#: Batches a query may hold in flight between the producer thread and DataFusion.
QUEUE_DEPTH = 2

#: Schema of the ``{prefix}_rules`` table.
RULE_TABLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("level", pa.string()),
        pa.field("status", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("product", pa.string()),
        pa.field("category", pa.string()),
        pa.field("service", pa.string()),
        pa.field("path", pa.string()),
        pa.field("description", pa.string()),
        pa.field("fields", pa.list_(pa.string())),
    ]
)

RULE_IDS_TYPE = pa.list_(pa.string())


class Evaluator(Protocol):
    """What the SQL functions need from an engine (``sigma_arrow.engine.Engine`` provides it)."""

    def evaluate(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """One boolean column per rule id."""
        ...


# ---------------------------------------------------------------- registration


def register(
    ctx: SessionContext,
    rules: RuleSet | Iterable[CompiledRule],
    prefix: str = "sigma",
    *,
    engine: Evaluator | None = None,
) -> None:
    """Register ``{prefix}_matches``, ``{prefix}_annotate``, ``{prefix}_rule_ids``, ``{prefix}_rules``.

    ``engine`` defaults to ``sigma_arrow.Engine(rules)``; pass one to reuse a compiled engine.
    """
    from datafusion import udf, udtf

    ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules=list(rules))
    if engine is None:
        from sigma_arrow.engine import Engine

        functions = _Functions(Engine(ruleset), ruleset, prefix)
    else:
        functions = _Functions(engine, ruleset, prefix)
    ctx.register_record_batches(f"{prefix}_rules", [[rule_table(ruleset)]])
    ctx.register_udtf(udtf(functions.matches, f"{prefix}_matches", with_session=True))
    ctx.register_udtf(udtf(functions.annotate, f"{prefix}_annotate", with_session=True))
    ctx.register_udf(
        udf(
            functions.rule_ids_of_lists,
            [RULE_IDS_TYPE, RULE_IDS_TYPE],
            RULE_IDS_TYPE,
            "immutable",
            name=f"{prefix}_rule_ids",
        )
    )


class _Functions:
    """The SQL functions of one ``register`` call (one engine, one rule set, one prefix).

    The table functions return DataFusion plans, not data: a projection calling a scalar UDF made for
    the table's exact column types (DataFusion Python UDFs have exact signatures) that hands each batch
    to the engine, an unnest, and a join with the rule table. DataFusion runs them batch by batch like
    any other plan: streaming, re-runnable, with its own memory accounting and LIMIT/filter pushdown.
    """

    def __init__(self, engine: Evaluator, ruleset: RuleSet, prefix: str) -> None:
        self.engine = engine
        self.ruleset = ruleset
        self.prefix = prefix
        self.lock = threading.Lock()  # one batch at a time through the engine

    def evaluate(self, batch: pa.RecordBatch) -> pa.Array:
        """Return the matching rule ids of each row of ``batch`` (list<string>)."""
        with self.lock:
            masks = self.engine.evaluate(batch)
        return masks_to_rule_ids(masks)

    def rule_ids_of_lists(self, names: pa.Array, values: pa.Array) -> pa.Array:
        """Implement ``{prefix}_rule_ids(names, values)``."""
        return self.evaluate(_batch_from_lists(names, values, f"{self.prefix}_rule_ids"))

    def _row_udf(self, schema: pa.Schema) -> Any:
        """Make a scalar UDF taking every column of ``schema`` and returning each row's rule ids."""
        from datafusion import udf

        names = schema.names
        plain = _plain_schema(schema)

        def rule_ids(*arrays: pa.Array) -> pa.Array:
            columns = [_as_array(a) for a in arrays]
            batch = pa.RecordBatch.from_arrays(columns, names=names)
            return self.evaluate(_to_plain(batch, plain))

        return udf(rule_ids, list(schema), RULE_IDS_TYPE, "immutable", name=f"{self.prefix}_row_rule_ids")

    def _table(self, arg: Any, session: SessionContext, function: str) -> Any:
        name = _table_argument(arg, function)
        try:
            # Table functions run inside DataFusion's async runtime, where a blocking call (even
            # ``session.table``) panics; so the lookup happens on a thread of its own.
            return _in_thread(lambda: session.table(name)), name
        except Exception as exc:  # KeyError from DataFusion: unknown table
            raise InputError(f"{function}: no table named {name!r}") from exc

    def annotate(self, arg: Any, session: SessionContext) -> Any:
        """Implement ``{prefix}_annotate('table')``: the table's rows plus ``rule_ids``."""
        from datafusion import col

        frame, _ = self._table(arg, session, f"{self.prefix}_annotate")
        schema = frame.schema()
        if "rule_ids" in schema.names:
            raise InputError(f"{self.prefix}_annotate: the table already has a rule_ids column")
        row_udf = self._row_udf(schema)
        columns = [col(_quoted(n)) for n in schema.names]
        return frame.select(*columns, row_udf(*columns).alias("rule_ids"))

    def matches(self, arg: Any, session: SessionContext) -> Any:
        """Implement ``{prefix}_matches('table')``: match records (DESIGN.md §4) of the table's rows."""
        from datafusion import col, lit, udf
        from datafusion import functions as f

        frame, name = self._table(arg, session, f"{self.prefix}_matches")
        schema = frame.schema()
        event_names = [n for n in schema.names if n not in RESERVED_COLUMNS]
        row_udf = self._row_udf(schema)
        columns = [col(_quoted(n)) for n in schema.names]
        has_source = SOURCE_COLUMN in schema.names
        source = col(_quoted(SOURCE_COLUMN)).cast(pa.string()) if has_source else lit(name)
        if INDEX_COLUMN in schema.names:
            index = col(_quoted(INDEX_COLUMN)).cast(pa.int64())
        else:  # position in the stream DataFusion produces (file order for a single-partition scan)
            index = f.row_number().cast(pa.int64()) - lit(1)
        hits = "__sigma_rule_id"
        frame = frame.select(
            *columns,
            source.alias("__sigma_source"),
            index.alias("__sigma_index"),
            row_udf(*columns).alias(hits),
        ).unnest_columns(hits, preserve_nulls=False)

        time_names = [n for n in TIMESTAMP_FIELDS if n in schema.names]
        if time_names:
            time_types = [schema.field(n).type for n in time_names]
            stamp = udf(_timestamp_text, time_types, pa.string(), "immutable", name="sigma_timestamp")
            timestamp = stamp(*[col(_quoted(n)) for n in time_names])
        else:
            timestamp = lit(None).cast(pa.string())
        pairs = [(n, col(_quoted(n))) for n in event_names]
        event = f.named_struct(pairs) if pairs else lit(None)
        frame = frame.select(
            col(hits),
            col("__sigma_source").alias("source"),
            col("__sigma_index").alias("event_index"),
            timestamp.alias("timestamp"),
            event.alias("event"),
        )
        rules = _in_thread(lambda: session.table(f"{self.prefix}_rules")).select(
            col("id"), col("title"), col("level"), col("tags")
        )
        joined = rules.join(frame, left_on="id", right_on=hits, how="inner")
        return joined.select(
            col(hits).alias("rule_id"),
            col("title").alias("rule_title"),
            col("level").alias("rule_level"),
            col("tags").alias("rule_tags"),
            col("source"),
            col("event_index"),
            col("timestamp"),
            col("event"),
        )


def _timestamp_text(*arrays: pa.Array) -> pa.Array:
    """First non-null of the timestamp fields, as text (the same rule as the engine's match records)."""
    result = pa.nulls(len(arrays[0]), pa.string())
    for array in arrays:
        column = _as_array(array)
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        result = pc.coalesce(result, column.cast(pa.string()))
    return result


def _quoted(name: str) -> str:
    """Quote a column name so DataFusion's ``col`` reads it verbatim (mixed case, dots)."""
    return '"' + name.replace('"', '""') + '"'


def rule_table(rules: Iterable[CompiledRule]) -> pa.RecordBatch:
    """Build the rule metadata table (``{prefix}_rules``): one row per rule."""
    rows = [
        {
            "id": r.meta.id,
            "title": r.meta.title,
            "level": r.meta.level,
            "status": r.meta.status,
            "tags": list(r.meta.tags),
            "product": r.meta.product,
            "category": r.meta.category,
            "service": r.meta.service,
            "path": r.meta.path,
            "description": r.meta.description,
            "fields": sorted(referenced_fields(r.predicate)),
        }
        for r in rules
    ]
    return pa.RecordBatch.from_pylist(rows, schema=RULE_TABLE_SCHEMA)


def masks_to_rule_ids(masks: pa.RecordBatch) -> pa.Array:
    """Per row, the names of the true columns of a mask batch (``Engine.evaluate``) as list<string>."""
    ids = np.array(masks.schema.names, dtype=object)
    if masks.num_columns == 0:
        return pa.array([[] for _ in range(masks.num_rows)], RULE_IDS_TYPE)
    matrix = np.column_stack(
        [np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool) for col in masks.columns]
    )
    rows, cols = np.nonzero(matrix)  # row-major: grouped by row, rules in column order
    offsets = np.zeros(masks.num_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=masks.num_rows), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[cols].tolist(), pa.string()))


# ---------------------------------------------------------------- to_sql


def to_sql(
    rule: CompiledRule | str,
    rules: RuleSet | None = None,
    *,
    schema: pa.Schema | Iterable[str] | None = None,
) -> str:
    """Give a rule as a SQL predicate over a flattened table (DataFusion dialect).

    ``rule`` is a CompiledRule, or a rule id looked up in ``rules``. ``schema`` is the table's Arrow
    schema (or its column names, all taken as strings): with it, leaves on columns the table lacks
    fold to their missing-field value and keywords search its string columns; without it every
    field is taken to be a string column and keyword rules are unsupported.
    Raises ``UnsupportedError`` for a construct the SQL backend cannot express.
    """
    from compiler.backends.context import Context
    from compiler.backends.sql import rule_to_sql

    if isinstance(rule, str):
        if rules is None:
            raise SigmaArrowError(f"to_sql: rule id {rule!r} given without a RuleSet")
        found = rules.by_id().get(rule)
        if found is None:
            raise SigmaArrowError(f"to_sql: no rule with id {rule!r}")
        rule = found
    if schema is None:
        context = None
    elif isinstance(schema, pa.Schema):
        context = Context.from_arrow(schema)
    else:
        context = Context.strings(list(schema))
    return rule_to_sql(rule, context)


# ---------------------------------------------------------------- scalar function helpers


def _batch_from_lists(names: pa.Array, values: pa.Array, function: str) -> pa.RecordBatch:
    """Build a string-column batch from the ``(names, values)`` arguments of ``{prefix}_rule_ids``."""
    names = _as_array(names)
    values = _as_array(values)
    n_rows = len(values)
    field_names = next((v for v in names.to_pylist() if v is not None), None) or []
    if len(set(field_names)) != len(field_names) or any(n is None for n in field_names):
        raise InputError(f"{function}: field names must be distinct non-null strings")
    width = len(field_names)
    lengths = pc.list_value_length(values).fill_null(width)
    if n_rows and not pc.all(pc.equal(lengths, width)).as_py():
        raise InputError(f"{function}: each values list must have {width} items, one per field name")
    starts = np.asarray(values.offsets.to_numpy()[:-1], dtype=np.int64)
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    flat = values.values
    columns = []
    for j in range(width):
        index = pa.array(starts + j, mask=~valid)
        columns.append(flat.take(index).cast(pa.string()))
    columns.append(pa.array(["sql"] * n_rows, pa.string()))
    columns.append(pa.array(np.arange(n_rows, dtype=np.int64)))
    return pa.RecordBatch.from_arrays(columns, names=[*field_names, SOURCE_COLUMN, INDEX_COLUMN])


def _as_array(value: Any) -> pa.Array:
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    return value


# ---------------------------------------------------------------- small helpers


def _table_argument(arg: Any, function: str) -> str:
    """Read the table name given to a table function: a string literal or a bare identifier."""
    from datafusion.expr import Expr

    expr = Expr(arg)
    kind = expr.variant_name()
    variant = expr.to_variant()
    if kind == "Literal" and str(variant.data_type()) in ("Utf8", "Utf8View", "LargeUtf8"):
        text = variant.value_string()
        if isinstance(text, str) and text:
            return text
    if kind == "Column":
        return str(variant.name())
    raise InputError(f"{function}: expected a table name, e.g. {function}('events')")


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread (outside DataFusion's async runtime) and return its result."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


_VIEW_TYPES = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def _plain_type(t: pa.DataType) -> pa.DataType:
    """``t`` with view types replaced by their plain forms (the engine and sinks expect those)."""
    if t in _VIEW_TYPES:
        return _VIEW_TYPES[t]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(_plain_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_plain_type(f.type)) for f in t])
    return t


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(_plain_type(f.type)) for f in schema], metadata=schema.metadata)


def _to_plain(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema):
        return batch
    return batch.cast(schema)


_PYERR = re.compile(r"PyErr \{ type: <class '[\w.]+'>, value: \w+\((['\"])(?P<msg>.*)\1\), traceback")
_PREFIXES = ("DataFusion error: ", "Execution error: ", "External error: ", "Arrow error: ")


def error_message(exc: BaseException) -> str:
    """One clean line for an error raised by DataFusion (or by our functions running inside it)."""
    text = str(exc) or type(exc).__name__
    found = _PYERR.search(text)
    if found:
        text = found.group("msg").replace("\\'", "'").replace('\\"', '"')
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix) :], True
    return text


def referenced_columns(rules: Sequence[CompiledRule]) -> frozenset[str]:
    """Every field any rule's predicate reads (what a table needs for the rules to see it)."""
    names: set[str] = set()
    for rule in rules:
        names |= referenced_fields(rule.predicate)
    return frozenset(names)


# ---------------------------------------------------------------- tables from files

PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".arrow", ".ipc", ".feather", ".arrows")
#: Formats read through sigma-arrow's readers (flattened exactly as ``scan`` flattens them).
READER_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".evtx": "evtx"}


def register_path(
    ctx: SessionContext,
    name: str,
    path: str,
    *,
    format: str | None = None,
    errors: ErrorLog | None = None,
    batch_size: int = 65_536,
) -> None:
    """Register the file, directory or glob ``path`` as table ``name`` (format from the extension).

    Parquet (file or directory) and Arrow IPC files are scanned natively by DataFusion, streaming.
    JSON/NDJSON/EVTX go through sigma-arrow's readers so columns are flattened the way ``scan``
    flattens them (``EventID``, ``Image``, ...); those tables are read once into memory (convert big
    inputs to Parquet with ``sigma-arrow convert`` first).
    """
    from pathlib import Path

    kind = format or _format_of(path)
    if kind == "parquet":
        if not Path(path).exists():
            raise InputError(f"{path}: no such file or directory")
        ctx.register_parquet(name, path)
        return
    if kind == "arrow":
        ctx.register_dataset(name, _arrow_dataset(path))
        return
    from sigma_arrow.readers.registry import expand_inputs, reader_for

    log = errors if errors is not None else ErrorLog()
    files = list(expand_inputs([path]))
    if not files:
        raise InputError(f"{path}: no input files")
    batches: list[pa.RecordBatch] = []
    for file in files:
        reader = reader_for(file, kind)
        batches.extend(b for b in reader.read(file, batch_size=batch_size, errors=log) if b.num_rows)
    ctx.register_record_batches(name, [unify_batches(batches)])


def _format_of(path: str) -> str:
    lowered = path.lower().rstrip("/")
    if lowered.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lowered.endswith(ARROW_SUFFIXES):
        return "arrow"
    for suffix, kind in READER_FORMATS.items():
        if lowered.endswith(suffix):
            return kind
    from pathlib import Path

    if Path(path).is_dir():
        return "parquet" if any(Path(path).rglob("*.parquet")) else "auto"
    return "auto"


def _arrow_dataset(path: str) -> ds.Dataset:
    """Open an Arrow IPC file (random-access format) or stream as a dataset."""
    try:
        return ds.dataset(path, format="ipc")
    except (pa.ArrowInvalid, OSError) as file_error:
        try:
            with pa.memory_map(path) as source:
                return ds.dataset(pa.ipc.open_stream(source).read_all())
        except (pa.ArrowInvalid, OSError):
            raise InputError(f"{path}: not an Arrow IPC file or stream ({file_error})") from file_error


def unify_batches(batches: Sequence[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Cast batches to one schema: the union of their columns; a column typed differently becomes string."""
    if not batches:
        return [pa.RecordBatch.from_pydict({SOURCE_COLUMN: pa.array([], pa.string())})]
    types: dict[str, pa.DataType] = {}
    for batch in batches:
        for f in batch.schema:
            seen = types.get(f.name)
            if seen is None or pa.types.is_null(seen):
                types[f.name] = f.type
            elif seen != f.type and not pa.types.is_null(f.type):
                types[f.name] = pa.string()
    schema = pa.schema([pa.field(n, t) for n, t in types.items()])
    unified = []
    for batch in batches:
        columns = []
        for f in schema:
            if f.name in batch.schema.names:
                column = batch.column(f.name)
                columns.append(column if column.type == f.type else _cast_text(column, f.type))
            else:
                columns.append(pa.nulls(batch.num_rows, f.type))
        unified.append(pa.RecordBatch.from_arrays(columns, schema=schema))
    return unified


def _cast_text(column: pa.Array, target: pa.DataType) -> pa.Array:
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import orjson

        return pa.array(
            [None if v is None else orjson.dumps(v, default=str).decode() for v in column.to_pylist()],
            pa.string(),
        )
