"""EVTX reader: the ``evtx`` package's Rust parser, its JSON fed in bulk to the flattening fast path."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import decode_lines
from sigma_arrow.readers.inputs import local_file
from sigma_arrow.readers.parallel import decode_in_pool, worth_it

EVTX_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
_HEADER_BLOCK = 0x1000
_CHUNK = 0x10000
_SMALL_FILE = 4 << 20


class EvtxReader:
    """Reads Windows ``.evtx`` files (also compressed ones, and from stdin).

    ``__event_index`` is the position of the record in the order the parser yields them. A corrupt
    chunk or record is reported as ``evtx-chunk``/``evtx-record`` (offset = the index the next record
    gets) and skipped; a truncated file is reported as ``evtx-file`` with the byte offset where the
    data ends; the records around either are still read.
    """

    name = "evtx"

    def __init__(self, threads: int = 0, workers: int | None = None) -> None:
        #: Rust parser threads (0: as many as cores).
        self.threads = threads
        #: Decoding processes for big files (None: ``parallel.decode_workers()``; 1: none).
        self.workers = workers

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
                threads = self.threads
                if threads == 0 and os.path.getsize(local) < _SMALL_FILE:
                    threads = 1  # starting worker threads costs more than they save on small files
                parser = evtx.PyEvtxParser(local, number_of_threads=threads)
            except (OSError, RuntimeError, ValueError) as exc:
                errors.report(path, 0, "evtx-file", f"not a readable EVTX file: {exc}")
                return
            jobs = _evtx_jobs(parser.records_json(), path, batch_size, errors)
            if worth_it(local, self.workers):
                triples = ((lines, indices, None) for lines, indices in jobs)
                yield from decode_in_pool(triples, path, errors, self.workers)
            else:
                for lines, indices in jobs:
                    yield decode_lines(lines, source=path, indices=indices, errors=errors)


def _evtx_jobs(
    records: Iterator[Any], path: str, batch_size: int, errors: ErrorLog
) -> Iterator[tuple[list[str], list[int]]]:
    """Blocks of ``batch_size`` records' JSON text with their indices; unreadable parts reported.

    The records' JSON strings go to the decoder as they come, a block per call (the native decoder
    parses and flattens a whole block in C): per record, only a plain ``for`` step stays in Python.
    """
    index = 0
    pending: list[str] = []
    indices: list[int] = []
    while True:
        try:
            for record in records:  # resumes after a reported error: the parser goes on past it
                data = record.get("data") if type(record) is dict else None
                if type(data) is not str:
                    errors.report(path, index, "evtx-record", "record without JSON data")
                    index += 1
                    continue
                pending.append(data)
                indices.append(index)
                index += 1
                if len(pending) >= batch_size:
                    yield pending, indices
                    pending, indices = [], []
            break
        except (RuntimeError, OSError, ValueError) as exc:
            message = str(exc)
            kind = "evtx-chunk" if "chunk" in message.lower() else "evtx-record"
            errors.report(path, index, kind, f"skipped unreadable data: {message}")
    if pending:
        yield pending, indices


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
