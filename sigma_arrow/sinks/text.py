"""Text sinks: JSON Lines (the default), a JSON array, and CSV; and the JSON Lines encoder.

Match records are encoded by a native encoder (``sigma_arrow._cencode``) straight from the Arrow
buffers when it is built; ``encode_jsonl_python`` is the reference it must equal byte for byte (and
the fallback: ``SIGMA_ARROW_PURE_PYTHON_ENCODE=1``, or a layout only Python handles).
"""

from __future__ import annotations

import csv
import io
import os
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sigma_arrow.gc_pause import gc_paused
from sigma_arrow.schema import MATCH_FIELDS, event_columns
from sigma_arrow.sinks.base import dumps, event_json_column, open_binary, records

if TYPE_CHECKING:
    from sigma_arrow.engine.sparse import SparseBatch

try:  # the native encoder (setup.py builds it when a C compiler is there); else all is Python
    from sigma_arrow import _cencode
except ImportError:  # pragma: no cover - depends on the build
    _cencode = None  # type: ignore[assignment]

#: Set to ``1`` to encode JSON Lines in Python even when the native encoder is built.
PURE_PYTHON_ENV = "SIGMA_ARROW_PURE_PYTHON_ENCODE"


class JsonLinesSink:
    """One JSON object per match per line; ``event`` is an object without null fields."""

    def __init__(self, path: str | None = None) -> None:
        self.stream, self.owned = open_binary(path)

    def write(self, batch: pa.RecordBatch) -> None:
        """Write one batch of match records."""
        if batch.num_rows:
            self.stream.write(encode_jsonl(batch))

    def close(self) -> None:
        """Flush (and close the file, not stdout)."""
        self.stream.flush()
        if self.owned:
            self.stream.close()


class JsonArraySink:
    """One JSON array holding every match record (``[]`` when there is none)."""

    def __init__(self, path: str | None = None) -> None:
        self.stream, self.owned = open_binary(path)
        self.count = 0
        self.stream.write(b"[")

    def write(self, batch: pa.RecordBatch) -> None:
        """Write one batch of match records."""
        if not batch.num_rows:
            return
        # The JSON Lines of the batch are its array items: JSON text holds no raw newline.
        items = encode_jsonl(batch)[:-1].replace(b"\n", b",\n")
        self.stream.write((b",\n" if self.count else b"\n") + items)
        self.count += batch.num_rows

    def close(self) -> None:
        """Close the array and flush."""
        self.stream.write(b"\n]\n" if self.count else b"]\n")
        self.stream.flush()
        if self.owned:
            self.stream.close()


#: CSV columns: the match fields, then ``event`` as JSON text (when events are included).
CSV_COLUMNS = [f.name for f in MATCH_FIELDS]

#: Separator of the ``rule_tags`` items in a CSV cell.
TAG_SEPARATOR = ";"


class CsvSink:
    """CSV with a header; ``rule_tags`` joined by ``;``, ``event`` as one JSON text column.

    CSV has no null: a null value is an empty cell, and a null tag an empty item between its
    neighbours (``["a", null, "b"]`` is ``a;;b``), where JSON Lines writes ``null``.
    """

    def __init__(self, path: str | None = None, *, include_event: bool = True) -> None:
        self.stream, self.owned = open_binary(path)
        self.header_written = False
        self.include_event = include_event
        self.with_event: bool | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Write one batch of match records."""
        if self.with_event is None:
            self.with_event = "event" in batch.schema.names
        columns = CSV_COLUMNS + (["event"] if self.with_event else [])
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if not self.header_written:
            writer.writerow(columns)
            self.header_written = True
        arrays = [csv_column(batch, name) for name in columns]
        cells = [csv_cells(array, name, batch.num_rows) for array, name in zip(arrays, columns, strict=True)]
        if not any(_holds_carriage_return(array) for array in arrays):
            writer.writerows(zip(*cells, strict=True))
        else:
            # csv quotes a field holding a character of the line terminator ("\n") but not a lone
            # "\r", which readers take for a line end: every field of such a row is quoted.
            quoted = csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_ALL)
            for row in zip(*cells, strict=True):
                carriage_return = any(isinstance(cell, str) and "\r" in cell for cell in row)
                (quoted if carriage_return else writer).writerow(row)
        self.stream.write(text.getvalue().encode())

    def close(self) -> None:
        """Write the header if nothing was written, flush and close."""
        if not self.header_written:
            columns = CSV_COLUMNS + (["event"] if self.include_event else [])
            self.stream.write((",".join(columns) + "\n").encode())
        self.stream.flush()
        if self.owned:
            self.stream.close()


def csv_column(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    """Return the column CSV writes as ``name`` (``event``: JSON text); None when the batch lacks it."""
    if name not in batch.schema.names:
        return None
    if name == "event":
        return event_json_column(batch)
    column: pa.Array = batch.column(name)
    return column


def csv_cells(array: pa.Array | None, name: str, count: int) -> list[Any]:
    """Return the CSV cells of a column: an empty cell for a null value (all empty without a column)."""
    if array is None:
        return [""] * count
    values = array.to_pylist()
    if name == "rule_tags":
        return [tags_text(value) for value in values]
    return ["" if value is None else value for value in values]


def tags_text(tags: Any) -> str:
    """Join ``rule_tags`` into one CSV cell by ``;`` (a null tag: an empty item; a null list: empty)."""
    if tags is None:
        return ""
    if isinstance(tags, str):
        return tags
    return TAG_SEPARATOR.join("" if tag is None else str(tag) for tag in tags)


def _holds_carriage_return(array: pa.Array | None) -> bool:
    """Whether a string in ``array`` (or in its lists) holds a carriage return."""
    if array is None:
        return False
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        array = array.flatten()
    if pa.types.is_string_view(array.type):
        array = array.cast(pa.large_string())
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return False
    return bool(pc.any(pc.match_substring(array, "\r")).as_py())


@overload
def encode_jsonl(batch: pa.RecordBatch) -> bytes: ...
@overload
def encode_jsonl(batch: pa.RecordBatch, fd: int) -> int: ...
def encode_jsonl(batch: pa.RecordBatch, fd: int | None = None) -> bytes | int:
    """Match records as JSON Lines (what ``JsonLinesSink`` writes; scan workers encode with it too).

    The native encoder (``sigma_arrow._cencode``) writes the lines straight from the Arrow buffers;
    without it, or with ``SIGMA_ARROW_PURE_PYTHON_ENCODE=1``, ``encode_jsonl_python`` does: both
    give the same bytes. ``fd``: the lines are written to this file descriptor instead (the native
    encoder writes them as it makes them) and the number of bytes written is returned.
    """
    if native_encode_enabled():
        fields = native_fields(batch)
        if fields is not None:
            return _native_encode(batch.num_rows, fields, fd)
    return _written(encode_jsonl_python(batch), fd)


def _native_encode(rows: int, fields: list[NativeField], fd: int | None) -> bytes | int:
    """``_cencode.encode`` of top-level fields (null ones as null), to ``fd`` when given."""
    if fd is None:
        return _cencode.encode(rows, fields, False)
    return _cencode.encode(rows, fields, False, None, -1, fd)


def _written(text: bytes, fd: int | None) -> bytes | int:
    """``text``, or with ``fd`` its length once all of it is written there."""
    if fd is None:
        return text
    view = memoryview(text)
    while view:
        view = view[os.write(fd, view) :]
    return len(text)


@overload
def encode_jsonl_events(
    records: pa.RecordBatch, events: pa.RecordBatch | SparseBatch, rows: Any
) -> bytes: ...
@overload
def encode_jsonl_events(
    records: pa.RecordBatch, events: pa.RecordBatch | SparseBatch, rows: Any, fd: int
) -> int: ...
def encode_jsonl_events(
    records: pa.RecordBatch, events: pa.RecordBatch | SparseBatch, rows: Any, fd: int | None = None
) -> bytes | int:
    """``encode_jsonl`` of ``records`` plus an ``event`` column holding row ``rows[i]`` of ``events``.

    The bytes of ``encode_jsonl(Engine.matches(...))``, without building the event struct (a take of
    every one of the hundreds of event columns): the native encoder reads each event where it is
    (a sparse batch's columns too), once however many rules it matched. ``records`` has no
    ``event`` column; ``events`` is the evaluated batch (its reserved columns are not event fields).
    ``fd``: as for ``encode_jsonl``.
    """
    positions = np.ascontiguousarray(rows, dtype=np.int64)
    if native_encode_enabled() and "event" not in records.schema.names:
        fields = native_fields(records)
        names = event_columns(events.schema)
        if fields is not None and len(set(names)) == len(names):
            children = _event_children(events, names, np.unique(positions))
            fields.append((b'"event":', _STRUCT, 0, None, positions, events.num_rows, children))
            return _native_encode(records.num_rows, fields, fd)
    from sigma_arrow.engine.core import event_struct

    if not isinstance(events, pa.RecordBatch):  # a SparseBatch: its matched rows made dense
        events, positions = events.dense_rows(positions)
    event = event_struct(events, pa.array(positions, type=pa.int64()))
    return _written(encode_jsonl(records.append_column(pa.field("event", event.type), event)), fd)


def encode_event_objects(events: pa.RecordBatch | SparseBatch, rows: Any) -> list[bytes] | None:
    """Per row in ``rows``: the event's non-null fields as a compact JSON object (None: not native).

    What ``dumps`` writes for a dict of the event's non-null fields in column order (reserved columns
    left out), as the Kafka job's messages hold it. None when the native encoder is off or the
    layout is one only Python handles (duplicate column names).
    """
    names = event_columns(events.schema)
    if not native_encode_enabled() or len(set(names)) != len(names):
        return None
    positions = np.ascontiguousarray(rows, dtype=np.int64)
    children = _event_children(events, names, np.unique(positions))
    text = _cencode.encode(len(positions), children, True, positions, events.num_rows)
    return text.split(b"\n")[:-1]


def event_json_array(event: pa.Array) -> pa.Array | None:
    """Encode the ``event`` struct as a string column of compact JSON objects without null fields.

    What ``sinks.base.event_json_column`` returns, natively (None: the native encoder is off, or an
    event is null, or the layout is one only Python handles).
    """
    if not native_encode_enabled() or not pa.types.is_struct(event.type) or event.null_count:
        return None
    names = [field.name for field in event.type]
    count = len(event)
    if len(set(names)) != len(names):
        return None
    children = [
        _native_field(dumps(name) + b":", child)
        for name, child in zip(names, event.flatten(), strict=True)
        if child.null_count < count
    ]
    text = _cencode.encode(count, children, True)
    if len(text) >= 1 << 31:  # past a string column's int32 offsets
        return None
    # One object per line: each line is a value (newline included, then trimmed off).
    offsets = np.zeros(count + 1, dtype=np.int32)
    offsets[1:] = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 0x0A) + 1
    lines = pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(text))
    trimmed: pa.Array = pc.utf8_rtrim(lines, characters="\n")
    return trimmed


def _event_children(events: pa.RecordBatch | SparseBatch, names: list[str], wanted: Any) -> list[NativeField]:
    """Describe the event columns that hold a value somewhere (``wanted``: the rows that are read)."""
    count = events.num_rows
    children = []
    read: Any = None  # which rows are read, as a mask (made when a dictionary column needs it)
    for name in names:
        key = dumps(name) + b":"
        if isinstance(events, pa.RecordBatch):
            column = events.column(name)
            if column.null_count < count:
                children.append(_native_field(key, column, wanted))
            continue
        # A SparseBatch column: (the rows holding a value, those values), read as they are.
        if events.null_count(name) == count:
            continue
        set_rows, values = events.sparse_column(name)
        if pa.types.is_dictionary(values.type):
            # Strings kept as a dictionary (a Parquet scan): decode the values of the rows read only.
            if read is None:
                read = np.zeros(count, dtype=bool)
                read[wanted] = True
            set_rows, values = _values_at(set_rows, values, wanted, read)
            if len(values) == values.null_count:
                continue
        if set_rows is None:
            children.append(_native_field(key, values, wanted))
            continue
        field = _native_field(key, values)
        if field[1] in (_STR, _LSTR, _RAW, _LRAW):
            children.append((*field[:6], np.ascontiguousarray(set_rows, dtype=np.int64)))
        else:  # lists of strings: made whole
            children.append(_native_field(key, events.column(name), wanted))
    return children


def _values_at(set_rows: Any, values: pa.Array, wanted: Any, read: Any) -> tuple[Any, pa.Array]:
    """(rows, decoded values) of a sparse dictionary column at the ``wanted`` rows (``read``: as a mask)."""
    if set_rows is None:
        kept = np.asarray(wanted, dtype=np.int64)
        rows = kept
    else:
        kept = np.flatnonzero(read[set_rows])
        rows = set_rows[kept].astype(np.int64)
    return rows, values.take(pa.array(kept, type=pa.int64())).dictionary_decode()


def native_encode_enabled() -> bool:
    """Whether ``encode_jsonl`` uses the native encoder (built, and not switched off)."""
    return _cencode is not None and os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")


#: Native encoder kinds (sigma_arrow/_cencode.c).
_STR, _LSTR, _RAW, _LRAW, _LIST_STR, _NUL, _STRUCT = range(7)

#: A column for the native encoder: (``"name":`` bytes, kind, array offset, validity buffer, offsets
#: buffer, data buffer, extra). Extra: a list<string>'s values as (offset, validity, offsets, data);
#: a STRUCT's fields (then offsets/data may be a take of int64 rows and the fields' row count); a
#: string/raw field of a struct may have the int64 rows its values belong to (a sparse column).
NativeField = tuple[bytes, int, int, Any, Any, Any, Any]


def native_fields(batch: pa.RecordBatch) -> list[NativeField] | None:
    """Describe a match batch's columns to the native encoder (None: a layout only Python handles).

    The top-level fields are written in column order, nulls as ``null``; ``event`` (a struct) as an
    object without its null fields, as ``records`` does. Duplicate names (a dict keeps one) and a
    non-struct ``event`` are left to the Python path.
    """
    names = batch.schema.names
    if len(set(names)) != len(names):
        return None
    fields = []
    for name, column in zip(names, batch.columns, strict=True):
        if name == "event":
            if not pa.types.is_struct(column.type):
                return None
            event = _event_field(column)
            if event is None:
                return None
            fields.append(event)
        else:
            fields.append(_native_field(dumps(name) + b":", column))
    return fields


def _event_field(event: pa.StructArray) -> NativeField | None:
    """Describe the ``event`` struct: its fields that hold a value in some row (others write nothing)."""
    names = [field.name for field in event.type]
    if len(set(names)) != len(names):
        return None
    count = len(event)
    children = [
        _native_field(dumps(name) + b":", child)
        for name, child in zip(names, event.flatten(), strict=True)
        if child.null_count < count
    ]
    return (b'"event":', _STRUCT, event.offset, event.buffers()[0], None, None, children)


def _native_field(key: bytes, array: pa.Array, wanted: Any = None) -> NativeField:
    """Describe one column: strings as buffers, numbers/booleans as Arrow's text, others as orjson's.

    ``wanted``: the only rows that will be read (sorted positions), when not all of them.
    """
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_null(kind) or array.null_count == len(array):
        return (key, _NUL, 0, None, None, None, None)
    if pa.types.is_string_view(kind):
        array = array.cast(pa.large_string())
        kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        # Arrow writes integers in decimal and booleans as true/false, exactly as orjson does.
        array = array.cast(pa.large_string())
        buffers = array.buffers()
        return (key, _LRAW, array.offset, buffers[0], buffers[1], buffers[2], None)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        buffers = array.buffers()
        code = _STR if pa.types.is_string(kind) else _LSTR
        return (key, code, array.offset, buffers[0], buffers[1], buffers[2], None)
    if pa.types.is_list(kind) and pa.types.is_string(kind.value_type):
        values = array.values
        child = values.buffers()
        buffers = array.buffers()
        return (key, _LIST_STR, array.offset, buffers[0], buffers[1], None, (values.offset, *child))
    # Anything else (floats, timestamps, nested values, binary...): each value as orjson writes it.
    if wanted is None:
        texts = [None if v is None else dumps(v) for v in array.to_pylist()]
    else:
        texts = [None] * len(array)
        for position, v in zip(
            wanted.tolist(), array.take(pa.array(wanted, type=pa.int64())).to_pylist(), strict=True
        ):
            texts[position] = None if v is None else dumps(v)
    encoded = pa.array(texts, type=pa.large_binary())
    buffers = encoded.buffers()
    return (key, _LRAW, 0, buffers[0], buffers[1], buffers[2], None)


def encode_jsonl_python(batch: pa.RecordBatch) -> bytes:
    """``encode_jsonl`` in Python (the reference of the native encoder, and its fallback).

    Fast on wide events: each ``event`` object is built from the non-null values of each column
    (null fields are left out), in column order, instead of from every field of every record.
    """
    names = batch.schema.names
    event = batch.column(names.index("event")) if names and names[-1] == "event" else None
    if event is None or not pa.types.is_struct(event.type) or event.null_count:
        return b"".join(dumps(row) + b"\n" for row in records(batch))
    with gc_paused():  # millions of small objects: the cyclic GC would rescan them all the time
        return _encode_events(batch, event)


def _encode_events(batch: pa.RecordBatch, event: Any) -> bytes:
    count = batch.num_rows
    rows = batch.drop_columns(["event"]).to_pylist()
    events: list[dict[str, Any]] = [{} for _ in range(count)]
    for column, child in zip(event.type, event.flatten(), strict=True):
        if child.null_count == count:
            continue
        if child.null_count == 0:
            values = child.to_pylist()
            for target, value in zip(events, values, strict=True):
                target[column.name] = value
            continue
        valid = child.is_valid()
        positions = np.flatnonzero(valid.to_numpy(zero_copy_only=False)).tolist()
        try:
            values = child.filter(valid).to_pylist()
        except pa.ArrowNotImplementedError:  # no filter kernel for the type (string_view)
            values = [value for value in child.to_pylist() if value is not None]
        for position, value in zip(positions, values, strict=True):
            events[position][column.name] = value
    for row, values in zip(rows, events, strict=True):
        row["event"] = values
    return b"".join(dumps(row) + b"\n" for row in rows)
