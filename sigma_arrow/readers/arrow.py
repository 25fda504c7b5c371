"""Arrow IPC reader: the file format (``ARROW1``, ``.arrow``/``.feather``) and the stream format."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.ipc as ipc

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import flatten_table
from sigma_arrow.readers.inputs import local_file
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

ARROW_FILE_MAGIC = b"ARROW1"
ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"


class ArrowReader:
    """Reads Arrow IPC files or streams; struct columns are flattened, other types kept as they are.

    ``__source``/``__event_index`` are added unless the data already carries them (non-null).
    """

    name = "arrow"

    def read(
        self,
        path: str,
        *,
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Yield event batches of at most ``batch_size`` rows."""
        with local_file(path) as local:
            try:
                batches = _open(local)
            except (OSError, pa.ArrowException) as exc:
                errors.report(path, 0, "arrow", f"not a readable Arrow IPC file or stream: {exc}")
                return
            index = 0
            try:
                for batch in batches:
                    for start in range(0, batch.num_rows, batch_size):
                        piece = batch.slice(start, batch_size)
                        yield _finish(piece, path, index)
                        index += piece.num_rows
            except (OSError, pa.ArrowException) as exc:
                errors.report(path, index, "arrow", f"unreadable data after record {index}: {exc}")


def _open(local: str) -> Iterator[pa.RecordBatch]:
    with open(local, "rb") as handle:
        head = handle.read(8)
    if head.startswith(ARROW_FILE_MAGIC):
        reader = ipc.open_file(local)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    return iter(ipc.open_stream(pa.OSFile(local, "rb")))


def _finish(batch: pa.RecordBatch, path: str, first: int) -> pa.RecordBatch:
    flat = flatten_table(batch)
    assert isinstance(flat, pa.RecordBatch)
    names = flat.schema.names
    n = flat.num_rows
    if SOURCE_COLUMN not in names or flat.column(SOURCE_COLUMN).null_count:
        flat = _replace(flat, SOURCE_COLUMN, pa.array([path] * n, pa.string()))
    if INDEX_COLUMN not in names or flat.column(INDEX_COLUMN).null_count:
        flat = _replace(flat, INDEX_COLUMN, pa.array(range(first, first + n), pa.int64()))
    return flat


def _replace(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    if name in batch.schema.names:
        position = batch.schema.get_field_index(name)
        return batch.set_column(position, pa.field(name, values.type), values)
    return batch.append_column(pa.field(name, values.type), values)
