"""The one small interface every reader implements."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import pyarrow as pa

from sigma_arrow.errorlog import ErrorLog


class Reader(Protocol):
    """Reads one kind of input into event batches.

    Batches carry the flattened event fields (sigma_arrow.flatten) plus the reserved columns
    ``__source`` and ``__event_index`` (sigma_arrow.schema). A reader never raises on a bad record:
    it reports it to ``errors`` with its source and offset and goes on. Memory is bounded by
    ``batch_size`` rows, never by the input size.
    """

    #: Name used by ``--format`` (e.g. "evtx", "jsonl", "parquet").
    name: str

    def read(
        self,
        path: str,
        *,
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Yield event batches from ``path`` (``-`` is stdin). ``columns`` is a projection hint."""
        ...
