"""Plain-text lines reader: every non-empty line of a text log is one event with one ``message`` field.

For syslog-style exports (network devices, ``.log``/``.raw`` files) matched by keyword rules: keywords
search every string column, so the single ``message`` column is what they search. Lines are decoded as
UTF-8 (invalid bytes replaced), a trailing carriage return is dropped, and ``__event_index`` is the 0-based
line number (blank lines are skipped but still counted, so indices match the file's line numbers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers.inputs import open_input
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

#: The one event field a text line becomes.
MESSAGE_FIELD = "message"
_BLOCK = 1 << 22


class LinesReader:
    """Reads a plain-text log: one event (``message``) per non-empty line."""

    name = "lines"

    def read(
        self,
        path: str,
        *,
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Yield batches of at most ``batch_size`` lines (``message``, ``__source``, ``__event_index``)."""
        messages: list[str] = []
        numbers: list[int] = []
        number = 0
        with open_input(path) as stream:
            for line in _lines(stream):
                text = line.decode("utf-8", errors="replace").rstrip("\r")
                if text.strip():
                    messages.append(text)
                    numbers.append(number)
                    if len(messages) >= batch_size:
                        yield _batch(messages, numbers, path)
                        messages, numbers = [], []
                number += 1
        if messages:
            yield _batch(messages, numbers, path)


def _lines(stream: pa.NativeFile) -> Iterator[bytes]:
    """Lines of a binary stream without their newline, read in big blocks."""
    carry = b""
    while True:
        block = stream.read(_BLOCK)
        if not block:
            break
        parts = (carry + block).split(b"\n")
        carry = parts.pop()
        yield from parts
    if carry:
        yield carry


def _batch(messages: list[str], numbers: list[int], source: str) -> pa.RecordBatch:
    n = len(messages)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(messages, pa.string()),
            pa.array([source], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64))),
            pa.array(np.asarray(numbers, dtype=np.int64)),
        ],
        names=[MESSAGE_FIELD, SOURCE_COLUMN, INDEX_COLUMN],
    )
