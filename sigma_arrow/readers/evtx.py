"""EVTX reader: the ``evtx`` package's Rust parser, its JSON fed in bulk to the flattening fast path."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence

import pyarrow as pa

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import decode_lines
from sigma_arrow.readers.inputs import local_file

EVTX_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
_HEADER_BLOCK = 0x1000
_CHUNK = 0x10000


class EvtxReader:
    """Reads Windows ``.evtx`` files (also compressed ones, and from stdin).

    ``__event_index`` is the position of the record in the order the parser yields them. A corrupt
    chunk or record is reported as ``evtx-chunk``/``evtx-record`` (offset = the index the next record
    gets) and skipped; a truncated file is reported as ``evtx-file`` with the byte offset where the
    data ends; the records around either are still read.
    """

    name = "evtx"

    def __init__(self, threads: int = 0) -> None:
        #: Rust parser threads (0: as many as cores).
        self.threads = threads

    def read(
        self,
        path: str,
        *,
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Yield flattened event batches of at most ``batch_size`` rows from an EVTX file."""
        import evtx

        with local_file(path) as local:
            _check_truncation(local, path, errors)
            try:
                parser = evtx.PyEvtxParser(local, number_of_threads=self.threads)
            except (OSError, RuntimeError, ValueError) as exc:
                errors.report(path, 0, "evtx-file", f"not a readable EVTX file: {exc}")
                return
            records = parser.records_json()
            index = 0
            pending: list[str] = []
            indices: list[int] = []
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except (RuntimeError, OSError, ValueError) as exc:
                    message = str(exc)
                    kind = "evtx-chunk" if "chunk" in message.lower() else "evtx-record"
                    errors.report(path, index, kind, f"skipped unreadable data: {message}")
                    continue
                data = record.get("data") if isinstance(record, dict) else None
                if not isinstance(data, str):
                    errors.report(path, index, "evtx-record", "record without JSON data")
                    index += 1
                    continue
                pending.append(data)
                indices.append(index)
                index += 1
                if len(pending) >= batch_size:
                    yield _decode(pending, indices, path, errors)
                    pending, indices = [], []
            if pending:
                yield _decode(pending, indices, path, errors)


def _decode(pending: list[str], indices: list[int], path: str, errors: ErrorLog) -> pa.RecordBatch:
    return decode_lines(pending, source=path, indices=indices, errors=errors)


def _check_truncation(local: str, path: str, errors: ErrorLog) -> None:
    """Report a file that ends inside a chunk, or before the chunks its header announces.

    The parser stops silently at such an end, so without this check the lost records would vanish.
    """
    try:
        size = os.path.getsize(local)
        with open(local, "rb") as handle:
            header = handle.read(_HEADER_BLOCK)
            if len(header) < 0x2C or not header.startswith(EVTX_MAGIC):
                return
            (chunk_count,) = struct.unpack_from("<H", header, 0x2A)
            tail = (size - _HEADER_BLOCK) % _CHUNK
            last_start = size - tail
            handle.seek(last_start)
            partial_is_chunk = tail > 0 and handle.read(8) == CHUNK_MAGIC
    except OSError:
        return
    expected = _HEADER_BLOCK + chunk_count * _CHUNK
    if partial_is_chunk:
        errors.report(
            path,
            last_start,
            "evtx-file",
            f"file is truncated: it ends {tail} bytes into the chunk at byte {last_start}; "
            "records of that chunk are lost",
        )
    elif size < expected:
        errors.report(
            path,
            size,
            "evtx-file",
            f"file is truncated: header announces {chunk_count} chunks ({expected} bytes), file has {size}",
        )
