"""Match records as JSON (Kafka message values with a dedupe key, JSONL lines) and the durable file.

The records are byte-compatible with ``sigma_arrow.sinks`` JSONL (same field order, same encoder, null
event fields left out). The job keeps its own file writer because a resumable job appends (the shared
sinks truncate) and must fsync before committing offsets.

Serialisation is columnar where it matters: each rule's metadata is encoded once per batch, and each
matched event once however many rules it matched, reading only its non-null fields from the event
batch (EVTX batches have hundreds of sparse columns; a struct → dict per match would touch them all);
with the native encoder built, straight from the Arrow buffers (``sinks.text.encode_event_objects``).
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa

from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.schema import RESERVED_COLUMNS
from sigma_arrow.sinks.base import dumps
from sigma_arrow.sinks.text import encode_event_objects


@dataclass(slots=True)
class MatchSet:
    """The matches of one micro-batch, ready to serialise."""

    #: Match records (no ``event`` column; ``event_index`` is the Kafka offset).
    records: pa.RecordBatch
    #: Per match: the row of ``events`` it matched.
    rows: np.ndarray
    #: Per match: the event's position within its message.
    sub_index: np.ndarray
    #: The decoded event batch, or None to leave events out (``--no-event``).
    events: pa.RecordBatch | SparseBatch | None

    def __len__(self) -> int:
        return int(self.records.num_rows)

    def payloads(self) -> list[bytes]:
        """One compact JSON object per match record, in the match schema's field order."""
        records = self.records
        rule_ids = records.column("rule_id").to_pylist()
        heads: dict[str, bytes] = {}
        titles = records.column("rule_title")
        levels = records.column("rule_level")
        tags = records.column("rule_tags")
        for position, rule_id in enumerate(rule_ids):
            if rule_id not in heads:
                head = {
                    "rule_id": rule_id,
                    "rule_title": titles[position].as_py(),
                    "rule_level": levels[position].as_py(),
                    "rule_tags": tags[position].as_py(),
                }
                heads[rule_id] = dumps(head)[:-1]
        sources = records.column("source").to_pylist()
        offsets = records.column("event_index").to_pylist()
        timestamps = records.column("timestamp").to_pylist()
        events = self._event_json()
        # Sources (a few partitions) and timestamps (often shared) are encoded once per value.
        source_json = {source: dumps(source) for source in set(sources)}
        timestamp_json: dict[Any, bytes] = {}
        out = []
        for position, rule_id in enumerate(rule_ids):
            timestamp = timestamps[position]
            stamp = timestamp_json.get(timestamp)
            if stamp is None:
                stamp = timestamp_json[timestamp] = dumps(timestamp)
            start = b'%b,"source":%b,"event_index":%d,"timestamp":%b' % (
                heads[rule_id],
                source_json[sources[position]],
                offsets[position],
                stamp,
            )
            out.append(start + b"}" if events is None else b'%b,"event":%b}' % (start, events[position]))
        return out

    def message_keys(self) -> list[bytes]:
        """Per match: ``rule_id:topic:partition:offset:sub``, unique per (rule, event)."""
        records = self.records
        return [
            f"{rule_id}:{source}:{offset}:{sub}".encode()
            for rule_id, source, offset, sub in zip(
                records.column("rule_id").to_pylist(),
                records.column("source").to_pylist(),
                records.column("event_index").to_pylist(),
                self.sub_index.tolist(),
                strict=True,
            )
        ]

    def _event_json(self) -> list[bytes] | None:
        """Per match: its event's non-null fields as a JSON object (each distinct event encoded once)."""
        if self.events is None:
            return None
        events, rows = self.events, self.rows
        if isinstance(events, SparseBatch):  # only the matched rows become dense
            events, rows = events.dense_rows(rows)
        native = encode_event_objects(events, rows)
        if native is not None:
            return native
        unique, match_to_unique = np.unique(rows, return_inverse=True)
        taken = events.take(pa.array(unique, pa.int64()))
        fields: list[dict[str, Any]] = [{} for _ in range(len(unique))]
        for name, column in zip(taken.schema.names, taken.columns, strict=True):
            if name in RESERVED_COLUMNS or column.null_count == len(column):
                continue
            if column.null_count == 0:
                for target, value in zip(fields, column.to_pylist(), strict=True):
                    target[name] = value
                continue
            present = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
            values = column.take(pa.array(present, pa.int64())).to_pylist()
            for where, value in zip(present.tolist(), values, strict=True):
                fields[where][name] = value
        encoded = [dumps(event) for event in fields]
        return [encoded[i] for i in match_to_unique.tolist()]


class DurableJsonl:
    """Appends match records to a JSONL file; ``sync`` makes them durable before offsets are committed.

    The file is opened for appending so reruns of a resumable job add to it. A torn last line (a run
    killed mid-write) is cut off first: its batch was never committed, so the rerun writes it again.
    ``-`` writes to stdout (flushed, not fsynced).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._owned = path != "-"
        if self._owned:
            self._file: IO[bytes] = open(path, "ab+")  # noqa: SIM115 - lives as long as the job
            _cut_torn_tail(self._file)
        else:
            self._file = sys.stdout.buffer

    def write(self, payloads: list[bytes]) -> None:
        """Append JSON lines."""
        if payloads:
            self._file.write(b"\n".join(payloads) + b"\n")

    def sync(self) -> None:
        """Flush and fsync (called before the offsets of the written batch are committed)."""
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:  # stdout may be a pipe or terminal: flushed is as durable as it gets
            if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EROFS):
                raise

    def close(self) -> None:
        """Sync and close."""
        if not self._file.closed:
            self.sync()
            if self._owned:
                self._file.close()


def _cut_torn_tail(file: IO[bytes]) -> None:
    """Truncate the file after its last newline (no-op when it ends with one or is empty)."""
    size = file.seek(0, os.SEEK_END)
    if size == 0:
        return
    chunk = min(size, 1 << 20)
    while True:
        file.seek(size - chunk)
        tail = file.read(chunk)
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut >= 0 or chunk == size:
            file.truncate(size - chunk + cut + 1)
            file.seek(0, os.SEEK_END)
            return
        chunk = min(size, chunk * 4)
