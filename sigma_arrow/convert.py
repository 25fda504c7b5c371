"""EVTX / JSON / NDJSON (any readable input) -> a zstd Parquet archive, streaming, hive-partitioned.

Events are read with the same readers and flattening ``scan`` uses, so the archive holds exactly the
columns ``scan`` would see: every event field is a string column (the flattening type policy). Each
row also keeps where it came from: the columns ``__source`` (the original file) and ``__event_index``
(the record's position in it). The Parquet reader reports those instead of the archive file's own path
and row number, so a match found in the archive points back to the original EVTX record.

Partitioning (``partition_by``): each key is an event field (``Channel``, ``EventID``) or ``date``
(``YYYY-MM-DD`` of the event's timestamp, ``sigma_arrow.schema.TIMESTAMP_FIELDS``). Files go to
``DIR/Channel=Security/EventID=4688/part-00001.parquet`` (values URL-encoded, a missing value is
``__HIVE_DEFAULT_PARTITION__``). The key columns also stay inside the files, so a file read on its own is
complete; ``date`` is marked in each file's metadata as derived (not an event field).

Varying schemas: events of different kinds have different fields. Rows are buffered per partition up to
one row group; a partition's file is opened with the union of the columns buffered so far, and when a
later row group brings a new column the file is closed and the next part file starts with the widened
schema (earlier columns first). So the conversion streams (memory is about one row group per open
partition, bounded by ``max_buffered_rows`` overall) and no row is ever dropped for its schema; the
Parquet reader reads files with different schemas as one archive.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from compiler.errors import InputError
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers.parquet import DERIVED_KEYS_METADATA, HIVE_NULL
from sigma_arrow.schema import INDEX_COLUMN, RESERVED_COLUMNS, SOURCE_COLUMN, TIMESTAMP_FIELDS

#: Partition key computed from the event's timestamp rather than read from a field.
DATE_KEY = "date"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"


@dataclass
class ConvertStats:
    """What a conversion wrote."""

    inputs: int = 0
    events: int = 0
    files: int = 0
    row_groups: int = 0
    bytes: int = 0
    partitions: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for stderr."""
        rate = self.events / self.seconds if self.seconds else 0.0
        return (
            f"converted {self.events:,} events from {self.inputs:,} inputs into {self.files:,} Parquet files "
            f"({self.bytes / 1e6:,.1f} MB, {len(self.partitions):,} partitions) in {self.seconds:.1f} s "
            f"({rate:,.0f} events/s)"
        )


def partition_values(batch: pa.RecordBatch, key: str) -> pa.Array:
    """Return the text value of partition key ``key`` for every row (null where the event has none)."""
    if key == DATE_KEY and DATE_KEY not in batch.schema.names:
        stamp = pa.nulls(batch.num_rows, pa.string())
        for name in TIMESTAMP_FIELDS:
            if name in batch.schema.names:
                stamp = pc.coalesce(stamp, _text(batch.column(name)))
        dated = pc.match_substring_regex(stamp, _DATE)
        return pc.if_else(dated, pc.utf8_slice_codeunits(stamp, 0, 10), pa.scalar(None, pa.string()))
    if key not in batch.schema.names:
        return pa.nulls(batch.num_rows, pa.string())
    return _text(batch.column(key))


def _text(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column if pa.types.is_string(column.type) else column.cast(pa.string())


def _segment(key: str, value: str | None) -> str:
    text = HIVE_NULL if value is None else quote(value, safe="")
    return f"{quote(key, safe='')}={text}"


def split_by_partition(batch: pa.RecordBatch, keys: Sequence[str]) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(relative directory, rows) for every partition present in ``batch`` (row order kept)."""
    if not keys:
        yield "", batch
        return
    codes = np.zeros(batch.num_rows, dtype=np.int64)
    dictionaries = []
    for key in keys:
        encoded = pc.dictionary_encode(partition_values(batch, key), null_encoding="encode")
        dictionaries.append(encoded.dictionary.to_pylist())
        codes = codes * (len(encoded.dictionary) + 1) + encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends, strict=True):
        rows = order[start:end]
        part = batch.take(pa.array(rows))
        first = int(rows[0])
        segments = [_segment(key, partition_values(batch.slice(first, 1), key)[0].as_py()) for key in keys]
        yield "/".join(segments), part


@dataclass
class _Partition:
    directory: str
    buffered: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None


class ArchiveWriter:
    """Writes event batches into a (partitioned) zstd Parquet archive; use as a context manager."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        partition_by: Sequence[str] = (),
        row_group_size: int = 65_536,
        max_buffered_rows: int = 262_144,
        compression: str = "zstd",
        compression_level: int | None = None,
        append: bool = False,
        stats: ConvertStats | None = None,
    ) -> None:
        self.root = Path(out_dir)
        if self.root.exists() and not append and any(self.root.iterdir()):
            raise InputError(f"{self.root} is not empty (use --append to add files to an archive)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.partition_by = tuple(partition_by)
        self.row_group_size = row_group_size
        self.max_buffered_rows = max(max_buffered_rows, row_group_size)
        self.compression = compression
        self.compression_level = compression_level
        self.stats = stats if stats is not None else ConvertStats()
        self._partitions: dict[str, _Partition] = {}
        self._buffered = 0
        self._sequence = 0
        self._run = uuid.uuid4().hex[:8] if append else ""
        derived = [k for k in self.partition_by if k == DATE_KEY]
        self._metadata = {b"sigma_arrow.partition_by": ",".join(self.partition_by).encode()}
        if derived:
            self._metadata[DERIVED_KEYS_METADATA] = ",".join(derived).encode()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, batch: pa.RecordBatch) -> None:
        """Add one batch of flattened events (with ``__source``/``__event_index``)."""
        if batch.num_rows == 0:
            return
        self.stats.events += batch.num_rows
        for directory, rows in split_by_partition(batch, self.partition_by):
            rows = _without_null_columns(rows)
            part = self._partitions.get(directory)
            if part is None:
                part = self._partitions[directory] = _Partition(directory)
                self.stats.partitions.add(directory)
            part.buffered.append(rows)
            part.rows += rows.num_rows
            self._buffered += rows.num_rows
            if part.rows >= self.row_group_size:
                self._flush(part, whole_row_groups=True)
        while self._buffered > self.max_buffered_rows:
            self._flush(max(self._partitions.values(), key=lambda p: p.rows))

    def close(self) -> None:
        """Flush every partition and close every file."""
        for part in self._partitions.values():
            self._flush(part)
            self._close_file(part)

    def _flush(self, part: _Partition, whole_row_groups: bool = False) -> None:
        """Write a partition's buffered rows (``whole_row_groups``: full row groups only, keep the rest)."""
        if not part.buffered:
            return
        buffered_schema = _union([b.schema for b in part.buffered])
        try:  # missing columns become nulls (in C++, much faster than conforming batch by batch)
            table = pa.concat_tables(
                [pa.Table.from_batches([b]) for b in part.buffered], promote_options="permissive"
            )
            table = _conform_table(table, buffered_schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # types that only the text form reconciles
            table = pa.Table.from_batches([_conform(b, buffered_schema) for b in part.buffered])
        self._buffered -= part.rows
        part.buffered, part.rows = [], 0
        if whole_row_groups:
            full = table.num_rows - table.num_rows % self.row_group_size
            rest = table.slice(full)
            if rest.num_rows:
                part.buffered = rest.combine_chunks().to_batches()
                part.rows = rest.num_rows
                self._buffered += rest.num_rows
            table = table.slice(0, full)
            if table.num_rows == 0:
                return
        if part.schema is not None and not set(table.schema.names) <= set(part.schema.names):
            self._close_file(part)  # a new column: the next part file gets the widened schema
            part.schema = _union([part.schema, table.schema])
        if part.writer is None:
            part.schema = _union([part.schema, table.schema]) if part.schema is not None else table.schema
            self._open_file(part)
        assert part.writer is not None and part.schema is not None
        # One chunk per column: small input batches (one per EVTX file) would otherwise make the
        # writer handle thousands of tiny chunks per column.
        table = _conform_table(table, part.schema).combine_chunks()
        part.writer.write_table(table, row_group_size=self.row_group_size)
        self.stats.row_groups += -(-table.num_rows // self.row_group_size)

    def _open_file(self, part: _Partition) -> None:
        assert part.schema is not None
        self._sequence += 1
        directory = self.root / part.directory if part.directory else self.root
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{self._run + '-' if self._run else ''}{self._sequence:05d}.parquet"
        schema = part.schema.with_metadata(self._metadata)
        part.schema = schema
        part.writer = pq.ParquetWriter(
            directory / name,
            schema,
            compression=self.compression,
            compression_level=self.compression_level,
            write_statistics=True,
        )
        self.stats.files += 1

    def _close_file(self, part: _Partition) -> None:
        if part.writer is not None:
            path = part.writer.where
            part.writer.close()
            part.writer = None
            self.stats.bytes += os.path.getsize(path)


def _without_null_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Drop event columns that are null in every row (a missing field reads as null anyway)."""
    keep = [
        i
        for i, (name, column) in enumerate(zip(batch.schema.names, batch.columns, strict=True))
        if name in RESERVED_COLUMNS or column.null_count < batch.num_rows
    ]
    return batch if len(keep) == batch.num_columns else batch.select(keep)


def _union(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """Union of event schemas: names in order of first appearance, reserved columns last."""
    fields: dict[str, pa.Field] = {}
    for schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f.with_nullable(True)
            elif fields[f.name].type != f.type:
                fields[f.name] = pa.field(f.name, pa.string())  # mixed types: text form
    ordered = [f for name, f in fields.items() if name not in RESERVED_COLUMNS]
    ordered += [fields[name] for name in (SOURCE_COLUMN, INDEX_COLUMN) if name in fields]
    return pa.schema(ordered)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for f in schema:
        if f.name in batch.schema.names:
            column = batch.column(f.name)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            arrays.append(column if column.type == f.type else column.cast(f.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(list(schema)))


def _conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in table.schema.names:
            column = table.column(f.name)
            columns.append(column if column.type == f.type else column.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def read_events(
    inputs: Sequence[str], *, format: str = "auto", batch_size: int = 65_536, errors: ErrorLog
) -> Iterator[pa.RecordBatch]:
    """Flattened event batches from every input, through the readers ``scan`` uses."""
    from sigma_arrow.readers.registry import expand_inputs, reader_for

    for path in expand_inputs(inputs, errors):
        reader = reader_for(path, format)
        yield from reader.read(path, batch_size=batch_size, errors=errors)


def convert(
    inputs: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    partition_by: Sequence[str] = (),
    format: str = "auto",
    batch_size: int = 65_536,
    row_group_size: int = 65_536,
    errors: ErrorLog | None = None,
    append: bool = False,
    compression: str = "zstd",
    progress: Any = None,
) -> ConvertStats:
    """Convert inputs (EVTX, JSON, NDJSON, ...) to a Parquet archive under ``out_dir``; returns its stats."""
    errors = errors if errors is not None else ErrorLog()
    stats = ConvertStats()
    started = time.perf_counter()
    sources: set[str] = set()
    with ArchiveWriter(
        out_dir,
        partition_by=partition_by,
        row_group_size=row_group_size,
        append=append,
        compression=compression,
        stats=stats,
    ) as writer:
        for batch in read_events(inputs, format=format, batch_size=batch_size, errors=errors):
            if SOURCE_COLUMN in batch.schema.names and batch.num_rows:
                sources.update(pc.unique(batch.column(SOURCE_COLUMN)).to_pylist())
            writer.write(batch)
            if progress is not None:
                progress(batch.num_rows)
    stats.inputs = len(sources)
    stats.seconds = time.perf_counter() - started
    return stats
