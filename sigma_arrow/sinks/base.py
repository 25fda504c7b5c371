"""The Sink interface, the event encoding policy every sink shares, and ``open_sink``.

Event policy: the match record's ``event`` is a struct whose fields differ from batch to batch (each
batch has the columns its own events have). Text sinks write it as a JSON object (JSONL, JSON); the
columnar and tabular sinks (Parquet, Arrow, CSV) write it as one string column holding that JSON
object, so their schema stays fixed for the whole run. Null event fields are left out of the object.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import IO, Any, Protocol, cast

import orjson
import pyarrow as pa

from compiler.errors import InputError

#: ``--output-format`` values.
OUTPUT_FORMATS = ("jsonl", "json", "csv", "parquet", "arrow")

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}


class Sink(Protocol):
    """Writes match record batches (``sigma_arrow.schema.match_schema``) somewhere."""

    def write(self, batch: pa.RecordBatch) -> None:
        """Write one batch of match records."""
        ...

    def close(self) -> None:
        """Flush and close (a sink that got no batch still leaves a valid, empty output)."""
        ...


def format_for_path(path: str | None) -> str:
    """Return the output format a path's extension names (``jsonl`` for stdout or an unknown extension)."""
    if path is None or path == "-":
        return "jsonl"
    _, extension = os.path.splitext(path.lower())
    return _EXTENSIONS.get(extension, "jsonl")


def open_sink(path: str | None, format: str | None = None, *, include_event: bool = True) -> Sink:
    """Open a sink writing to ``path`` (``None`` or ``-``: stdout) in ``format`` (default: by extension).

    ``include_event`` fixes the columns of an output that gets no match at all (CSV, Parquet, Arrow).
    """
    chosen = format or format_for_path(path)
    if chosen not in OUTPUT_FORMATS:
        raise InputError(f"unknown output format {chosen!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    target = None if path in (None, "-") else path
    if chosen in ("parquet", "arrow"):
        from sigma_arrow.sinks.columnar import ArrowSink, ParquetSink

        if target is None:
            raise InputError(f"{chosen} output needs a file (-o PATH)")
        if chosen == "parquet":
            return ParquetSink(target, include_event=include_event)
        return ArrowSink(target, stream=target.lower().endswith(".arrows"), include_event=include_event)
    from sigma_arrow.sinks.text import CsvSink, JsonArraySink, JsonLinesSink

    if chosen == "jsonl":
        return JsonLinesSink(target)
    if chosen == "json":
        return JsonArraySink(target)
    return CsvSink(target, include_event=include_event)


# ---------------------------------------------------------------- shared helpers


def open_binary(path: str | None) -> tuple[IO[bytes], bool]:
    """(stream, owned): a file opened for writing, or stdout (not owned, never closed)."""
    if path is None:
        return cast(IO[bytes], sys.stdout.buffer), False
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    return open(path, "wb"), True


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes for any value a match record can hold."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def compact_event(event: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return an event object without its null fields."""
    if event is None:
        return None
    return {k: v for k, v in event.items() if v is not None}


def records(batch: pa.RecordBatch) -> Iterator[dict[str, Any]]:
    """Match records as dicts, ``event`` (when present) without null fields."""
    has_event = "event" in batch.schema.names
    for row in batch.to_pylist():
        if has_event:
            row["event"] = compact_event(row["event"])
        yield row


def event_json_column(batch: pa.RecordBatch) -> pa.Array:
    """Encode the ``event`` struct as a string column of compact JSON objects (null fields left out).

    An ``event`` that is already text (match records read back from Parquet/Arrow/CSV) is kept.
    """
    from sigma_arrow.sinks.text import event_json_array  # the native encoder, when built

    column = batch.column("event")
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if (
        pa.types.is_string(column.type)
        or pa.types.is_large_string(column.type)
        or pa.types.is_string_view(column.type)
    ):
        text: pa.Array = column.cast(pa.string())
        return text
    native = event_json_array(column)
    if native is not None:
        return native
    events = column.to_pylist()
    return pa.array(
        [None if e is None else dumps(compact_event(e)).decode() for e in events], type=pa.string()
    )
