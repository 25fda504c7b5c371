"""Columnar sinks: Parquet and Arrow IPC, with a fixed schema (``event`` as a JSON string column)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from sigma_arrow.schema import MATCH_FIELDS, match_schema
from sigma_arrow.sinks.base import event_json_column


def output_schema(with_event: bool) -> pa.Schema:
    """Return the schema columnar sinks write: the match fields plus ``event`` as JSON text."""
    return match_schema(pa.string() if with_event else None)


def to_output(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Convert a match batch to the fixed output schema.

    A missing match column is written as nulls; a null in a non-nullable one (``rule_id``) as an
    empty string, as CSV writes it, since the schema cannot hold it.
    """
    arrays = [_match_column(batch, f) for f in MATCH_FIELDS]
    if "event" in schema.names:
        if "event" in batch.schema.names:
            arrays.append(event_json_column(batch))
        else:
            arrays.append(pa.nulls(batch.num_rows, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _match_column(batch: pa.RecordBatch, field: pa.Field) -> pa.Array:
    if field.name in batch.schema.names:
        column = batch.column(field.name).cast(field.type)
    else:
        column = pa.nulls(batch.num_rows, field.type)
    if not field.nullable and column.null_count and pa.types.is_string(field.type):
        column = pc.fill_null(column, pa.scalar("", field.type))
    return column


class _Columnar:
    def __init__(self, path: str, *, include_event: bool = True) -> None:
        self.path = path
        self.include_event = include_event
        self.schema: pa.Schema | None = None
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)

    def _open(self, schema: pa.Schema) -> None:
        raise NotImplementedError

    def _write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def write(self, batch: pa.RecordBatch) -> None:
        """Write one batch of match records."""
        if self.schema is None:
            self.schema = output_schema("event" in batch.schema.names)
            self._open(self.schema)
        if batch.num_rows:
            self._write(to_output(batch, self.schema))


class ParquetSink(_Columnar):
    """Match records as one Parquet file (zstd)."""

    writer: pq.ParquetWriter | None = None

    def _open(self, schema: pa.Schema) -> None:
        self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")

    def _write(self, batch: pa.RecordBatch) -> None:
        assert self.writer is not None
        self.writer.write_batch(batch)

    def close(self) -> None:
        """Finish the file (an empty one with the schema when nothing matched)."""
        if self.writer is None:
            self._open(output_schema(self.include_event))
        assert self.writer is not None
        self.writer.close()


class ArrowSink(_Columnar):
    """Match records as an Arrow IPC file (``stream=True``: the IPC stream format)."""

    def __init__(self, path: str, stream: bool = False, *, include_event: bool = True) -> None:
        super().__init__(path, include_event=include_event)
        self.stream = stream
        self.sink: pa.NativeFile | None = None
        self.writer: ipc.RecordBatchFileWriter | ipc.RecordBatchStreamWriter | None = None

    def _open(self, schema: pa.Schema) -> None:
        self.sink = pa.OSFile(self.path, "wb")
        if self.stream:
            self.writer = ipc.new_stream(self.sink, schema)
        else:
            self.writer = ipc.new_file(self.sink, schema)

    def _write(self, batch: pa.RecordBatch) -> None:
        assert self.writer is not None
        self.writer.write_batch(batch)

    def close(self) -> None:
        """Finish the file (an empty one with the schema when nothing matched)."""
        if self.writer is None:
            self._open(output_schema(self.include_event))
        assert self.writer is not None and self.sink is not None
        self.writer.close()
        self.sink.close()
