"""Kafka message values → one flattened event RecordBatch per micro-batch.

A value is one JSON object, or NDJSON (one object per line): one message may hold several events.
All events of a micro-batch are decoded in one call to ``sigma_arrow.flatten.decode_lines_sparse`` (the
NDJSON fast path: one document per item, no per-message batch building), into a ``SparseBatch``: the
engine's input form, which keeps only the set values of the ~400 mostly-null columns of Windows logs.
Every row keeps the coordinates of its message: ``__source`` is ``topic:partition`` and the match's
``event_index`` is the message offset (all events of a multi-event message share it; ``sub_index`` tells
them apart in output keys). A message that yields no event, or whose lines do not decode, is a failure.
"""

from __future__ import annotations

import operator
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import cast

import numpy as np
import orjson
import pyarrow as pa

from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import decode_lines_sparse, decode_spans_sparse
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

_DECODE_SOURCE = "kafka"
_NEWLINE = ord("\n")  # an int needle: the fastest ``in`` over bytes (a memchr)
#: The decoder names records by their position in the micro-batch, meaningless to users: cut it.
_RECORD_PREFIX = re.compile(r"^record \d+: ")


@dataclass(slots=True)
class DecodedBatch:
    """Events of a micro-batch plus, per row, which message (and which line of it) it came from."""

    #: Flattened events; ``__event_index`` holds the row number (see ``restore_coordinates``).
    batch: SparseBatch | None
    #: Per row: the message offset.
    offsets: np.ndarray
    #: Per row: 0-based position of the event within its message (0 for single-event messages).
    sub_index: np.ndarray
    #: Per row: ``topic:partition``.
    sources: pa.Array
    #: (message position in the input, error) for every message that did not decode completely.
    failures: list[tuple[int, str]] = field(default_factory=list)

    @property
    def events(self) -> int:
        """How many events decoded."""
        return 0 if self.batch is None else self.batch.num_rows


def decode_messages(
    values: Sequence[bytes | None],
    sources: Sequence[str] | pa.Array,
    offsets: Sequence[int] | np.ndarray | array[int],
) -> DecodedBatch:
    """Decode message values (with their ``topic:partition`` and offset) into one event batch.

    All values go to ``decode_lines`` as one block; only messages holding newlines (NDJSON, pretty
    JSON), empty values or tombstones take a per-message detour first.
    """
    failed: dict[int, list[str]] = {}
    lines: Sequence[bytes]
    message_of_line: np.ndarray
    sub_of_line: np.ndarray
    if _one_event_each(values):  # the common case, checked in C: every message is one JSON line
        lines = cast(Sequence[bytes], values)
        message_of_line = np.arange(len(values), dtype=np.int64)
        sub_of_line = np.zeros(len(values), dtype=np.int32)
    else:
        lines, line_message, line_sub = _lines_of(values, failed)
        message_of_line = np.asarray(line_message, dtype=np.int64)
        sub_of_line = np.asarray(line_sub, dtype=np.int32)

    line_problems = ErrorLog(max_examples=1 << 62)
    batch = decode_lines_sparse(lines, source=_DECODE_SOURCE, indices=range(len(lines)), errors=line_problems)
    for problem in line_problems.examples:
        if problem.offset is not None and 0 <= problem.offset < len(message_of_line):
            position = int(message_of_line[problem.offset])
            sub = int(sub_of_line[problem.offset])
            where = f"event {sub}: " if sub else ""
            failed.setdefault(position, []).append(where + _RECORD_PREFIX.sub("", problem.message))
        else:  # a problem the decoder could not place: attribute it to no message, but keep it
            failed.setdefault(-1, []).append(problem.message)

    offsets_array = np.asarray(offsets, dtype=np.int64)
    source_array = sources if isinstance(sources, pa.Array) else pa.array(sources, pa.string())
    if batch.num_rows == 0:
        rows = np.empty(0, dtype=np.int64)
        batch_or_none = None
    else:
        rows = batch.sparse_column(INDEX_COLUMN)[1].to_numpy().astype(np.int64, copy=False)
        batch_or_none = batch
    row_message = message_of_line[rows]
    if len(row_message) == len(source_array) and bool((row_message == np.arange(len(rows))).all()):
        row_sources = source_array  # one event per message, all decoded: no take needed
    else:
        row_sources = source_array.take(pa.array(row_message))
    if batch_or_none is not None:
        batch_or_none = _with_coordinates(batch_or_none, row_sources, np.arange(len(rows), dtype=np.int64))
    return DecodedBatch(
        batch=batch_or_none,
        offsets=offsets_array[row_message],
        sub_index=sub_of_line[rows],
        sources=row_sources,
        failures=[(position, "; ".join(errors)) for position, errors in sorted(failed.items())],
    )


def decode_message_block(
    data: bytes, lengths: np.ndarray, sources: pa.Array, offsets: np.ndarray
) -> DecodedBatch | None:
    """``decode_messages`` of values laid end to end in ``data`` (``lengths`` bytes each), when it is simple.

    Simple: every value is one JSON event (none empty, a tombstone, or holding a newline) and all
    decode; then no bytes object per message is made. Otherwise None: slice the values and call
    ``decode_messages``, which splits, reports and skips per message.
    """
    if len(lengths) == 0 or bool((lengths <= 0).any()) or _NEWLINE in data:
        return None
    batch = decode_spans_sparse(data, lengths, source=_DECODE_SOURCE)
    if batch is None:
        return None
    rows = np.arange(len(lengths), dtype=np.int64)
    return DecodedBatch(
        batch=_with_coordinates(batch, sources, rows),
        offsets=np.asarray(offsets, dtype=np.int64),
        sub_index=np.zeros(len(lengths), dtype=np.int32),
        sources=sources,
    )


def _one_event_each(values: Sequence[bytes | None]) -> bool:
    """Whether every value is non-empty and holds no newline (so it is one event, or one bad line)."""
    present = cast(Sequence[bytes], values)  # a None raises TypeError in len()
    try:  # C-level loops over the values: no Python work per message
        return all(map(len, present)) and not any(map(operator.contains, present, repeat(_NEWLINE)))
    except TypeError:  # a tombstone (None value)
        return False


def _lines_of(
    values: Sequence[bytes | None], failed: dict[int, list[str]]
) -> tuple[list[bytes], list[int], list[int]]:
    """Split messages into event lines: (lines, message position of each, line within its message)."""
    lines: list[bytes] = []
    line_message: list[int] = []
    line_sub: list[int] = []
    for position, value in enumerate(values):
        if value and b"\n" not in value:
            lines.append(value)
            line_message.append(position)
            line_sub.append(0)
            continue
        events = _split_events(value) if value else []
        if not events:
            failed.setdefault(position, []).append("message holds no JSON event (empty value)")
        for sub, event in enumerate(events):
            lines.append(event)
            line_message.append(position)
            line_sub.append(sub)
    return lines, line_message, line_sub


def _split_events(value: bytes) -> list[bytes]:
    """Events of a value containing newlines: one (pretty-printed) object, or NDJSON lines."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return [line for line in (raw.strip() for raw in value.split(b"\n")) if line]
    if isinstance(document, dict):
        return [orjson.dumps(document)]
    return [value.strip()] if value.strip() else []  # a JSON non-object: let the decoder report it


def _with_coordinates(batch: SparseBatch, sources: pa.Array, row_ids: np.ndarray) -> SparseBatch:
    """Set ``__source`` to ``topic:partition`` and ``__event_index`` to the row number."""
    return batch.with_full_columns({SOURCE_COLUMN: sources, INDEX_COLUMN: pa.array(row_ids, pa.int64())})


def restore_coordinates(
    matches: pa.RecordBatch, decoded: DecodedBatch
) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """Match records with ``event_index`` set back to offsets, plus each match's batch row and sub-index."""
    rows = matches.column("event_index").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    index_position = matches.schema.get_field_index("event_index")
    restored = matches.set_column(
        index_position, matches.schema.field(index_position), pa.array(decoded.offsets[rows], pa.int64())
    )
    return restored, rows, decoded.sub_index[rows]
