"""EVTX reader: the records' JSON of the native or the ``evtx`` package's parser, decoded in bulk.

The native parser (``sigma_arrow._cevtx``) reads sound, plain files; anything it declines goes to the
Rust parser, which also reports the problems.
"""

from __future__ import annotations

import functools
import operator
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import (
    SparseBuilder,
    decode_lines,
    decode_lines_sparse,
    merge_batches,
    sparse_builder,
)
from sigma_arrow.readers.inputs import COMPRESSIONS, compression_of, local_file
from sigma_arrow.readers.parallel import decode_in_pool, worth_it
from sigma_arrow.schema import SOURCE_COLUMN

if TYPE_CHECKING:
    from sigma_arrow.engine.sparse import SparseBatch

try:  # the native EVTX parser (setup.py builds it when a C compiler is there); else the Rust one
    from sigma_arrow import _cevtx
except ImportError:  # pragma: no cover - depends on the build
    _cevtx = None  # type: ignore[assignment]

#: Set to ``1`` to parse EVTX with the ``evtx`` package only, even when the native parser is built.
PURE_PYTHON_ENV = "SIGMA_ARROW_PURE_PYTHON_EVTX"

EVTX_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
_HEADER_BLOCK = 0x1000
_CHUNK = 0x10000
_SMALL_FILE = 4 << 20
#: Chunks per native parser call for a big file (4 MB: a few thousand records held at a time).
_NATIVE_CHUNKS = 64
_COMPRESSED = tuple(COMPRESSIONS)
_DATA = operator.itemgetter("data")
#: Plain file descriptors for the header checks (cheaper than file objects; binary on Windows too).
_READ_BINARY = os.O_RDONLY | getattr(os, "O_BINARY", 0)


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
            threads = self.threads
            try:
                size = os.path.getsize(local)
                if threads == 0 and size < _SMALL_FILE:
                    threads = 1  # starting worker threads costs more than they save on small files
                jobs: Iterable[tuple[list[str], Sequence[int]]]
                if native_evtx_enabled():
                    jobs = _native_blocks(evtx, local, path, size, batch_size, errors, threads)
                else:
                    parser = evtx.PyEvtxParser(local, number_of_threads=threads)
                    jobs = _evtx_jobs(parser.records_json(), path, batch_size, errors)
            except (OSError, RuntimeError, ValueError) as exc:
                errors.report(path, 0, "evtx-file", f"not a readable EVTX file: {exc}")
                return
            if worth_it(local, self.workers):
                triples = ((lines, indices, None) for lines, indices in jobs)
                yield from decode_in_pool(triples, path, errors, self.workers)
            else:
                for lines, indices in jobs:
                    yield decode_lines(lines, source=path, indices=indices, errors=errors)

    def small(self, path: str, any_size: bool = False) -> bool:
        """Whether a local, uncompressed file is small enough to be decoded with its neighbours.

        ``any_size``: of any size (``read_small_files`` reads a big one a block at a time).
        """
        try:
            size = os.path.getsize(path)
        except OSError:
            return False
        return (any_size or size < _SMALL_FILE) and not path.lower().endswith(_COMPRESSED)

    def read_small_files(
        self, paths: Sequence[str], *, batch_size: int, errors: ErrorLog, sparse: bool = False
    ) -> Iterator[tuple[pa.RecordBatch | SparseBatch, list[tuple[str, int]]]]:
        """Read many small EVTX files, decoding their records together in blocks of ``batch_size``.

        A triage collection holds hundreds of small ``.evtx`` files: decoding and merging them one
        by one costs more per record than parsing them. Each block comes with its (file, records)
        counts; every record keeps its own file as ``__source`` and its index in that file, exactly as
        ``read`` gives them, and problems are reported the same way. ``sparse``: blocks come as
        ``SparseBatch``es (the native engine's input form), decoded without dense columns, each file
        right after it is parsed (``SparseBuilder``). A big file among them (4 MB or more) is read a
        block at a time, never whole: with ``sparse`` this is also the cheaper way to read big files.
        """
        import evtx

        builder = sparse_builder() if sparse else None
        if builder is not None:
            blocks = functools.partial(_small_file_blocks, evtx, batch_size=batch_size, errors=errors)
            yield from _built_blocks(builder, blocks, paths, batch_size, errors)
            return
        lines: list[str] = []
        indices: list[int] = []
        counts: list[tuple[str, int]] = []
        for path in paths:
            try:
                for block, block_indices in _small_file_blocks(
                    evtx, path, batch_size=batch_size, errors=errors
                ):
                    lines.extend(block)
                    indices.extend(block_indices)
                    _count(counts, path, len(block))
                    if len(lines) >= batch_size:
                        yield _decode_files(lines, indices, counts, errors, sparse), counts
                        lines, indices, counts = [], [], []
            except Exception as exc:  # one bad file never stops the others: report it and go on
                _report_file(errors, path, exc)
        if lines:
            yield _decode_files(lines, indices, counts, errors, sparse), counts


def _built_blocks(
    builder: SparseBuilder,
    blocks_of: Callable[[str], Iterable[tuple[list[str], Sequence[int]]]],
    paths: Sequence[str],
    batch_size: int,
    errors: ErrorLog,
) -> Iterator[tuple[SparseBatch, list[tuple[str, int]]]]:
    """``read_small_files(sparse=True)`` with the native builder: each file decoded as soon as it is parsed.

    Its records' JSON is then still in the cache, and freed before the next file is parsed (holding a
    block's worth of it costs both the parser and the decoder). ``blocks_of(path)``: the file's records
    (JSON text, index) in blocks. A block the builder refuses is decoded the Python way on its own
    (which reports its problems), after the rows built so far.
    """
    from sigma_arrow.engine.sparse import SparseBatch

    indices: list[int] = []
    counts: list[tuple[str, int]] = []
    for path in paths:
        try:
            for block, block_indices in blocks_of(path):
                if not builder.add(block):
                    if builder.rows:
                        yield _finish(builder, indices, counts), counts
                        indices, counts = [], []
                    refused = decode_lines(block, source=path, indices=block_indices, errors=errors)
                    yield SparseBatch.from_batch(refused), [(path, len(block))]
                    continue
                indices.extend(block_indices)
                _count(counts, path, len(block))
                if builder.rows >= batch_size:
                    yield _finish(builder, indices, counts), counts
                    indices, counts = [], []
        except Exception as exc:  # one bad file never stops the others: report it and go on
            _report_file(errors, path, exc)
    if builder.rows:
        yield _finish(builder, indices, counts), counts


def _finish(builder: SparseBuilder, indices: list[int], counts: list[tuple[str, int]]) -> SparseBatch:
    """Return the builder's rows as a block; ``__source`` names each record's own file."""
    batch = builder.finish(source=counts[0][0], indices=indices)
    return batch.with_full_columns({SOURCE_COLUMN: _sources(counts)})


def _count(counts: list[tuple[str, int]], path: str, records: int) -> None:
    """Add ``records`` of ``path`` to a block's (file, records) counts."""
    if counts and counts[-1][0] == path:
        counts[-1] = (path, counts[-1][1] + records)
    else:
        counts.append((path, records))


def _report_file(errors: ErrorLog, path: str, exc: Exception) -> None:
    kind = "file" if isinstance(exc, OSError) else "read"
    errors.report(path, None, kind, f"{type(exc).__name__}: {exc}")


def _small_file_blocks(
    evtx: Any, path: str, *, batch_size: int, errors: ErrorLog
) -> Iterator[tuple[list[str], Sequence[int]]]:
    """``_evtx_jobs`` of one small file, with one open for its checks and no Python step per record.

    A sound file's records are taken in one C-level pass: the native parser's when it reads the file
    (``native_evtx_enabled``), else the Rust parser's; a file the parser stumbles on is parsed again by
    ``_evtx_jobs``, which reports its problems exactly as ``read`` does. A big file (4 MB or more) is
    read a block at a time (``_native_blocks``): its records are never all held.
    """
    if native_evtx_enabled() and not path.lower().endswith(_COMPRESSED):
        native = _native_small_file(path)
        if native is not None:  # a sound file, read completely by the native parser
            yield from _blocks_of(native, batch_size)
            return
    big = False
    size: int | None = None
    try:
        fd = os.open(path, _READ_BINARY)
        try:
            head = os.read(fd, _HEADER_BLOCK)
            # An EVTX header is no compression's magic: only the name can still say compressed.
            if head.startswith(EVTX_MAGIC):
                plain = not path.lower().endswith(_COMPRESSED)
            else:
                plain = compression_of(path, head) is None
            if plain:
                size = _report_truncation(fd, head, path, errors)
                big = size is not None and size >= _SMALL_FILE
        finally:
            os.close(fd)
    except OSError:
        plain = False  # as ``read`` does it: the reports name what went wrong
    if not plain:
        with local_file(path) as local:
            yield from _checked_file_blocks(evtx, local, path, batch_size, errors)
        return
    if big and size is not None and native_evtx_enabled():
        yield from _native_blocks(evtx, path, path, size, batch_size, errors)
        return
    try:
        parser = evtx.PyEvtxParser(path, number_of_threads=1)
    except (OSError, RuntimeError, ValueError) as exc:
        errors.report(path, 0, "evtx-file", f"not a readable EVTX file: {exc}")
        return
    if big:
        yield from _evtx_jobs(parser.records_json(), path, batch_size, errors)
        return
    data: list[Any] = []
    try:
        data = list(map(_DATA, parser.records_json()))
        sound = set(map(type, data)) <= {str}
    except Exception:  # the slow path below reports it, record by record
        sound = False
    if not sound:
        del data
        records = evtx.PyEvtxParser(path, number_of_threads=1).records_json()
        yield from _evtx_jobs(records, path, batch_size, errors)
        return
    yield from _blocks_of(data, batch_size)


def _blocks_of(data: list[str], batch_size: int) -> Iterator[tuple[list[str], Sequence[int]]]:
    """Yield a whole file's records' JSON in blocks of ``batch_size``, with their indices."""
    if len(data) <= batch_size:  # the usual small file: its list as it is
        if data:
            yield data, range(len(data))
        return
    for start in range(0, len(data), batch_size):
        yield data[start : start + batch_size], range(start, min(start + batch_size, len(data)))


def _native_blocks(
    evtx: Any,
    local: str,
    path: str,
    size: int,
    batch_size: int,
    errors: ErrorLog,
    threads: int = 1,
) -> Iterator[tuple[list[str], Sequence[int]]]:
    """``_evtx_jobs`` of the plain file ``local`` (``size`` bytes; reported as ``path``), native first.

    The native parser reads ``_NATIVE_CHUNKS`` chunks per call (a big file's records are never all
    held); blocks are cut every ``batch_size`` records across calls, as ``_evtx_jobs`` cuts them.
    Where the native parser declines a part, the Rust parser (``threads``) reads the file again and
    its records go on from the first one not yet given (the ones before are the same): it reports
    the problems.
    """
    given = 0
    pending: list[str] = []
    try:
        fd = os.open(local, _READ_BINARY)
    except OSError:
        fd = -1  # the Rust parser reports it
    if fd >= 0:
        try:
            chunks = max(1, -(-(size - _HEADER_BLOCK) // _CHUNK))  # one call at least: it checks the header
            for first in range(0, chunks, _NATIVE_CHUNKS):
                records = _cevtx.records_json_fd(fd, size, first, _NATIVE_CHUNKS)
                if records is None:
                    break
                pending.extend(records)
                full = len(pending) - len(pending) % batch_size
                for start in range(0, full, batch_size):
                    yield pending[start : start + batch_size], range(given, given + batch_size)
                    given += batch_size
                del pending[:full]
            else:
                if pending:
                    yield pending, range(given, given + len(pending))
                return
        finally:
            os.close(fd)
    del pending
    try:
        parser = evtx.PyEvtxParser(local, number_of_threads=threads)
    except (OSError, RuntimeError, ValueError) as exc:
        errors.report(path, 0, "evtx-file", f"not a readable EVTX file: {exc}")
        return
    for block, indices in _evtx_jobs(parser.records_json(), path, batch_size, errors):
        if indices[-1] < given:
            continue  # given already, by the native parser
        if indices[0] < given:
            kept = [(line, index) for line, index in zip(block, indices, strict=True) if index >= given]
            block, indices = [line for line, _ in kept], [index for _, index in kept]
        yield block, indices


def native_evtx_enabled() -> bool:
    """Whether EVTX files are tried with the native parser first (built, and not switched off)."""
    return _cevtx is not None and os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")


def _native_small_file(path: str) -> list[str] | None:
    """Every record's JSON of a small (< 4 MB) EVTX file from the native parser, in one call.

    It checks the file's header itself and reads the file a chunk at a time into one reused buffer
    (only the used part of each chunk; unused chunks that are holes not at all). None when the file
    is big, cannot be opened, or the parser declines it (anything it cannot read completely and
    exactly as the Rust parser does: damage, truncation, compressed content, a construct it does not
    implement); the caller then takes the careful path, which reports the problems.
    """
    try:
        fd = os.open(path, _READ_BINARY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        return _cevtx.records_json_fd(fd, size) if size < _SMALL_FILE else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _checked_file_blocks(
    evtx: Any, local: str, path: str, batch_size: int, errors: ErrorLog
) -> Iterator[tuple[list[str], Sequence[int]]]:
    """``_evtx_jobs`` of a file after its truncation check (reports name ``path``)."""
    _check_truncation(local, path, errors)
    try:
        parser = evtx.PyEvtxParser(local, number_of_threads=1)
    except (OSError, RuntimeError, ValueError) as exc:
        errors.report(path, 0, "evtx-file", f"not a readable EVTX file: {exc}")
        return
    yield from _evtx_jobs(parser.records_json(), path, batch_size, errors)


def _decode_files(
    lines: list[str], indices: list[int], counts: list[tuple[str, int]], errors: ErrorLog, sparse: bool
) -> pa.RecordBatch | SparseBatch:
    """Decode records of several files in one call; ``__source`` names each record's own file."""
    from sigma_arrow.engine.sparse import SparseBatch

    probe = ErrorLog()
    decode = decode_lines_sparse if sparse else decode_lines
    batch = decode(lines, source=counts[0][0], indices=indices, errors=probe)
    if probe.total or batch.num_rows != len(lines):
        # A record needs a problem report: decode file by file, exactly as ``read`` does.
        parts = []
        start = 0
        for path, count in counts:
            end = start + count
            block = lines[start:end]
            parts.append(decode_lines(block, source=path, indices=indices[start:end], errors=errors))
            start = end
        merged = merge_batches(parts)
        return SparseBatch.from_batch(merged) if sparse else merged
    sources = _sources(counts)
    if isinstance(batch, SparseBatch):
        return batch.with_full_columns({SOURCE_COLUMN: sources})
    return batch.set_column(batch.schema.get_field_index(SOURCE_COLUMN), SOURCE_COLUMN, sources)


def _sources(counts: list[tuple[str, int]]) -> pa.Array:
    """Return a block's ``__source`` column: each record's own file (``counts``: (file, records))."""
    names = pa.array([path for path, _ in counts], type=pa.string())
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), [count for _, count in counts])
    return names.take(pa.array(owner))


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
        fd = os.open(local, _READ_BINARY)
    except OSError:
        return
    try:
        _report_truncation(fd, os.read(fd, _HEADER_BLOCK), path, errors)
    except OSError:
        return
    finally:
        os.close(fd)


def _report_truncation(fd: int, header: bytes, path: str, errors: ErrorLog) -> int | None:
    """``_check_truncation`` of an open file descriptor whose first bytes are ``header``.

    Returns the file's size (None when the header is no EVTX header: nothing checked).
    """
    if len(header) < 0x2C or not header.startswith(EVTX_MAGIC):
        return None
    size = os.fstat(fd).st_size
    (chunk_count,) = struct.unpack_from("<H", header, 0x2A)
    tail = (size - _HEADER_BLOCK) % _CHUNK
    last_start = size - tail
    partial_is_chunk = False
    if tail > 0:
        os.lseek(fd, last_start, os.SEEK_SET)
        partial_is_chunk = os.read(fd, len(CHUNK_MAGIC)) == CHUNK_MAGIC
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
    return size


def count_records(path: str) -> int | None:
    """How many records a local, uncompressed ``.evtx`` file holds, from its chunk headers.

    Each chunk header names its first and last record numbers: one small read per 64 KB chunk, to
    size parallel scan units (a size-based guess is off ~3x: attack samples hold ~17 records per
    chunk, busy Security logs ~100). None when the file is not a readable EVTX file.
    """
    if compression_of(path) is not None:
        return None
    try:
        fd = os.open(path, _READ_BINARY)
    except OSError:
        return None
    try:
        start = os.pread(fd, _HEADER_BLOCK + 24, 0)  # the file header and the first chunk's
        if not start.startswith(EVTX_MAGIC):
            return None
        total = 0
        offset = _HEADER_BLOCK
        head = start[offset:]
        while len(head) == 24:
            if head.startswith(CHUNK_MAGIC):  # else a damaged or empty chunk: the reader reports it
                first, last = struct.unpack_from("<QQ", head, len(CHUNK_MAGIC))
                if first <= last < first + _CHUNK:  # a chunk holds fewer records than bytes
                    total += last - first + 1
            offset += _CHUNK
            head = os.pread(fd, 24, offset)
        return total
    except OSError:
        return None
    finally:
        os.close(fd)
