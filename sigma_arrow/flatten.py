"""Flattening: nested events (EVTX JSON, ECS, any JSON) → flat Arrow columns rules can name.

This module is THE flattening every input uses (EVTX, JSON/NDJSON, Kafka, ``convert``), so the same
event always yields the same columns whatever it came from.

Flattening rules
----------------
EVTX records, i.e. the JSON the ``evtx`` package (and ``evtx_dump``) produces,
``{"Event": {"#attributes": ..., "System": {...}, "EventData": {...} | null, "UserData": {...}}}``:

* ``Event.System.<X>`` becomes ``<X>`` (``EventID``, ``Channel``, ``Computer``, ``Level``, ``Task``,
  ``Opcode``, ``Keywords``, ``Version``, ``EventRecordID``, ...). An element with a ``#text`` gives
  its text (``"EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7036}`` → ``EventID`` =
  ``7036``). Attributes are lifted under their own name (``TimeCreated.#attributes.SystemTime`` →
  ``SystemTime``, ``Execution.#attributes.ProcessID``/``ThreadID`` → ``ProcessID``/``ThreadID``,
  ``Security.#attributes.UserID`` → ``UserID``, ``Correlation.#attributes.ActivityID`` →
  ``ActivityID``, ``EventID.#attributes.Qualifiers`` → ``Qualifiers``) except the Provider's, which are
  prefixed: ``Provider_Name``, ``Provider_Guid``, ``Provider_EventSourceName``.
* ``Event.EventData.<Name>`` becomes ``<Name>``. Unnamed ``<Data>`` elements (``"Data": "x"``,
  ``"Data": ["a", "b"]``, ``"Data": {"#text": ...}``) become one ``Data`` column, several values joined
  by a newline, so ``Data|contains`` rules match any of them. ``Data`` items written as
  ``{"#attributes": {"Name": "N"}, "#text": "v"}`` (xmltodict style) become ``N``.
  ``EventData.#attributes.Name`` becomes ``EventData_Name``.
* ``Event.UserData.<X>.<Y>`` becomes ``<Y>`` (``<X>`` is the event's XML element, e.g.
  ``LogFileCleared``; its ``#attributes`` are XML namespaces and are dropped).
* Any other section (``ProcessingErrorData``, ``RenderingInfo``, ...) keeps a dotted prefix:
  ``RenderingInfo.Message``. ``Event.#attributes`` (the XML namespace) is dropped.
* Name clashes: the first section wins (System, then EventData, then UserData); a clashing field
  stays reachable under its section path (``EventData.ProcessID``, ``UserData.LogFileCleared.Channel``).

Any other JSON (ECS, CloudTrail, Zeek, already-flat events): nested objects become dotted names
(``{"process": {"command_line": "x"}}`` → ``process.command_line``), so a rule naming
``process.command_line`` finds it. A key that already contains a dot is kept as it is.

Column type policy
------------------
Every scalar leaf becomes a **string** (utf8) column holding the IR text form (``compiler.ir``):
strings as they are, integers as decimal digits, booleans ``true``/``false``, integral floats as
integers (``4688.0`` → ``4688``), other floats as Python ``repr``. Arrays, and objects that are not
lifted (inside EVTX sections), become compact JSON text. JSON ``null`` stays null; a field absent from
an event is null. So a field that is a number in one event and a string in the next (``ProcessId``)
never fails a batch. Parquet and Arrow inputs keep their own column types (``flatten_table`` only
flattens their structs); the engine handles any type.

Every batch also carries ``__source`` (string) and ``__event_index`` (int64), see
``sigma_arrow.schema``.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
from collections.abc import Container, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.gc_pause import gc_paused
from sigma_arrow.schema import INDEX_COLUMN, RESERVED_COLUMNS, SOURCE_COLUMN

if TYPE_CHECKING:  # the engine package imports this module: no import cycle at run time
    from sigma_arrow.engine.sparse import SparseBatch

try:  # the native decoder (setup.py builds it when a C compiler is there); else all is Python
    from sigma_arrow import _cdecode
except ImportError:  # pragma: no cover - depends on the build
    _cdecode = None  # type: ignore[assignment]

#: Set to ``1`` to decode JSON in Python even when the native decoder is built.
PURE_PYTHON_ENV = "SIGMA_ARROW_PURE_PYTHON_DECODE"

__all__ = [
    "decode_lines",
    "decode_lines_sparse",
    "decode_ndjson_stretch",
    "decode_spans_sparse",
    "flatten_record",
    "flatten_table",
    "merge_batches",
    "ndjson_to_batch",
    "records_to_batch",
    "rows_to_batch",
    "sparse_builder",
]

Row = dict[str, str | None]

#: Separator between the values of several unnamed EVTX ``<Data>`` elements.
DATA_SEPARATOR = "\n"

_ATTRIBUTES = "#attributes"
_TEXT = "#text"


# ---------------------------------------------------------------- scalar text form


def _text(value: Any) -> str | None:
    """IR text form of any JSON value: scalars as text, arrays/objects as compact JSON text."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, str):  # str subclasses
        return str(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson refuses ints beyond 64 bits and exotic objects
        return str(value)


def _element_text(value: Any) -> str | None:
    """Text of an XML-ish element: its ``#text`` when it has one, else the value's text form."""
    if type(value) is dict:
        if _TEXT in value:
            inner = value[_TEXT]
            if type(inner) is list:
                return DATA_SEPARATOR.join(t for t in map(_text, inner) if t is not None)
            return _text(inner)
        if len(value) == 1 and _ATTRIBUTES in value:
            return None  # an element with attributes only has no text
    return _text(value)


# ---------------------------------------------------------------- EVTX


#: System elements that carry attributes only (their null means "absent", not a null field).
_ATTRIBUTE_ONLY = frozenset({"Provider", "TimeCreated", "Execution", "Security", "Correlation"})


def _lift_system(system: Mapping[str, Any], out: Row) -> None:
    for key, value in system.items():
        kind = type(value)
        if kind is str:
            out[key] = value
        elif kind is int:
            out[key] = str(value)
        elif kind is dict:
            attributes = value.get(_ATTRIBUTES)
            if type(attributes) is dict:
                prefix = "Provider_" if key == "Provider" else ""
                for name, attribute in attributes.items():
                    if type(attribute) is str:
                        out[prefix + name] = attribute
                    elif attribute is not None:
                        out[prefix + name] = _text(attribute)
            if _TEXT in value:
                text = _element_text(value)
                if text is not None:
                    out[key] = text
            elif key not in _ATTRIBUTE_ONLY:
                rest = {k: v for k, v in value.items() if k != _ATTRIBUTES}
                if rest:
                    out[key] = _text(rest)
        elif value is not None:
            out[key] = _text(value)


def _put(out: Row, name: str, section_path: str, value: str | None, system_names: Mapping[str, Any]) -> None:
    """Store an EventData/UserData field; a clash with a System field goes under its section path."""
    if value is None:
        return
    if name in system_names:
        out[section_path] = value
    else:
        out[name] = value


def _lift_data(data: Any, out: Row, system_names: Mapping[str, Any]) -> None:
    """Unnamed (or xmltodict-named) ``<Data>`` elements of EventData."""
    items = data if type(data) is list else [data]
    unnamed: list[str] = []
    for item in items:
        if type(item) is dict:
            attributes = item.get(_ATTRIBUTES)
            name = attributes.get("Name") if type(attributes) is dict else None
            if name is None:
                name = item.get("@Name")
            text = _element_text({k: v for k, v in item.items() if k not in (_ATTRIBUTES, "@Name")})
            if name is not None:
                _put(out, str(name), f"EventData.{name}", text, system_names)
            elif text is not None:
                unnamed.append(text)
        else:
            text = _text(item)
            if text is not None:
                unnamed.append(text)
    if unnamed:
        _put(out, "Data", "EventData.Data", DATA_SEPARATOR.join(unnamed), system_names)


def _flatten_evtx(event: Mapping[str, Any], out: Row) -> None:
    system = event.get("System")
    if type(system) is dict:
        _lift_system(system, out)
    # Names taken so far (System fields, then earlier sections): a clashing field keeps its path.
    system_names = out
    for section, body in event.items():
        if section == "System" or section == _ATTRIBUTES:
            continue
        if section == "EventData":
            if type(body) is dict:
                for key, value in body.items():
                    kind = type(value)
                    if kind is str or kind is int:
                        text = value if kind is str else str(value)
                        if key in system_names:
                            out["EventData." + key] = text
                        else:
                            out[key] = text
                    elif value is None:
                        continue
                    elif key == "Data":
                        _lift_data(value, out, system_names)
                    elif key == _ATTRIBUTES:
                        if type(value) is dict:
                            for name, attribute in value.items():
                                if attribute is not None:
                                    out["EventData_" + name] = _text(attribute)
                    else:
                        _put(out, key, "EventData." + key, _element_text(value), system_names)
            elif body is not None:
                _put(out, "Data", "EventData.Data", _element_text(body), system_names)
        elif section == "UserData":
            if type(body) is dict:
                for element, fields in body.items():
                    if type(fields) is dict:
                        for key, value in fields.items():
                            if key != _ATTRIBUTES:
                                _put(
                                    out, key, f"UserData.{element}.{key}", _element_text(value), system_names
                                )
                    elif element != _ATTRIBUTES:
                        _put(out, element, f"UserData.{element}", _element_text(fields), system_names)
            elif body is not None:
                out["UserData"] = _text(body)
        elif type(body) is dict:
            for key, value in body.items():
                if key != _ATTRIBUTES and value is not None:
                    text = _element_text(value)
                    if text is not None:
                        out[f"{section}.{key}"] = text
        elif body is not None:
            out[section] = _text(body)


# ---------------------------------------------------------------- generic JSON


def _flatten_nested(obj: Mapping[str, Any], prefix: str, out: Row) -> None:
    for key, value in obj.items():
        name = prefix + key if type(key) is str else prefix + str(key)
        kind = type(value)
        if kind is str:
            out[name] = value
        elif kind is dict:
            if value:
                _flatten_nested(value, name + ".", out)
            else:
                out[name] = "{}"
        elif value is not None:
            out[name] = _text(value)


def _is_evtx(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    event = record.get("Event")
    if type(event) is dict and type(event.get("System")) is dict:
        return event
    return None


def flatten_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one event (EVTX JSON or any nested JSON object) into ``{column: text}``.

    Null fields are left out (a missing field and a null one are both null in the batch).
    """
    out: Row = {}
    event = _is_evtx(record)
    if event is not None:
        _flatten_evtx(event, out)
        if len(record) > 1:  # siblings of "Event" (e.g. a collector's metadata) keep their names
            _flatten_nested({k: v for k, v in record.items() if k != "Event"}, "", out)
    else:
        _flatten_nested(record, "", out)
    out.pop(SOURCE_COLUMN, None)
    out.pop(INDEX_COLUMN, None)
    return out


# ---------------------------------------------------------------- rows → Arrow


def _string_array(values: Sequence[str | None]) -> pa.Array:
    return pa.array(values, type=pa.string())


#: Below this many rows, fixed per-column costs dominate: columns are built row-wise instead.
_SMALL_BATCH = 2048


def _rows_to_columns(
    rows: Sequence[Mapping[str, Any]],
    values: list[str | None] | None = None,
    *,
    drop: Container[str] = (),
) -> tuple[list[str], list[pa.Array]]:
    """Flat rows → (names, string arrays), with a fixed number of C-level passes whatever the shape.

    All keys and all values of the batch are chained into two flat lists (``values``, when given, is
    that chain already converted to text), the values become ONE Arrow string array, and each column
    is cut out of it with one ``take`` and spread over the batch from buffers. Column order is the order
    in which keys first appear. Names in ``drop`` get no column.
    """
    n = len(rows)
    if n < _SMALL_BATCH:
        if values is not None:  # put the converted values back into (new) rows
            chained = iter(values)
            rows = [dict(zip(row, itertools.islice(chained, len(row)), strict=True)) for row in rows]
        return _drop(*_rows_to_columns_grouped(rows), drop)  # type: ignore[arg-type]
    keys = list(itertools.chain.from_iterable(rows))
    if not keys:
        return [], []
    if values is None:
        values = list(itertools.chain.from_iterable(map(dict.values, rows)))  # type: ignore[arg-type]
    union = list(dict.fromkeys(keys))
    try:
        dense = pa.array(values, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        dense = None
    if not isinstance(dense, pa.StringArray):
        # A non-text value (public ``rows_to_batch`` rows) or values past 2 GiB: the row-wise way.
        return _drop(*_rows_to_columns_grouped([dict(row) for row in rows]), drop)
    code_type = np.uint16 if len(union) < (1 << 16) else np.int64  # 16 bits: numpy radix-sorts them
    code_of = {key: code for code, key in enumerate(union)}
    codes = np.fromiter(map(code_of.__getitem__, keys), dtype=code_type, count=len(keys))
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.fromiter(map(len, rows), dtype=np.int64, count=n))
    # Stable: within one key, positions stay in row order, so each column's rows come out ascending.
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(union))))).tolist()
    names: list[str] = []
    arrays: list[pa.Array] = []
    for code, key in enumerate(union):
        if key in drop:
            continue
        positions = order[bounds[code] : bounds[code + 1]]
        names.append(key)
        # take: each column gets its own compact buffers (a slice would pin the whole batch's data).
        arrays.append(scatter_strings(dense.take(pa.array(positions)), row_of[positions], n))
    return names, arrays


def _drop(names: list[str], arrays: list[pa.Array], drop: Container[str]) -> tuple[list[str], list[pa.Array]]:
    if not any(name in drop for name in names):
        return names, arrays
    kept = [i for i, name in enumerate(names) if name not in drop]
    return [names[i] for i in kept], [arrays[i] for i in kept]


#: Values that make ``_flat_rows`` flatten a record with ``flatten_record`` (nested, or left out).
_FLATTEN_KINDS = frozenset({dict, type(None)})


def _flat_rows(rows: list[Mapping[str, Any]]) -> list[str | None]:
    """Make decoded JSON rows flat, in place, equal to ``flatten_record`` on each; return their values.

    ``rows`` holds objects as decoded, or already flattened ones. Already-flat objects (the common
    case for flat NDJSON and Kafka) stay as they are: their non-string scalar values are converted in
    the returned value chain, once for the whole batch, not field by field. Objects with a nested
    object or a null value (or a non-text key) are replaced by ``flatten_record``'s result.
    """
    if not set(map(type, itertools.chain.from_iterable(rows))) <= {str}:
        rows[:] = map(flatten_record, rows)  # non-text keys: flatten_record names them
    values: list[Any] = list(itertools.chain.from_iterable(map(dict.values, rows)))  # type: ignore[arg-type]
    types = list(map(type, values))
    kinds = set(types)
    if kinds <= {str}:
        return values
    if not kinds.isdisjoint(_FLATTEN_KINDS):
        flagged = np.fromiter(map(_FLATTEN_KINDS.__contains__, types), bool, len(types))
        ends = np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))
        for position in np.unique(np.searchsorted(ends, np.flatnonzero(flagged), side="right")).tolist():
            rows[position] = flatten_record(rows[position])
        values = list(itertools.chain.from_iterable(map(dict.values, rows)))  # type: ignore[arg-type]
        types = list(map(type, values))
    positions = np.flatnonzero(
        np.fromiter(map(operator.is_not, types, itertools.repeat(str)), bool, len(types))
    )
    odd = [values[position] for position in positions.tolist()]
    # Integers are the usual non-text value (EventID, ProcessId): str() them in one C-level map.
    texts = map(str, odd) if set(map(type, odd)) == {int} else map(_text, odd)
    for position, text in zip(positions.tolist(), texts, strict=True):
        values[position] = text
    return values


def _rows_to_columns_grouped(rows: list[Row]) -> tuple[list[str], list[pa.Array]]:
    """Flat rows → (names, string arrays), row by row (the fallback when values pass 2 GiB)."""
    n = len(rows)
    union = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
    if not union:
        return [], []
    total = sum(map(len, rows))
    if len(union) * n <= 3 * total:
        # Dense enough: one pass over the rows per column.
        return union, [_string_array([row.get(key) for row in rows]) for key in union]
    # Sparse (many event kinds in one batch): group rows by their key set, transpose each group with a
    # C-level zip, then spread every column's values over the batch straight from buffers.
    groups: dict[tuple[str, ...], tuple[list[int], list[Row]]] = {}
    for position, row in enumerate(rows):
        signature = tuple(row)
        group = groups.get(signature)
        if group is None:
            groups[signature] = group = ([], [])
        group[0].append(position)
        group[1].append(row)
    positions_of: dict[str, list[int]] = {key: [] for key in union}
    values_of: dict[str, list[str | None]] = {key: [] for key in union}
    for signature, (positions, members) in groups.items():
        if not signature:
            continue
        if len(signature) == 1:
            columns: list[Sequence[str | None]] = [[row[signature[0]] for row in members]]
        else:
            # Same signature = same keys in the same order, so the values line up column by column.
            columns = list(zip(*map(dict.values, members), strict=True))
        for key, column in zip(signature, columns, strict=True):
            positions_of[key].extend(positions)
            values_of[key].extend(column)
    return union, [_scatter(values_of[key], positions_of[key], n) for key in union]


def _scatter(values: list[str | None], positions: list[int], n: int) -> pa.Array:
    """Build a length-``n`` string array holding ``values[i]`` at row ``positions[i]``, null elsewhere."""
    return scatter_strings(_string_array(values), np.asarray(positions, dtype=np.int64), n)


def scatter_strings(dense: pa.Array, where: np.ndarray, n: int) -> pa.Array:
    """Spread a string array over ``n`` rows: ``dense[i]`` lands at row ``where[i]``, null elsewhere.

    Built straight from buffers (offsets, validity bitmap, the dense values' data): no per-row work.
    """
    if len(where) > 1 and not bool(np.all(where[1:] > where[:-1])):
        order = np.argsort(where, kind="stable")
        where = where[order]
        dense = dense.take(pa.array(order))
    if len(where) == n:
        return dense
    dense_offsets = np.frombuffer(dense.buffers()[1], dtype=np.int32)[
        dense.offset : dense.offset + len(dense) + 1
    ]
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[where + 1] = np.diff(dense_offsets)
    offsets[0] = dense_offsets[0]
    np.cumsum(offsets, out=offsets)
    valid = np.zeros(n, dtype=bool)
    if dense.null_count:
        valid[where] = dense.is_valid().to_numpy(zero_copy_only=False)
    else:
        valid[where] = True
    null_count = n - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    data = dense.buffers()[2] or pa.py_buffer(b"")
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), data, bitmap, null_count)


def merge_batches(batches: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    """Stack batches with different columns into one (missing columns become null), row order kept.

    Fast for the flattened string batches readers produce (buffers are spread, no per-row work);
    other column types go through ``pa.concat_tables`` type promotion (which may raise ArrowInvalid).
    """
    if len(batches) == 1:
        return batches[0]
    names = list(dict.fromkeys(name for batch in batches for name in batch.schema.names))
    types: dict[str, pa.DataType] = {}
    simple = True
    for batch in batches:
        for field in batch.schema:
            known = types.setdefault(field.name, field.type)
            if known != field.type or not (pa.types.is_string(field.type) or field.name in RESERVED_COLUMNS):
                simple = False
    if not simple:
        tables = [pa.Table.from_batches([b]) for b in batches]
        merged = pa.concat_tables(tables, promote_options="default").combine_chunks()
        return merged.to_batches()[0]
    chunks: dict[str, list[pa.Array]] = {name: [] for name in names}
    ranges: dict[str, list[np.ndarray]] = {name: [] for name in names}
    start = 0
    for batch in batches:
        rows = np.arange(start, start + batch.num_rows, dtype=np.int64)
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            chunks[name].append(column)
            ranges[name].append(rows)
        start += batch.num_rows
    arrays = []
    for name in names:
        dense = pa.concat_arrays(chunks[name])
        if len(chunks[name]) == len(batches):
            arrays.append(dense)
        else:
            arrays.append(scatter_strings(dense, np.concatenate(ranges[name]), start))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _with_reserved(
    names: list[str], arrays: list[pa.Array], n: int, source: str, indices: pa.Array
) -> pa.RecordBatch:
    names = [*names, SOURCE_COLUMN, INDEX_COLUMN]
    arrays = [*arrays, pa.array([source], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64))), indices]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _index_array(first_index: int | Sequence[int], n: int) -> pa.Array:
    if isinstance(first_index, int):
        return pa.array(np.arange(first_index, first_index + n, dtype=np.int64))
    if len(first_index) != n:
        raise ValueError(f"{len(first_index)} indices for {n} records")
    return pa.array(np.asarray(first_index, dtype=np.int64))


def rows_to_batch(rows: list[Row], *, source: str, indices: int | Sequence[int]) -> pa.RecordBatch:
    """Already-flat rows (values text or None) → batch with ``__source`` and ``__event_index``."""
    names, arrays = _rows_to_columns(rows)
    return _with_reserved(names, arrays, len(rows), source, _index_array(indices, len(rows)))


def records_to_batch(
    records: Sequence[Mapping[str, Any]], *, source: str, first_index: int | Sequence[int]
) -> pa.RecordBatch:
    """Flatten events into one batch (flat string columns + ``__source`` + ``__event_index``).

    ``first_index`` is the index of the first record (the others follow), or one index per record.
    """
    with gc_paused():
        indices = _index_array(first_index, len(records))
        if all(type(record) is dict for record in records):
            return _records_batch(list(records), source, indices)  # type: ignore[arg-type]
        rows = [flatten_record(record) for record in records]
        return rows_to_batch(rows, source=source, indices=first_index)


def _records_batch(records: list[dict[str, Any]], source: str, indices: pa.Array) -> pa.RecordBatch:
    """Build a batch from decoded JSON objects, the fast way (same as ``flatten_record`` per record)."""
    rows: list[Mapping[str, Any]] = [flatten_record(r) if "Event" in r else r for r in records]
    return _rows_batch(rows, source, indices, evtx_only=False)


def _rows_batch(
    rows: list[Mapping[str, Any]], source: str, indices: pa.Array, *, evtx_only: bool
) -> pa.RecordBatch:
    """Build a batch from rows as ``decode_lines`` collects them (``evtx_only``: all flattened)."""
    values = None if evtx_only else _flat_rows(rows)
    names, arrays = _rows_to_columns(rows, values, drop=RESERVED_COLUMNS)
    return _with_reserved(names, arrays, len(rows), source, indices)


# ---------------------------------------------------------------- NDJSON fast path


def decode_lines(
    lines: Sequence[bytes | str],
    *,
    source: str,
    indices: Sequence[int],
    errors: ErrorLog,
    offsets: Sequence[int] | None = None,
) -> pa.RecordBatch:
    """Decode JSON documents (one per item) into a batch; a bad one is reported and skipped.

    ``indices`` gives each document's ``__event_index``; ``offsets`` what a problem report names as
    its offset (defaults to the index). ``decode_lines_sparse`` gives the same rows as a SparseBatch.

    The native decoder (``sigma_arrow._cdecode``) takes the whole block when it is built and
    ``SIGMA_ARROW_PURE_PYTHON_DECODE`` is not set; it yields the very same batch, and hands any block
    it is not sure to reproduce exactly (a bad document, a duplicate key, a huge number...) back to
    the Python code below, which reports the problems.
    """
    if lines and native_decode_enabled():
        columns = _cdecode.decode(lines)
        if columns is not None:
            return _native_batch(columns, len(lines), source, indices)
    return _python_decode_lines(lines, source=source, indices=indices, errors=errors, offsets=offsets)


def _python_decode_lines(
    lines: Sequence[bytes | str],
    *,
    source: str,
    indices: Sequence[int],
    errors: ErrorLog,
    offsets: Sequence[int] | None = None,
) -> pa.RecordBatch:
    """``decode_lines`` the Python way: every document, reporting the bad ones."""
    loads = orjson.loads
    rows: list[Mapping[str, Any]] = []
    kept: list[int] = []
    flattened = 0
    with gc_paused():
        # Flatten EVTX records as they are decoded: their nested dicts die at once, which keeps the
        # allocator's memory hot (holding a whole block of them is ~15 % slower).
        for position, line in enumerate(lines):
            try:
                record = loads(line)
            except orjson.JSONDecodeError as exc:
                where = offsets[position] if offsets is not None else indices[position]
                errors.report(source, where, "json", f"record {indices[position]}: invalid JSON: {exc}")
                continue
            if type(record) is not dict:
                where = offsets[position] if offsets is not None else indices[position]
                errors.report(
                    source,
                    where,
                    "json",
                    f"record {indices[position]}: expected a JSON object, got {type(record).__name__}",
                )
                continue
            if "Event" in record:
                record = flatten_record(record)
                flattened += 1
            rows.append(record)
            kept.append(indices[position])
        return _rows_batch(rows, source, _index_array(kept, len(rows)), evtx_only=flattened == len(rows))


def decode_lines_sparse(
    lines: Sequence[bytes | str],
    *,
    source: str,
    indices: Sequence[int],
    errors: ErrorLog,
    offsets: Sequence[int] | None = None,
) -> SparseBatch:
    """``decode_lines`` into a ``SparseBatch``: what the native engine takes, built without dense columns.

    The native decoder writes each column's set rows and values only (wide, sparse logs: a fifth of
    the bytes, and no compaction left for ``SparseBatch.from_batch``); any other path converts.
    """
    from sigma_arrow.engine.sparse import SparseBatch

    if lines and native_decode_enabled():
        columns = _cdecode.decode_sparse(lines)
        if columns is not None:
            return _native_sparse_batch(columns, len(lines), source, indices)
    # Refused (or no native decoder): the Python path, without asking the native decoder again.
    return SparseBatch.from_batch(
        _python_decode_lines(lines, source=source, indices=indices, errors=errors, offsets=offsets)
    )


class SparseBuilder:
    """Decode documents a few at a time into one ``SparseBatch`` (the native decoder's ``Builder``).

    Each ``add`` parses and flattens its documents at once, while they are hot in the cache, and
    copies their values: the caller can drop them right away (their memory serves the next ones).
    ``finish`` gives exactly what ``decode_lines_sparse`` gives for all of them at once.
    """

    __slots__ = ("_native",)

    def __init__(self) -> None:
        assert _cdecode is not None, "SparseBuilder needs the native decoder"
        self._native = _cdecode.Builder()

    @property
    def rows(self) -> int:
        """Rows added so far."""
        return self._native.rows

    def add(self, documents: Sequence[bytes | str]) -> bool:
        """Add the documents as the next rows; False: refused (none added; decode them the Python way)."""
        return self._native.add(documents)

    def finish(self, *, source: str, indices: Sequence[int]) -> SparseBatch:
        """Return the rows added so far (one index each) as a SparseBatch; the builder is empty again."""
        rows = self._native.rows
        return _native_sparse_batch(self._native.finish(), rows, source, indices)


def sparse_builder() -> SparseBuilder | None:
    """Return a ``SparseBuilder``, or None when the native decoder is not there or switched off."""
    return SparseBuilder() if native_decode_enabled() else None


def count_ndjson_lines(data: bytes | bytearray | memoryview, start: int, max_lines: int) -> tuple[int, int]:
    """Return (end, lines): the next ``max_lines`` non-blank lines of ``data[start:]`` end at ``end``.

    Blank lines (empty or whitespace) are no records, as in ``split_lines``. Needs the native decoder.
    """
    assert _cdecode is not None, "count_ndjson_lines needs the native decoder"
    return _cdecode.count_lines(data, start, max_lines)


def decode_ndjson_stretch(
    data: bytes | bytearray | memoryview,
    start: int,
    max_lines: int,
    *,
    source: str,
    first_index: int,
    offset: int,
    errors: ErrorLog,
) -> tuple[SparseBatch, int, int]:
    """Decode the next ``max_lines`` non-blank lines of ``data[start:]``; return (batch, end, lines).

    ``data`` holds whole lines from input byte ``offset`` on and ``first_index`` is the record index
    of the first line taken. The native decoder splits the lines itself (no bytes object per line);
    a stretch it refuses is split here and decoded by ``decode_lines_sparse``, which reports its bad
    lines. Needs the native decoder.
    """
    assert _cdecode is not None, "decode_ndjson_stretch needs the native decoder"
    columns, end, count = _cdecode.decode_ndjson(data, start, max_lines)
    if columns is not None:
        return (
            _native_sparse_batch(columns, count, source, range(first_index, first_index + count)),
            end,
            count,
        )
    # Refused: the same lines the Python way, which reports the bad ones (the native decoder stops
    # at the first it cannot reproduce, so it is not asked again).
    from sigma_arrow.engine.sparse import SparseBatch

    lines, starts = split_lines(bytes(data[start:end]))
    dense = _python_decode_lines(
        lines,
        source=source,
        indices=range(first_index, first_index + len(lines)),
        errors=errors,
        offsets=[offset + start + line_start for line_start in starts],
    )
    return SparseBatch.from_batch(dense), end, len(lines)


def decode_spans_sparse(
    data: bytes | bytearray | memoryview, lengths: np.ndarray, *, source: str
) -> SparseBatch | None:
    """Decode JSON documents laid end to end in ``data`` (int64 ``lengths``) into a SparseBatch.

    No bytes object per document. Row i is document i, its ``__event_index`` i. None when the
    native decoder is not there or refuses one of them: decode them one by one with
    ``decode_lines_sparse``, which reports the bad ones.
    """
    if not native_decode_enabled():
        return None
    columns = _cdecode.decode_spans(data, np.ascontiguousarray(lengths, dtype=np.int64).data)
    if columns is None:
        return None
    return _native_sparse_batch(columns, len(lengths), source, range(len(lengths)))


def _native_sparse_batch(
    columns: Sequence[tuple[str, Any, Any, Any]], n: int, source: str, indices: Sequence[int]
) -> SparseBatch:
    """Wrap the native decoder's sparse column buffers into a SparseBatch (no copy)."""
    from sigma_arrow.engine.sparse import SparseBatch

    dense = _native_batch([], n, source, indices)  # just the reserved columns
    fields = [pa.field(name, pa.string()) for name, _, _, _ in columns]
    parts: list[tuple[np.ndarray | None, pa.Array]] = []
    for _, rows, value_offsets, data in columns:
        count = len(value_offsets) // 4 - 1
        values = pa.StringArray.from_buffers(count, pa.py_buffer(value_offsets), pa.py_buffer(data))
        parts.append((None if rows is None else np.frombuffer(rows, dtype=np.int32), values))
    for field, array in zip(dense.schema, dense.columns, strict=True):
        fields.append(field)
        parts.append((None, array))
    return SparseBatch(pa.schema(fields), parts, n)


def native_decode_enabled() -> bool:
    """Whether ``decode_lines`` tries the native decoder first (built, and not switched off)."""
    return _cdecode is not None and os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")


def _native_batch(
    columns: list[tuple[str, bytes, bytes, bytes | None, int]], n: int, source: str, indices: Sequence[int]
) -> pa.RecordBatch:
    """Wrap the native decoder's column buffers into a batch (no copy)."""
    names = [column[0] for column in columns]
    arrays = [
        pa.StringArray.from_buffers(
            n,
            pa.py_buffer(offsets),
            pa.py_buffer(data),
            None if validity is None else pa.py_buffer(validity),
            null_count,
        )
        for _, offsets, data, validity, null_count in columns
    ]
    if isinstance(indices, range) and indices.step == 1 and len(indices) == n:
        index_array = pa.array(np.arange(indices.start, indices.stop, dtype=np.int64))
    else:
        index_array = _index_array(indices, n)
    return _with_reserved(names, arrays, n, source, index_array)


def split_lines(data: bytes) -> tuple[list[bytes], list[int]]:
    """Non-blank lines of an NDJSON buffer and the byte offset where each starts."""
    lines: list[bytes] = []
    starts: list[int] = []
    position = 0
    for line in data.split(b"\n"):
        if line and not line.isspace():
            lines.append(line)
            starts.append(position)
        position += len(line) + 1
    return lines, starts


def ndjson_to_batch(
    data: bytes, *, source: str, first_index: int, errors: ErrorLog, base_offset: int | None = None
) -> pa.RecordBatch:
    """Decode an NDJSON buffer into one flattened batch (the fast path).

    Every non-blank line is one record: its ``__event_index`` is ``first_index`` plus its position
    among the non-blank lines (a malformed line keeps its position, so indices never shift). A malformed
    line is reported to ``errors`` and skipped; the others still decode. The reported offset is the
    line's record index, or its byte offset ``base_offset + start`` when ``base_offset`` is given.
    """
    lines, starts = split_lines(data)
    indices = range(first_index, first_index + len(lines))
    offsets = None if base_offset is None else [base_offset + s for s in starts]
    return decode_lines(lines, source=source, indices=indices, errors=errors, offsets=offsets)


# ---------------------------------------------------------------- Arrow tables (Parquet, Arrow IPC)

#: Dotted EVTX paths (after struct flattening) → the names ``flatten_record`` gives them.
_EVTX_TABLE_RENAMES = {
    "Event.System.Provider.#attributes.Name": "Provider_Name",
    "Event.System.Provider.#attributes.Guid": "Provider_Guid",
    "Event.System.Provider.#attributes.EventSourceName": "Provider_EventSourceName",
    "Event.System.TimeCreated.#attributes.SystemTime": "SystemTime",
    "Event.System.Execution.#attributes.ProcessID": "ProcessID",
    "Event.System.Execution.#attributes.ThreadID": "ThreadID",
    "Event.System.Security.#attributes.UserID": "UserID",
    "Event.System.Correlation.#attributes.ActivityID": "ActivityID",
    "Event.System.EventID.#text": "EventID",
    "Event.System.EventID.#attributes.Qualifiers": "Qualifiers",
}
_EVTX_TABLE_PREFIXES = ("Event.System.", "Event.EventData.")


def _flatten_struct_columns(names: list[str], arrays: list[pa.Array]) -> tuple[list[str], list[pa.Array]]:
    out_names: list[str] = []
    out_arrays: list[pa.Array] = []
    pending = list(zip(names, arrays, strict=True))
    while pending:
        name, array = pending.pop(0)
        if pa.types.is_struct(array.type):
            children = array.flatten() if isinstance(array, pa.Array) else _flatten_chunked(array)
            struct_type = array.type
            pending[0:0] = [
                (f"{name}.{struct_type.field(i).name}", child) for i, child in enumerate(children)
            ]
        else:
            out_names.append(name)
            out_arrays.append(array)
    return out_names, out_arrays


def _flatten_chunked(array: pa.ChunkedArray) -> list[pa.ChunkedArray]:
    return [
        pa.chunked_array([chunk.flatten()[i] for chunk in array.chunks], array.type.field(i).type)
        for i in range(array.type.num_fields)
    ]


def _evtx_table_name(name: str) -> str:
    if name in _EVTX_TABLE_RENAMES:
        return _EVTX_TABLE_RENAMES[name]
    for prefix in _EVTX_TABLE_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            if "." not in rest:
                return rest
    if name.startswith("Event.UserData."):
        parts = name.split(".")
        if len(parts) == 4 and parts[3] != _ATTRIBUTES:
            return parts[3]
    return name


def flatten_table(table_or_batch: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """Flatten struct columns into dotted names, vectorised; other columns keep their own types.

    Structs of an EVTX layout (``Event.System...``) are renamed as ``flatten_record`` names them;
    an all-null ``Event.EventData`` or similar stays a null column. Returns the input's kind.
    """
    names = list(table_or_batch.schema.names)
    if not any(pa.types.is_struct(t) for t in table_or_batch.schema.types):
        return table_or_batch
    arrays = list(table_or_batch.columns)
    flat_names, flat_arrays = _flatten_struct_columns(names, arrays)
    if any(n.startswith("Event.System.") for n in flat_names):
        renamed: list[str] = []
        for name in flat_names:
            new = _evtx_table_name(name)
            renamed.append(name if new in renamed or (new != name and new in flat_names) else new)
        flat_names = renamed
        keep = [i for i, n in enumerate(flat_names) if not n.startswith("Event.#attributes")]
        flat_names = [flat_names[i] for i in keep]
        flat_arrays = [flat_arrays[i] for i in keep]
    if isinstance(table_or_batch, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(flat_arrays, names=flat_names)
    return pa.Table.from_arrays(flat_arrays, names=flat_names)


def text_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast every non-reserved scalar column to its text form (strings), lists/structs to JSON text."""
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in RESERVED_COLUMNS or pa.types.is_string(column.type):
            arrays.append(column)
        elif pa.types.is_boolean(column.type) or pa.types.is_integer(column.type):
            arrays.append(pc.cast(column, pa.string()))
        else:
            arrays.append(_string_array([_text(v) for v in column.to_pylist()]))
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
