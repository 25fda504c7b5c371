"""Text sinks: JSON Lines (the default), a JSON array, and CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pyarrow as pa

from sigma_arrow.gc_pause import gc_paused
from sigma_arrow.schema import MATCH_FIELDS
from sigma_arrow.sinks.base import dumps, event_json_column, open_binary, records


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
        parts = []
        for row in records(batch):
            parts.append((b",\n" if self.count else b"\n") + dumps(row))
            self.count += 1
        self.stream.write(b"".join(parts))

    def close(self) -> None:
        """Close the array and flush."""
        self.stream.write(b"\n]\n" if self.count else b"]\n")
        self.stream.flush()
        if self.owned:
            self.stream.close()


#: CSV columns: the match fields, then ``event`` as JSON text (when events are included).
CSV_COLUMNS = [f.name for f in MATCH_FIELDS]


class CsvSink:
    """CSV with a header; ``rule_tags`` joined by ``;``, ``event`` as one JSON text column."""

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
        values = {name: batch.column(name).to_pylist() for name in CSV_COLUMNS}
        if self.with_event:
            values["event"] = event_json_column(batch).to_pylist()
        for i in range(batch.num_rows):
            row = []
            for name in columns:
                value = values[name][i]
                if name == "rule_tags":
                    value = ";".join(value or [])
                row.append("" if value is None else value)
            writer.writerow(row)
        self.stream.write(text.getvalue().encode())

    def close(self) -> None:
        """Write the header if nothing was written, flush and close."""
        if not self.header_written:
            columns = CSV_COLUMNS + (["event"] if self.include_event else [])
            self.stream.write((",".join(columns) + "\n").encode())
        self.stream.flush()
        if self.owned:
            self.stream.close()


def encode_jsonl(batch: pa.RecordBatch) -> bytes:
    """Match records as JSON Lines (what ``JsonLinesSink`` writes; scan workers encode with it too).

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
        for position, value in zip(positions, child.filter(valid).to_pylist(), strict=True):
            events[position][column.name] = value
    for row, values in zip(rows, events, strict=True):
        row["event"] = values
    return b"".join(dumps(row) + b"\n" for row in rows)
