"""Match records as Kafka messages (JSON value + dedupe key) and the durable JSONL file of a job."""

from __future__ import annotations

import errno
import os
import sys
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa


def match_messages(matches: pa.RecordBatch, sub_index: np.ndarray) -> list[tuple[bytes, bytes]]:
    """(key, JSON value) per match record; the key ``rule_id:topic:partition:offset:sub`` is unique.

    ``sub`` is the event's position within its message (0 unless the message held several events), so
    a consumer of the output topic can drop the duplicates a crash or rebalance may cause by key.
    """
    records = matches.to_pylist()
    messages = []
    for record, sub in zip(records, sub_index.tolist(), strict=True):
        key = f"{record['rule_id']}:{record['source']}:{record['event_index']}:{sub}".encode()
        messages.append((key, serialise_match(record)))
    return messages


def serialise_match(record: dict[str, Any]) -> bytes:
    """One match record as compact JSON; null event fields are left out like the file sinks do."""
    event = record.get("event")
    if isinstance(event, dict):
        record = {**record, "event": {name: value for name, value in event.items() if value is not None}}
    return orjson.dumps(record)


class DurableJsonl:
    """Appends match records to a JSONL file; ``sync`` makes them durable before offsets are committed.

    The file is opened for appending so reruns of a resumable job add to it. A torn last line (a run
    killed mid-write) is cut off first: its batch was never committed, so the rerun writes it again.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._owned = path != "-"
        if self._owned:
            self._file: IO[bytes] = open(path, "ab+")  # noqa: SIM115 - lives as long as the job
            _cut_torn_tail(self._file)
        else:
            self._file = sys.stdout.buffer

    def write(self, matches: pa.RecordBatch) -> int:
        """Append match records; returns how many."""
        if matches.num_rows == 0:
            return 0
        self._file.write(b"".join(serialise_match(r) + b"\n" for r in matches.to_pylist()))
        return matches.num_rows

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
