"""JSON reader: NDJSON, a JSON array of events, or concatenated (pretty-printed) objects; auto-detected.

NDJSON is read in blocks of lines and decoded by the flattening fast path. The other two layouts
(SigmaHQ's regression ``.json`` files are pretty-printed objects one after another) are streamed with
an incremental decoder, so memory stays bounded by the batch size in every layout.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import mmap
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import (
    count_ndjson_lines,
    decode_lines,
    decode_ndjson_stretch,
    native_decode_enabled,
    records_to_batch,
)
from sigma_arrow.readers.inputs import open_input
from sigma_arrow.readers.parallel import decode_in_pool, worth_it

if TYPE_CHECKING:
    from sigma_arrow.engine.sparse import SparseBatch

BLOCK = 1 << 22
#: Bytes read at a time when decoding straight into SparseBatches (a batch of lines is ~60 MB).
SPARSE_BLOCK = 1 << 26
#: Bytes of a file mapped at a time when decoding straight from a memory map (doubled while a
#: batch of lines does not fit).
MAP_WINDOW = 1 << 27
_BOM = b"\xef\xbb\xbf"
_SKIP = " \t\r\n,"


def detect_layout(head: bytes) -> str:
    """``ndjson``, ``array`` or ``concatenated`` from the first bytes of a (decompressed) input."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "array"
    lines = [line for line in text.split(b"\n")[:-1] if line.strip()][:2]
    if not lines and text.strip():
        lines = [text]  # a single line without a trailing newline
    for line in lines:
        if not line.lstrip().startswith(b"{"):
            continue
        try:
            if isinstance(orjson.loads(line), dict):
                return "ndjson"
        except orjson.JSONDecodeError:
            continue
    return "concatenated" if text.startswith(b"{") and b"\n" in text else "ndjson"


class JsonReader:
    """Reads JSON events; ``layout`` is ``auto``, ``ndjson``, ``array`` or ``concatenated``.

    ``__event_index`` counts records (non-blank NDJSON lines, array elements, objects) from 0,
    malformed ones included, so the index of an event never depends on its neighbours being valid.
    A malformed record is reported as ``json`` with its byte offset (NDJSON) or character offset
    (other layouts) and skipped.
    """

    name = "json"

    def __init__(self, layout: str = "auto", workers: int | None = None) -> None:
        if layout not in ("auto", "ndjson", "array", "concatenated"):
            raise ValueError(f"unknown JSON layout {layout!r}")
        self.layout = layout
        #: Decoding processes for big NDJSON files (None: ``parallel.decode_workers()``; 1: none).
        self.workers = workers

    def read(
        self,
        path: str,
        *,
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Yield flattened event batches of at most ``batch_size`` rows."""
        with open_input(path) as stream:
            layout = self.layout
            if layout == "auto":
                layout = detect_layout(stream.peek(1 << 16))
            if layout == "ndjson":
                parallel = worth_it(path, self.workers)
                yield from _read_ndjson(stream, path, batch_size, errors, parallel, self.workers)
            else:
                yield from _read_documents(stream, path, batch_size, errors, layout == "array")


def read_ndjson_range(
    path: str,
    start: int,
    end: int,
    first_index: int,
    *,
    batch_size: int,
    errors: ErrorLog,
    sparse: bool = False,
) -> Iterator[pa.RecordBatch | SparseBatch]:
    """Batches of the NDJSON lines in bytes ``[start, end)`` of an uncompressed file.

    ``start`` is where a line begins and ``first_index`` that line's record index (non-blank lines
    before it): indices and error offsets are those a read of the whole file gives. Parallel scans
    split big files into work units with this. ``sparse``: batches decoded in this process come as
    ``SparseBatch``es (the native engine's input form).
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        stream = _Range(handle, end - start)
        # Natively decoded into SparseBatches in this process: ~2 µs per event, faster than the
        # decoding pool's dense batches (1M attack events with one scan process: 300k events/s and
        # 0.9 GB here, against 70k and 2.6 GB summed with the pool's processes).
        if sparse and native_decode_enabled():
            if _mappable(handle, end):
                yield from _mapped_batches(handle.fileno(), path, batch_size, errors, start, end, first_index)
            else:
                yield from _sparse_batches(stream, path, batch_size, errors, start, first_index)
            return
        jobs = _ndjson_jobs(stream, batch_size, start, first_index)
        yield from _decode_jobs(jobs, path, errors, worth_it(path), None)


class _Range:
    """At most ``size`` bytes of a binary stream."""

    def __init__(self, stream: Any, size: int) -> None:
        self.stream = stream
        self.left = size

    def read(self, size: int) -> bytes:
        data: bytes = self.stream.read(min(size, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


def _read_ndjson(
    stream: Any, path: str, batch_size: int, errors: ErrorLog, parallel: bool, workers: int | None
) -> Iterator[pa.RecordBatch]:
    yield from _decode_jobs(_ndjson_jobs(stream, batch_size), path, errors, parallel, workers)


def _mappable(handle: Any, end: int) -> bool:
    """Whether ``handle`` is a regular file holding at least ``end`` bytes (it can be mapped)."""
    try:
        status = os.fstat(handle.fileno())
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(status.st_mode) and status.st_size >= end > 0


@dataclass
class LineWindow:
    """The whole lines of a memory-mapped stretch of a file.

    They are ``view[start:]``, where ``view[0]`` is input byte ``offset`` (``mapped`` the map under
    ``view``); ``last``: the stretch reaches the end of the input.
    """

    offset: int
    view: memoryview
    start: int
    last: bool
    mapped: mmap.mmap


@contextlib.contextmanager
def mapped_lines(fd: int, position: int, end: int, window: int) -> Iterator[LineWindow | None]:
    """Map about ``window`` bytes of a file from ``position`` (a line start) on, up to ``end``.

    Yields the whole lines there, or None when not one whole line fits (map a bigger window). The
    caller reads the page cache itself: no read copies, no fresh buffers to fault in; the window is
    unmapped on exit, so only it counts as resident.
    """
    mapped_from = position - position % mmap.ALLOCATIONGRANULARITY
    length = min(end, position + window) - mapped_from
    last = mapped_from + length >= end
    local = position - mapped_from
    with mmap.mmap(fd, length, offset=mapped_from, access=mmap.ACCESS_READ) as mapped:
        whole = length if last else mapped.rfind(b"\n", local, length) + 1
        if whole <= local:
            yield None
            return
        with memoryview(mapped)[:whole] as view:
            yield LineWindow(mapped_from, view, local, last, mapped)


def _mapped_batches(
    fd: int, path: str, batch_size: int, errors: ErrorLog, start: int, end: int, first_index: int
) -> Iterator[SparseBatch]:
    """As ``_sparse_batches``, decoding straight from a memory map of the file, a window at a time.

    Measured here: ~10 % of a realistic NDJSON scan's CPU went to reading, copying and page faults.
    Batches own their data, so a window is unmapped once its batches are cut.
    """
    index = first_index
    position = start  # input byte offset of the first line not decoded yet
    if start == 0 and os.pread(fd, len(_BOM), 0) == _BOM:
        position = len(_BOM)
    window = MAP_WINDOW
    while position < end:
        with mapped_lines(fd, position, end, window) as lines:
            if lines is None:  # one line longer than the window
                window *= 2
                continue
            taken = lines.start
            while taken < len(lines.view):
                count = count_ndjson_lines(lines.view, taken, batch_size)[1]
                if count == 0 or (count < batch_size and not lines.last):
                    break  # only whole batches are cut before the end of the input
                batch, taken, decoded = decode_ndjson_stretch(
                    lines.view,
                    taken,
                    batch_size,
                    source=path,
                    first_index=index,
                    offset=lines.offset,
                    errors=errors,
                )
                index += decoded
                if batch.num_rows:
                    yield batch
        if lines.last:
            return
        if taken == lines.start:  # a batch of lines is longer than the window
            window *= 2
        position = lines.offset + taken


def _sparse_batches(
    stream: Any, path: str, batch_size: int, errors: ErrorLog, start: int, first_index: int
) -> Iterator[SparseBatch]:
    """NDJSON decoded natively into SparseBatches straight from big reads of the input.

    Batches hold ``batch_size`` lines counted from ``start``, as ``_ndjson_jobs`` cuts them, so the
    columns come in the same order as with the line-by-line path. Lines are never copied into
    bytes objects: the native decoder splits them in the read buffer.
    """
    index = first_index
    pending = bytearray()
    base = start  # input byte offset of pending[0]
    at_input_start = start == 0
    while True:
        chunk = stream.read(SPARSE_BLOCK)
        if at_input_start and chunk.startswith(_BOM):
            chunk = chunk[len(_BOM) :]
            base += len(_BOM)
        at_input_start = False
        pending += chunk
        end_of_input = not chunk
        # Only whole lines are decoded before the end of the input.
        whole = len(pending) if end_of_input else pending.rfind(b"\n") + 1
        taken = 0
        with memoryview(pending)[:whole] as view:
            while taken < whole:
                count = count_ndjson_lines(view, taken, batch_size)[1]
                if count == 0 or (count < batch_size and not end_of_input):
                    break
                batch, taken, lines = decode_ndjson_stretch(
                    view, taken, batch_size, source=path, first_index=index, offset=base, errors=errors
                )
                index += lines
                if batch.num_rows:
                    yield batch
        if end_of_input:
            return
        del pending[:taken]
        base += taken


def _decode_jobs(
    jobs: Iterator[tuple[list[bytes], range, list[int]]],
    path: str,
    errors: ErrorLog,
    parallel: bool,
    workers: int | None,
) -> Iterator[pa.RecordBatch]:
    if parallel:
        yield from decode_in_pool(jobs, path, errors, workers)
        return
    for lines, indices, starts in jobs:
        yield decode_lines(lines, source=path, indices=indices, errors=errors, offsets=starts)


def line_blocks(stream: Any, block_size: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Whole lines of a byte stream, a block at a time: (input byte offset of the block, its bytes).

    A block ends just after a newline (the last one at the end of the input). ``start``: the stream
    begins at that byte offset of the input; at 0, a UTF-8 byte order mark is skipped.
    """
    carry = b""
    offset = start  # input byte offset of ``carry``
    first = start == 0
    while True:
        block = stream.read(block_size)
        if first and block.startswith(_BOM):
            block, offset = block[len(_BOM) :], len(_BOM)
        first = False
        if block:
            data = carry + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            complete, carry = data[:cut], data[cut:]
        else:
            complete, carry = carry, b""
        if complete:
            yield offset, complete
        offset += len(complete)
        if not block:
            return


def _ndjson_jobs(
    stream: Any, batch_size: int, start: int = 0, first_index: int = 0
) -> Iterator[tuple[list[bytes], range, list[int]]]:
    """Blocks of ``batch_size`` non-blank lines: (lines, their record indices, their byte offsets).

    ``start``/``first_index``: the stream begins at that byte offset of the input, with that record.
    """
    index = first_index
    lines: list[bytes] = []
    starts: list[int] = []
    for position, complete in line_blocks(stream, BLOCK, start):
        for line in complete.split(b"\n"):
            if line and not line.isspace():
                lines.append(line)
                starts.append(position)
                if len(lines) >= batch_size:
                    yield lines, range(index, index + len(lines)), starts
                    index += len(lines)
                    lines, starts = [], []
            position += len(line) + 1
    if lines:
        yield lines, range(index, index + len(lines)), starts


def _read_documents(
    stream: Any, path: str, batch_size: int, errors: ErrorLog, array: bool
) -> Iterator[pa.RecordBatch]:
    """Objects one after another (or the elements of one array), streamed with ``raw_decode``."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    base = 0  # characters dropped from the front of ``text``
    pos = 0
    eof = False
    index = 0
    records: list[dict[str, Any]] = []
    indices: list[int] = []
    opened = False

    def more() -> bool:
        nonlocal text, eof, pos, base
        if eof:
            return False
        block = stream.read(BLOCK)
        if not block:
            eof = True
            text += utf8.decode(b"", final=True)
            return False
        if pos > (1 << 20):
            base += pos
            text, pos = text[pos:], 0
        text += utf8.decode(block)
        return True

    more()
    if text.startswith("\ufeff"):
        pos = 1
    while True:
        while pos < len(text) and (text[pos] in _SKIP or (array and text[pos] in "[]")):
            if text[pos] == "[":
                if opened:
                    break
                opened = True
            pos += 1
        if pos >= len(text):
            if more():
                continue
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if not eof and len(text) - exc.pos < (1 << 20) and more():
                continue
            errors.report(path, base + pos, "json", f"record {index}: invalid JSON: {exc.msg}")
            index += 1
            pos = _resync(text, pos + 1)
            if pos < 0:
                while more():
                    pass
                pos = len(text)
            continue
        if isinstance(value, dict):
            records.append(value)
            indices.append(index)
        else:
            errors.report(
                path,
                base + pos,
                "json",
                f"record {index}: expected a JSON object, got {type(value).__name__}",
            )
        index += 1
        pos = end
        if len(records) >= batch_size:
            yield records_to_batch(records, source=path, first_index=indices)
            records, indices = [], []
    if records:
        yield records_to_batch(records, source=path, first_index=indices)


def _resync(text: str, start: int) -> int:
    """Where the next object probably starts after a malformed one: a ``{`` at the start of a line."""
    found = text.find("\n{", start)
    return found + 1 if found >= 0 else -1
