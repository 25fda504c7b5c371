"""Parallel scans: work units read, decoded and evaluated in worker processes, merged in input order.

The engine is GIL-bound Python/numpy orchestration, so one process evaluates on one core. A big scan
is split into **work units**, and each unit is read, decoded, evaluated and turned into match records
by one worker process; the calling process only takes the units' results back in input order and
writes them out. Units:

* Parquet: a few row groups of a file (``ParquetReader.read_files``; statistics pruning unchanged,
  ``__event_index`` from the footer's row group offsets);
* NDJSON (uncompressed files): byte ranges that start at a line, found by a quick scan for newlines,
  so every record keeps its index (its position among the non-blank lines) and its byte offset;
* any other input (EVTX, Arrow IPC, compressed files, other JSON layouts, text logs): the whole file;
* consecutive small parts are bundled into one unit, so their events are evaluated together.

Engine batches are made the same way with one worker or many: a unit's batches are coalesced to about
``ENGINE_BATCH_ROWS`` rows (the engine's fixed cost per batch is large), never across units. A scan
with ``workers=1`` runs the same units in the calling process, so both give identical match records,
in the same order, and identical problem reports.

Workers are forked from the calling process once it has built the engine, when that is safe (Linux,
no other Python thread, no library with its own thread pool loaded: ``fork_is_safe``): they share the
engine and start in milliseconds. Otherwise they are spawned: each imports sigma_arrow, receives the
pickled RuleSet and builds its own engine (~1.2 CPU-s each, measured here). Spawning re-imports the
caller's ``__main__``, so the library default is 1 (off) unless ``configure()`` says otherwise; the CLI
turns on the automatic choice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from compiler.errors import SigmaArrowError
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog, InputProblem
from sigma_arrow.flatten import merge_batches
from sigma_arrow.schema import INDEX_COLUMN
from sigma_arrow.sinks.text import encode_jsonl, encode_jsonl_events

#: What units hand the engine: a regular batch, or a sparse one for the native engine.
EngineBatch: TypeAlias = "pa.RecordBatch | SparseBatch"

#: Engine batches are coalesced to about this many rows (the engine slices bigger ones itself).
ENGINE_BATCH_ROWS = 262_144
#: ... and at most this many bytes of Arrow data (wide events: the engine's memory grows with it).
ENGINE_BATCH_BYTES = 256 << 20
#: ... or of a SparseBatch, whose bytes count set values only: 65,536 rows of ~420-column Windows
#: events take ~49 MB sparse against ~146 MB as a RecordBatch. Twice this cap measured 2.0 GB peak RSS
#: over two workers on the attack lane (14 % of events match), against 1.6 GB.
SPARSE_BATCH_BYTES = 256 << 20
#: Uncompressed NDJSON files at least this big are split into line ranges.
SPLIT_MIN_BYTES = 32 << 20
#: Rough bytes per event of a file that is not split (only used to size units and decide ``auto``;
#: EVTX files are counted from their chunk headers instead).
BYTES_PER_EVENT = 1024
#: ``auto`` starts spawned workers only for inputs of about this many events (starting them costs
#: ~1-2 s) ...
AUTO_MIN_EVENTS = 500_000
#: ... and forked ones (which start in milliseconds) from this many: two units of ``MIN_UNIT_ROWS``.
AUTO_MIN_EVENTS_FORKED = 131_072
#: Scans of fewer events than ``SMALL_SCAN_BATCHES`` engine batches are cut into ``SMALL_SCAN_UNITS``
#: units, so that every worker gets a share (a 300k-record EVTX triage would otherwise be one full
#: unit and a sliver), but no smaller than ``MIN_UNIT_ROWS`` events (the engine's cost per batch is
#: largely fixed). The plan never depends on the number of workers: the output is the same with any.
SMALL_SCAN_BATCHES = 2
SMALL_SCAN_UNITS = 4
MIN_UNIT_ROWS = 65_536
#: On machines with at most this many cores, ``auto`` scans columnar inputs (Parquet, Arrow IPC) in
#: the calling process when workers would have to be spawned: its reader thread decodes them (pyarrow
#: releases the GIL) while the engine runs, without the spawned workers' start-up. Measured here (2
#: cores, spawned workers): 1M-event Parquet lanes 166k / 199k events/s in process against 149k / 161k
#: with two workers. Forked workers start in milliseconds and win (1M-event lanes, native Parquet
#: decoding: 3.6 / 4.1 s against 4.6 / 4.3 s in process, load average ~2).
IN_PROCESS_COLUMNAR_CORES = 2
#: Bytes the NDJSON line scan reads at a time.
_SCAN_BLOCK = 16 << 20
#: Bytes ``bytes.isspace`` counts as whitespace: lines starting with one need a closer look.
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True

_default_workers = 1


class WorkerError(SigmaArrowError):
    """A worker process died or failed: the scan cannot go on (one clear line on the CLI)."""


def configure(workers: int | None) -> None:
    """Set the default number of scan workers (0 or None: automatic; 1: in the calling process)."""
    global _default_workers
    _default_workers = 0 if workers is None else max(0, workers)


def default_workers() -> int:
    """Return the configured default (``SIGMA_ARROW_WORKERS`` overrides it; 0 means automatic)."""
    configured = os.environ.get("SIGMA_ARROW_WORKERS", "").strip()
    if configured.isdigit():
        return int(configured)
    return _default_workers


# ---------------------------------------------------------------- work units


@dataclass(frozen=True)
class Part:
    """What one input contributes to a unit: all of it, some Parquet row groups, or NDJSON lines."""

    input: str
    format: str
    #: Parquet: (file, row groups or None for all) of the archive ``input`` names.
    parquet: tuple[tuple[Any, tuple[int, ...] | None], ...] = ()
    #: NDJSON: (first byte, end byte, index of the first record).
    lines: tuple[int, int, int] | None = None

    def describe(self) -> str:
        """Where this part is, for error messages."""
        if self.parquet:
            file, groups = self.parquet[0]
            where = f"row groups {groups[0]}-{groups[-1]} of " if groups else ""
            return f"{where}{file.display}"
        if self.lines is not None:
            return f"{self.input} bytes {self.lines[0]}-{self.lines[1]}"
        return self.input


@dataclass(frozen=True)
class Unit:
    """One worker's job: consecutive parts, read and evaluated together; ``rows`` is an estimate."""

    parts: tuple[Part, ...]
    rows: int

    def describe(self) -> str:
        """Where this unit is, for error messages."""
        first = self.parts[0].describe()
        return first if len(self.parts) == 1 else f"{first} (+ {len(self.parts) - 1} more inputs)"


def plan_units(
    paths: list[str], format: str, engine_rows: int, batch_size: int, counted: dict[str, int] | None = None
) -> Iterator[Unit]:
    """Split expanded inputs into units of about ``engine_rows`` events, in input order (lazily).

    Smaller scans get smaller units (see ``SMALL_SCAN_BATCHES``). ``counted``: files' event
    estimates already made (``estimate_events``), filled in here.
    """
    counted = {} if counted is None else counted
    engine_rows = unit_rows(paths, format, engine_rows, counted)
    bundle: list[Part] = []
    rows = 0
    for part, estimate in _parts(paths, format, engine_rows, batch_size, counted):
        if bundle and rows + estimate > engine_rows:
            yield Unit(tuple(bundle), rows)
            bundle, rows = [], 0
        bundle.append(part)
        rows += estimate
    if bundle:
        yield Unit(tuple(bundle), rows)


def unit_rows(paths: list[str], format: str, engine_rows: int, counted: dict[str, int] | None = None) -> int:
    """Events per unit for a scan of ``paths``: ``engine_rows``, or less for a small scan."""
    small = SMALL_SCAN_BATCHES * engine_rows
    if engine_rows <= MIN_UNIT_ROWS:
        return engine_rows
    total = estimate_events(paths, format, small, counted)
    if total >= small:
        return engine_rows
    return min(engine_rows, max(MIN_UNIT_ROWS, -(-total // SMALL_SCAN_UNITS)))


def _parts(
    paths: list[str], format: str, engine_rows: int, batch_size: int, counted: dict[str, int]
) -> Iterator[tuple[Part, int]]:
    from sigma_arrow.readers.registry import detect_format

    for path in paths:
        whole = Part(path, format)
        try:
            kind = detect_format(path) if format == "auto" else format
        except Exception:  # the reader reports it when the unit runs, as a scan without workers does
            yield whole, 1
            continue
        if kind == "parquet":
            yield from _parquet_parts(path, format, engine_rows)
        elif kind in ("json", "jsonl") and _splittable(path, kind):
            per_range = max(batch_size, -(-engine_rows // batch_size) * batch_size)
            for start, end, first, count in ndjson_ranges(path, per_range):
                yield Part(path, format, lines=(start, end, first)), count
        else:
            yield whole, counted[path] if path in counted else _estimate(path, kind)


def _estimate(path: str, kind: str) -> int:
    """About how many events a file that is read whole holds."""
    if kind == "evtx":
        from sigma_arrow.readers.evtx import count_records

        counted = count_records(path)
        if counted is not None:
            return max(1, counted)
    try:
        return max(1, os.path.getsize(path) // BYTES_PER_EVENT)
    except OSError:
        return 1


def _splittable(path: str, kind: str) -> bool:
    """Whether ``path`` is a big, plain (uncompressed) NDJSON file."""
    return _plain_ndjson(path, kind, SPLIT_MIN_BYTES)


def _plain_ndjson(path: str, kind: str, min_bytes: int = 0) -> bool:
    """Whether ``path`` is a local, uncompressed NDJSON file of at least ``min_bytes`` bytes."""
    from sigma_arrow.readers.inputs import compression_of
    from sigma_arrow.readers.json import detect_layout

    if kind not in ("json", "jsonl") or path == "-" or "://" in path or not os.path.isfile(path):
        return False
    try:
        if os.path.getsize(path) < min_bytes:
            return False
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    if compression_of(path, head) is not None:
        return False
    return kind == "jsonl" or detect_layout(head) == "ndjson"


def _parquet_filesystem(path: str) -> Any:
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(path)[0] if "://" in path else pafs.LocalFileSystem()


def _parquet_parts(path: str, format: str, engine_rows: int) -> Iterator[tuple[Part, int]]:
    """Row groups of each file, grouped into parts of about ``engine_rows`` rows."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from sigma_arrow.readers.parquet import footer as parquet_footer
    from sigma_arrow.readers.parquet import resolve

    try:
        filesystem, files = resolve(path)
    except (OSError, ValueError, pa.ArrowException):
        yield Part(path, format), 1  # the reader reports it
        return
    local = isinstance(filesystem, pafs.LocalFileSystem)
    for file in files:
        try:
            if local:
                # Through the reader's footer cache: parsed once here, before the workers are
                # forked, and then neither planning nor the workers parse it again.
                metadata = parquet_footer(filesystem, file.path, True)[1]
            else:
                with filesystem.open_input_file(file.path) as handle:
                    metadata = pq.ParquetFile(handle).metadata
            sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        except (OSError, ValueError, pa.ArrowException):
            yield Part(path, format, parquet=((file, None),)), 1  # the reader reports it
            continue
        groups: list[int] = []
        rows = 0
        for group, size in enumerate(sizes):
            if groups and rows + size > engine_rows:
                yield Part(path, format, parquet=((file, tuple(groups)),)), rows
                groups, rows = [], 0
            groups.append(group)
            rows += size
        if groups or not sizes:
            yield Part(path, format, parquet=((file, tuple(groups)),)), max(rows, 1)


def ndjson_ranges(path: str, lines_per_range: int) -> Iterator[tuple[int, int, int, int]]:
    """(start byte, end byte, first record index, records) of consecutive ranges of an NDJSON file.

    Each range holds ``lines_per_range`` non-blank lines (the last one the rest) and starts where a
    line starts; blank lines count for nothing, as in ``JsonReader``. Lines are counted by the native
    decoder (memchr speed: ~0.1 s per GB), else found with numpy (~1 s per GB, measured here).
    """
    from sigma_arrow.flatten import native_decode_enabled

    if native_decode_enabled() and os.path.isfile(path):
        yield from _native_ndjson_ranges(path, lines_per_range)
        return
    from sigma_arrow.readers.json import line_blocks

    size = os.path.getsize(path)
    starts: list[int] = [0]  # first byte of each range
    counted = 0  # non-blank lines seen
    with open(path, "rb") as handle:
        for offset, complete in line_blocks(handle, _SCAN_BLOCK):
            need = len(starts) * lines_per_range - counted  # lines until the next range starts
            line_starts = _nonblank_line_starts(complete)
            while need < len(line_starts):
                starts.append(offset + int(line_starts[need]))
                yield starts[-2], starts[-1], (len(starts) - 2) * lines_per_range, lines_per_range
                need += lines_per_range
            counted += len(line_starts)
    last = counted - (len(starts) - 1) * lines_per_range
    yield starts[-1], size, (len(starts) - 1) * lines_per_range, last


def _native_ndjson_ranges(path: str, lines_per_range: int) -> Iterator[tuple[int, int, int, int]]:
    """``ndjson_ranges`` by the native line counter over a memory map of the file (same starts)."""
    from sigma_arrow.flatten import count_ndjson_lines
    from sigma_arrow.readers.json import _BOM, MAP_WINDOW, mapped_lines

    size = os.path.getsize(path)
    starts: list[int] = [0]  # first byte of each range
    counted = 0  # non-blank lines seen
    with open(path, "rb") as handle:
        fd = handle.fileno()
        position = len(_BOM) if os.pread(fd, len(_BOM), 0) == _BOM else 0
        window = MAP_WINDOW
        while position < size:
            with mapped_lines(fd, position, size, window) as lines:
                if lines is None:  # one line longer than the window
                    window *= 2
                    continue
                at = lines.start
                while True:
                    need = len(starts) * lines_per_range - counted  # lines until the next range
                    if need:  # 0: the range starts with the first line of this window
                        at, found = count_ndjson_lines(lines.view, at, need)
                        counted += found
                        if found < need:
                            break
                    after, found = count_ndjson_lines(lines.view, at, 1)  # the line starting the range
                    if not found:
                        break  # in the next window (need is 0 there)
                    newline = lines.mapped.rfind(b"\n", at, after - 1)  # blank lines before it
                    starts.append(lines.offset + (at if newline < 0 else newline + 1))
                    yield starts[-2], starts[-1], (len(starts) - 2) * lines_per_range, lines_per_range
                position = lines.offset + len(lines.view)
    last = counted - (len(starts) - 1) * lines_per_range
    yield starts[-1], size, (len(starts) - 1) * lines_per_range, last


def _nonblank_line_starts(data: bytes) -> np.ndarray:
    """Offsets (in ``data``) where its non-blank lines start; ``data`` begins at a line start."""
    array = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(array == 10)
    begins = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    keep = begins < ends  # empty lines (and the nothing after a final newline) are blank
    begins, ends = begins[keep], ends[keep]
    doubtful = np.flatnonzero(_SPACE[array[begins]])
    if len(doubtful):
        blank = [int(i) for i in doubtful if data[begins[i] : ends[i]].isspace()]
        if blank:
            begins = np.delete(begins, blank)
    return begins


# ---------------------------------------------------------------- running a unit (any process)


@dataclass
class ReadOptions:
    """What reading and evaluating a unit needs besides the unit."""

    format: str
    batch_size: int
    engine_rows: int
    include_event: bool
    min_level: str | None
    backend: str = "auto"
    #: ``"jsonl"``: workers also encode their match records as JSON Lines (what ``JsonLinesSink``
    #: writes), so the calling process only copies bytes; the batches they return lose ``event``.
    encode: str | None = None
    #: Directory where workers spool their encoded matches (set by ``run_units``): the bytes go
    #: through the page cache instead of the memory of two processes and a pipe.
    spool: str | None = None


def read_unit(
    unit: Unit,
    ruleset: Any,
    options: ReadOptions,
    errors: ErrorLog,
    count: Callable[[str, int], None],
) -> Iterator[EngineBatch]:
    """Read a unit's parts in order; yield its engine batches (coalesced to ``engine_rows`` rows).

    ``count(input, rows)`` is told every batch read (``rows`` 0 when an input starts).
    """
    # The native engine takes sparse batches: big ones at a fraction of the memory (SparseBatch).
    if options.backend not in ("auto", "native"):
        return coalesce(_read_parts(unit, ruleset, options, errors, count), options.engine_rows)
    batches = _read_parts(unit, ruleset, options, errors, count, sparse=True)
    return coalesce(batches, options.engine_rows, SPARSE_BATCH_BYTES, sparse=True)


def _read_parts(
    unit: Unit,
    ruleset: Any,
    options: ReadOptions,
    errors: ErrorLog,
    count: Callable[[str, int], None],
    *,
    sparse: bool = False,
) -> Iterator[EngineBatch]:
    """Yield the unit's batches as read (``sparse``: decoders may give ``SparseBatch``es)."""
    from sigma_arrow.readers.evtx import EvtxReader
    from sigma_arrow.readers.json import read_ndjson_range
    from sigma_arrow.readers.parquet import ParquetReader
    from sigma_arrow.readers.registry import reader_for

    parts = list(unit.parts)
    position = 0
    while position < len(parts):
        part = parts[position]
        position += 1
        small_evtx = _evtx_run(parts, position - 1, sparse)
        if len(small_evtx) > 1 or (sparse and small_evtx):
            # Many small EVTX files (a triage collection): their records are decoded together. For
            # the native engine every plain EVTX file goes this way (decoded as parsed, a block at a
            # time). Blocks stay ``batch_size`` rows: where blocks are cut decides the order of the
            # fields in events (merged blocks keep each one's order), so output stays the same.
            position += len(small_evtx) - 1
            for member in small_evtx:
                count(member.input, 0)
            blocks = EvtxReader().read_small_files(
                [member.input for member in small_evtx],
                batch_size=options.batch_size,
                errors=errors,
                sparse=sparse,
            )
            for batch, counts in blocks:
                for source, rows in counts:
                    count(source, rows)
                yield batch
            continue
        count(part.input, 0)
        try:
            if part.parquet:
                # Dictionary strings for the native engine (it takes their codes as its value index).
                parquet = ParquetReader(
                    rules=ruleset,
                    include_event=options.include_event,
                    max_batch_bytes=ENGINE_BATCH_BYTES,
                    dictionary=sparse,
                    sparse=sparse,
                )
                batches = parquet.read_files(
                    _parquet_filesystem(part.input),
                    part.parquet,
                    batch_size=options.engine_rows,
                    errors=errors,
                )
            elif part.lines is not None or (sparse and _whole_plain_ndjson(part)):
                # A whole plain NDJSON file is its one range: decoded straight into SparseBatches.
                start, end, first = part.lines or (0, os.path.getsize(part.input), 0)
                batches = read_ndjson_range(
                    part.input, start, end, first, batch_size=options.batch_size, errors=errors, sparse=sparse
                )
            else:
                reader = reader_for(
                    part.input, part.format, rules=ruleset, include_event=options.include_event
                )
                # Columnar inputs are read in engine-sized batches; JSON/EVTX decoding in smaller
                # blocks (its memory grows with the block), coalesced afterwards.
                size = options.engine_rows if reader.name in ("parquet", "arrow") else options.batch_size
                batches = reader.read(part.input, batch_size=size, errors=errors)
            for batch in batches:
                count(part.input, batch.num_rows)
                if batch.num_rows:
                    yield batch
        except GeneratorExit:
            raise
        except Exception as exc:  # one bad input never stops the scan: report it and go on
            kind = "file" if isinstance(exc, OSError) else "read"
            errors.report(part.input, None, kind, f"{type(exc).__name__}: {exc}")


def _whole_plain_ndjson(part: Part) -> bool:
    """Whether the part is a whole local, uncompressed NDJSON file."""
    from sigma_arrow.readers.registry import detect_format

    try:
        kind = detect_format(part.input) if part.format == "auto" else part.format
    except Exception:
        return False  # the reader reports it
    return _plain_ndjson(part.input, kind)


def _evtx_run(parts: list[Part], start: int, any_size: bool = False) -> list[Part]:
    """Return the consecutive whole-file parts from ``start`` on that are small, uncompressed EVTX.

    ``any_size``: local, uncompressed EVTX files of any size.
    """
    from sigma_arrow.readers.evtx import EvtxReader
    from sigma_arrow.readers.registry import reader_for

    run: list[Part] = []
    for part in parts[start:]:
        if part.parquet or part.lines is not None:
            break
        try:
            reader = reader_for(part.input, part.format)
        except Exception:
            break  # the per-part path reports it
        if not isinstance(reader, EvtxReader) or not reader.small(part.input, any_size=any_size):
            break
        run.append(part)
    return run


def coalesce(
    batches: Iterable[EngineBatch],
    rows: int,
    max_bytes: int = ENGINE_BATCH_BYTES,
    *,
    sparse: bool = False,
) -> Iterator[EngineBatch]:
    """Merge consecutive batches into batches of up to ``rows`` rows and ``max_bytes`` bytes.

    The engine's cost per batch is largely fixed. Rows keep their own ``__source``/``__event_index``;
    columns missing from some batches become null; batches that cannot be merged stay separate.
    ``sparse``: batches become ``SparseBatch``es first (the bytes then count set values only).
    """
    pending: list[EngineBatch] = []
    count = size = 0
    for batch in batches:
        item: EngineBatch = batch
        if sparse and isinstance(batch, pa.RecordBatch) and INDEX_COLUMN in batch.schema.names:
            item = SparseBatch.from_batch(batch)
            del batch
        if pending and (
            count + item.num_rows > rows
            or size + item.nbytes > max_bytes
            or isinstance(item, SparseBatch) != isinstance(pending[0], SparseBatch)
        ):
            yield from _flush(pending)
            count = size = 0
        pending.append(item)
        count += item.num_rows
        size += item.nbytes
        if count >= rows or 2 * size > max_bytes:
            # Full (or too big to take another like it): hand it over now rather than hold it
            # while the next batch is read.
            del item
            yield from _flush(pending)
            count = size = 0
    if pending:
        yield from _flush(pending)


def _flush(pending: list[EngineBatch]) -> list[EngineBatch]:
    """Merge and forget the pending batches (not kept alive while the merged one is evaluated)."""
    merged = list(_merged(pending))
    pending.clear()
    return merged


def _merged(batches: list[EngineBatch]) -> Iterator[EngineBatch]:
    try:
        if all(isinstance(b, SparseBatch) for b in batches):
            parts = [b for b in batches if isinstance(b, SparseBatch)]
            # Consuming the parts halves the copy's peak memory; only where no column can reach
            # the 2 GiB of a string array (concat_arrays would then fail halfway through).
            yield SparseBatch.concat(parts, consume=sum(b.nbytes for b in parts) < 1 << 30)
        else:
            yield merge_batches([b for b in batches if isinstance(b, pa.RecordBatch)])
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        yield from batches


def evaluate(
    batch: EngineBatch, engine: Any, options: ReadOptions, errors: ErrorLog
) -> pa.RecordBatch | None:
    """Match records of one engine batch; an engine failure costs this batch only, and is reported."""
    try:
        found: pa.RecordBatch = engine.matches(
            batch, include_event=options.include_event, min_level=options.min_level
        )
        return found
    except Exception as exc:
        _report_failure(batch, errors, exc)
        return None


def evaluate_encoded(
    batch: EngineBatch,
    engine: Any,
    options: ReadOptions,
    errors: ErrorLog,
    out: Callable[[], int] | None = None,
) -> tuple[pa.RecordBatch | None, bytes | int | None, tuple[float, float]]:
    """Evaluate a batch; with ``options.encode`` also encode its match records as JSON Lines.

    Returns (match records, their JSON Lines or None, (engine seconds, encoding seconds)). With
    events in the output, the records come without the ``event`` struct: the encoder writes each
    event from the batch where it is (``evaluate_split``), never building the struct. ``out``:
    gives the file descriptor the JSON Lines are written to (called only when there are some);
    then the second item is how many bytes were written.
    """
    started = time.perf_counter()
    jsonl = options.encode == "jsonl"
    split = evaluate_split(batch, engine, options, errors) if jsonl and options.include_event else None
    found = split[0] if split is not None else evaluate(batch, engine, options, errors)
    evaluated = time.perf_counter()
    text: bytes | int | None = None
    if jsonl and found is not None and found.num_rows:
        if out is None:
            text = encode_jsonl_events(*split) if split is not None else encode_jsonl(found)
        else:
            fd = out()
            text = encode_jsonl_events(*split, fd=fd) if split is not None else encode_jsonl(found, fd=fd)
    return found, text, (evaluated - started, time.perf_counter() - evaluated)


def evaluate_split(
    batch: EngineBatch, engine: Any, options: ReadOptions, errors: ErrorLog
) -> tuple[pa.RecordBatch, EngineBatch, np.ndarray] | None:
    """``evaluate`` for JSON Lines: (records without ``event``, the batch of the events, each one's row).

    ``Engine.matches_and_events``: ``encode_jsonl_events`` writes the events from where they are,
    without the ``event`` struct ever being built. None when the engine failed (reported).
    """
    try:
        split: tuple[pa.RecordBatch, EngineBatch, np.ndarray] = engine.matches_and_events(
            batch, min_level=options.min_level
        )
        return split
    except Exception as exc:
        _report_failure(batch, errors, exc)
        return None


def _report_failure(batch: EngineBatch, errors: ErrorLog, exc: Exception) -> None:
    """Report an engine failure on a batch (its source and first record)."""
    from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

    first = None
    if INDEX_COLUMN in batch.schema.names and batch.num_rows:
        value = batch.column(INDEX_COLUMN)[0].as_py()
        first = value if isinstance(value, int) else None
    source = batch.column(SOURCE_COLUMN)[0].as_py() if SOURCE_COLUMN in batch.schema.names else "?"
    errors.report(
        str(source),
        first,
        "engine",
        f"batch of {batch.num_rows} events from record {first} not evaluated: {type(exc).__name__}: {exc}",
    )


_LIBC: Any = None
#: A process keeps freed heap memory for its next batch up to this resident size (see _release_memory).
KEEP_RESIDENT_BYTES = 768 << 20
#: glibc mallopt parameters: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD (and the largest it accepts).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX = -1, -3, 32 << 20


def _libc() -> Any:
    """Return glibc through ctypes, or False where there is none."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def _resident_bytes() -> int:
    """Return the resident set size of this process now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _release_memory() -> None:
    """Give freed heap memory back to the system once this process holds more than it needs.

    Batches come one after another, each needing about as much memory as the last: memory handed
    back is faulted in again at once, which costs system time here (a 1M-event NDJSON scan spent
    ~0.9 s of its 1.8 s of system time on it, measured). So freed memory is kept while the process
    stays under ``KEEP_RESIDENT_BYTES`` and trimmed only above it (RSS fell from ~870 MB to ~280 MB,
    in ~20 ms): the peak memory target holds either way. glibc only; elsewhere a no-op.
    """
    libc = _libc()
    if libc and _resident_bytes() > KEEP_RESIDENT_BYTES:
        libc.malloc_trim(0)


def keep_freed_memory() -> None:
    """Tune glibc malloc to reuse freed memory rather than hand it back and fault it in again.

    Without it, blocks over the dynamic mmap threshold are mapped and unmapped per allocation, and
    ``free`` trims the heap top past 128 KB: every batch's big column buffers were fresh pages.
    """
    libc = _libc()
    if libc:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP_RESIDENT_BYTES)


# ---------------------------------------------------------------- worker processes


@dataclass
class UnitResult:
    """What a worker sends back for one unit."""

    per_input: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    matches: list[pa.RecordBatch] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    read_seconds: float = 0.0
    engine_seconds: float = 0.0
    encode_seconds: float = 0.0
    #: CPU seconds the worker spent on the unit, and wall seconds (CPU < wall: the machine is busy).
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: The engine profile's stage seconds spent on this unit.
    profile: dict[str, float] = field(default_factory=dict)
    #: Rules the worker's engine cannot run: (rule id, reason).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: With ``ReadOptions.encode``: each match batch as JSON Lines ...
    encoded: list[bytes] = field(default_factory=list)
    #: ... or, with ``ReadOptions.spool``, the file holding them and the size of each batch's part.
    spool_path: str | None = None
    spool_sizes: list[int] = field(default_factory=list)

    def encoded_parts(self) -> Iterator[bytes | memoryview | None]:
        """Each match batch's JSON Lines (None without encoding); a spool file is removed after.

        On POSIX a spool file is mapped, not read: each part is a view of its pages in the page
        cache, which a writer hands to the kernel as they are (no copy into this process's memory,
        whose fresh pages cost more than the copy). A view stays valid after the next part.
        """
        if self.spool_path is None:
            if self.encoded:
                yield from self.encoded
            else:
                yield from [None] * len(self.matches)
            return
        try:
            with open(self.spool_path, "rb") as spooled:
                mapped = _map_file(spooled) if os.name == "posix" else None
                if mapped is None:
                    for size in self.spool_sizes:
                        yield spooled.read(size)
                    return
                start = 0
                for size in self.spool_sizes:
                    yield memoryview(mapped)[start : start + size]
                    start += size
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.spool_path)  # a mapping outlives its name: the views stay readable


def _map_file(handle: Any) -> mmap.mmap | None:
    """Map a whole file read-only (None when empty or it cannot be mapped: read it instead)."""
    try:
        size = os.fstat(handle.fileno()).st_size
        return mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) if size else None
    except (OSError, ValueError):
        return None


class _Capture(ErrorLog):
    """An ErrorLog that keeps every problem, in order (a worker's, replayed by the caller)."""

    def __init__(self) -> None:
        super().__init__(max_examples=1 << 62)

    def take(self) -> list[InputProblem]:
        """Return and forget the problems recorded so far."""
        with self._lock:
            taken, self.examples = self.examples, []
            self.counts.clear()
            return taken


_WORKER: dict[str, Any] = {}


#: Modules with thread pools that a forked child cannot use (no at-fork handling): their presence
#: means spawning. pyarrow (at-fork handlers), numpy and glibc malloc are fork-safe.
_FORK_UNSAFE_MODULES = ("polars", "datafusion", "confluent_kafka", "duckdb", "dask", "distributed")


def fork_is_safe() -> bool:
    """Whether worker processes may be forked from this process.

    A thread holding a lock at the fork (a progress display writing to stderr, a library's pool)
    would leave that lock held forever in the child, so only a single-threaded Python process
    without a fork-unsafe library loaded forks; ``SIGMA_ARROW_SPAWN_WORKERS=1`` forces spawning.
    """
    if os.environ.get("SIGMA_ARROW_SPAWN_WORKERS", "").strip() in ("1", "true", "yes"):
        return False
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if threading.active_count() != 1:
        return False
    return not any(name in sys.modules for name in _FORK_UNSAFE_MODULES)


def _init_forked_worker(ruleset: Any, engine: Any, options: ReadOptions) -> None:
    """Forked worker start: the RuleSet and the engine are the caller's, inherited, not rebuilt."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    os.environ["SIGMA_ARROW_DECODE_WORKERS"] = "1"
    use_system_allocator()
    _WORKER["ruleset"] = ruleset
    _WORKER["options"] = options
    _WORKER["engine"] = engine


def _worker_ready() -> int:
    """Do nothing (submitting it starts the pool's processes); return the worker's pid."""
    return os.getpid()


def _init_worker(rules_path: str, options: ReadOptions) -> None:
    """Worker start: one decoding process (no nested pools), the RuleSet, the engine built once."""
    import pickle

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    os.environ["SIGMA_ARROW_DECODE_WORKERS"] = "1"
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    use_system_allocator()
    from sigma_arrow.engine import Engine
    from sigma_arrow.readers.registry import reader_for  # noqa: F401 - imported while the rules come

    parent = os.getppid()
    while not os.path.exists(rules_path):  # the scan writes it right after starting the workers
        if os.getppid() != parent:
            raise WorkerError("the scan ended before its rules reached this worker")
        time.sleep(0.002)
    with open(rules_path, "rb") as handle:
        ruleset = pickle.loads(handle.read())
    _WORKER["ruleset"] = ruleset
    _WORKER["options"] = options
    _WORKER["engine"] = Engine(ruleset, backend=options.backend)


def _run_unit(unit: Unit) -> UnitResult:
    """Read, evaluate and build the match records of one unit (in a worker)."""
    ruleset, options, engine = _WORKER["ruleset"], _WORKER["options"], _WORKER["engine"]
    result = UnitResult()
    log = _Capture()
    before = dict(engine.profile.seconds)
    cpu, wall = time.process_time(), time.perf_counter()

    def count(source: str, rows: int) -> None:
        result.per_input[source] = result.per_input.get(source, 0) + rows

    batches = read_unit(unit, ruleset, options, log, count)
    with contextlib.ExitStack() as stack:
        _evaluate_unit(batches, engine, options, log, result, stack)
    result.problems = log.take()
    result.profile = {k: v - before.get(k, 0.0) for k, v in engine.profile.seconds.items()}
    result.skipped = list(engine.skipped)
    result.cpu_seconds = time.process_time() - cpu
    result.wall_seconds = time.perf_counter() - wall
    return result


def _evaluate_unit(
    batches: Iterator[EngineBatch],
    engine: Any,
    options: ReadOptions,
    log: ErrorLog,
    result: UnitResult,
    stack: contextlib.ExitStack,
) -> None:
    spool: list[int] = []  # the unit's spool file, opened when the first match records come

    def spool_fd() -> int:
        if not spool:
            assert options.spool is not None
            handle, result.spool_path = tempfile.mkstemp(suffix=".jsonl", dir=options.spool)
            stack.callback(os.close, handle)
            spool.append(handle)
        return spool[0]

    while True:
        started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        finally:
            result.read_seconds += time.perf_counter() - started
        _release_memory()  # decoding's garbage, before the engine allocates its own
        result.batches += 1
        # With a spool, the encoder writes the JSON Lines straight into it (no bytes object).
        out = spool_fd if options.spool is not None else None
        found, text, seconds = evaluate_encoded(batch, engine, options, log, out)
        result.engine_seconds += seconds[0]
        result.encode_seconds += seconds[1]
        if found is not None and found.num_rows:
            if isinstance(text, int):
                result.spool_sizes.append(text)
            elif text is not None:
                result.encoded.append(text)
            if "event" in found.schema.names:
                found = found.drop_columns(["event"])
            result.matches.append(found)
        del batch, found, text
        _release_memory()


def run_units(
    units: Iterator[Unit],
    ruleset: Any,
    options: ReadOptions,
    workers: int,
    engine: Any = None,
    on_start: Callable[[], None] | None = None,
) -> Iterator[UnitResult]:
    """Evaluate units in ``workers`` worker processes; results come back in unit order.

    ``engine``: an engine built by the caller; when ``fork_is_safe()``, the workers are forked from
    this process and use it. Otherwise they are spawned and build their own. ``on_start`` is called
    once the worker processes exist (the CLI starts its progress thread there: after the fork).
    At most ``workers + 1`` units are in flight (memory stays bounded). A worker that dies raises
    WorkerError naming the unit it was working on.
    """
    from sigma_arrow.cache import dumps

    scratch = tempfile.mkdtemp(prefix="sigma-arrow-scan-", dir=spool_root())
    spool = scratch if options.encode else None
    options = dataclasses.replace(options, spool=spool)
    rules_path = os.path.join(scratch, "ruleset.pickle")
    forked = engine is not None and fork_is_safe()
    try:
        if forked:
            pool = _forked_pool(ruleset, engine, options, workers)
        else:
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init_worker, initargs=(rules_path, options)
            )
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise WorkerError(f"cannot start scan workers: {exc}") from exc
    if on_start is not None:
        on_start()
    pending: deque[tuple[Unit, Future[UnitResult]]] = deque()
    finished = False

    def send_rules() -> None:
        # Submitting the first units started the workers (interpreter, imports: ~0.4 s); the rules
        # are serialised meanwhile, and they wait for the file (written whole, renamed into place).
        if not forked and not os.path.exists(rules_path):
            with open(rules_path + ".part", "wb") as handle:
                handle.write(dumps(ruleset))
            os.replace(rules_path + ".part", rules_path)

    try:
        for unit in units:
            pending.append((unit, _submit(pool, unit)))
            if len(pending) == workers:
                send_rules()
            while len(pending) > workers:
                yield _result(*pending.popleft())
        if pending:
            send_rules()
        while pending:
            yield _result(*pending.popleft())
        finished = True
    finally:
        for _, future in pending:
            future.cancel()
        if not finished:
            _stop(pool)
        pool.shutdown(wait=finished, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)


#: Free space a memory filesystem needs before scan spools go there (they hold a few units' output).
SPOOL_MIN_FREE_BYTES = 2 << 30
_MEMORY_FILESYSTEM = "/dev/shm"


def spool_root() -> str | None:
    """Where a parallel scan keeps its scratch files: the workers' JSON Lines and the rules.

    ``SIGMA_ARROW_SPOOL_DIR`` if set; else, unless ``TMPDIR`` names a place, Linux's memory
    filesystem when it has room: a spool is written once, read once and deleted, and on a disk
    filesystem the kernel also writes it back to disk, on the cores the scan uses (measured: 4 x
    90 MB cost 0.1-0.6 CPU-s on ext4, 0.12 on tmpfs). None: the system's temporary directory.
    """
    configured = os.environ.get("SIGMA_ARROW_SPOOL_DIR", "").strip()
    if configured:
        return configured
    if os.environ.get("TMPDIR") or not sys.platform.startswith("linux"):
        return None
    try:
        room = os.statvfs(_MEMORY_FILESYSTEM)
    except OSError:
        return None
    if room.f_bavail * room.f_frsize < SPOOL_MIN_FREE_BYTES or not os.access(_MEMORY_FILESYSTEM, os.W_OK):
        return None
    return _MEMORY_FILESYSTEM


def _forked_pool(ruleset: Any, engine: Any, options: ReadOptions, workers: int) -> ProcessPoolExecutor:
    """Fork a pool's processes now; they share this process's RuleSet and engine."""
    import gc

    # Objects that exist now are never collected in the workers: freezing them keeps the workers'
    # collections from touching (and so copying) the shared pages.
    gc.freeze()
    try:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_forked_worker,
            initargs=(ruleset, engine, options),
        )
        pool.submit(_worker_ready)  # forks every process now, before the pool's own thread starts
    finally:
        gc.unfreeze()
    return pool


def _submit(pool: ProcessPoolExecutor, unit: Unit) -> Future[UnitResult]:
    try:
        return pool.submit(_run_unit, unit)
    except (BrokenProcessPool, RuntimeError) as exc:
        raise WorkerError(f"a scan worker process died (before {unit.describe()}): {exc}") from exc


def _result(unit: Unit, future: Future[UnitResult]) -> UnitResult:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise WorkerError(
            f"a scan worker process died while scanning {unit.describe()} (killed, or out of memory?); "
            "rerun with --workers 1 to scan in one process"
        ) from exc
    except Exception as exc:
        raise WorkerError(f"scan worker failed on {unit.describe()}: {type(exc).__name__}: {exc}") from exc


def _stop(pool: ProcessPoolExecutor) -> None:
    """End this pool's worker processes now (an interrupted or failed scan)."""
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()


def use_system_allocator() -> None:
    """Make pyarrow allocate with malloc, unless ``ARROW_DEFAULT_MEMORY_POOL`` chooses a pool.

    Measured on 1M-event scans here: with pyarrow's default (mimalloc), scans spend 2-3x more system
    time on page faults and run up to 2x longer (most with worker processes); malloc reuses freed
    memory and returns big blocks. The CLI and every scan worker call this.
    """
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
    keep_freed_memory()


def choose_workers(
    requested: int | None,
    paths: list[str],
    format: str,
    cores: int | None = None,
    counted: dict[str, int] | None = None,
) -> int:
    """How many worker processes a scan of ``paths`` uses (1: in the calling process).

    ``requested``: None (the configured default), 0 (automatic: every core when the inputs hold about
    ``AUTO_MIN_EVENTS`` events or more, ``AUTO_MIN_EVENTS_FORKED`` where workers are forked,
    estimated from Parquet footers, EVTX chunk headers and file sizes, except for columnar inputs
    on machines of up to ``IN_PROCESS_COLUMNAR_CORES`` cores when workers must be spawned), or a
    number.
    Standard input is always read in the calling process. ``cores``: the machine's (default: all);
    ``counted``: as for ``estimate_events``.
    """
    wanted = default_workers() if requested is None else max(0, requested)
    if "-" in paths or not paths:
        return 1
    if wanted != 0:
        return wanted
    cores = cores or os.cpu_count() or 1
    if cores < 2:
        return 1
    forked = fork_is_safe()
    if cores <= IN_PROCESS_COLUMNAR_CORES and not forked and _all_columnar(paths, format):
        return 1
    enough = AUTO_MIN_EVENTS_FORKED if forked else AUTO_MIN_EVENTS
    return cores if estimate_events(paths, format, enough, counted) >= enough else 1


def _all_columnar(paths: list[str], format: str) -> bool:
    """Whether every input is Parquet or Arrow IPC."""
    from sigma_arrow.readers.registry import detect_format

    for path in paths:
        try:
            kind = detect_format(path) if format == "auto" else format
        except Exception:
            return False
        if kind not in ("parquet", "arrow"):
            return False
    return True


def estimate_events(paths: list[str], format: str, enough: int, counted: dict[str, int] | None = None) -> int:
    """Roughly how many events the inputs hold (stops counting at ``enough``).

    ``counted`` keeps the estimate of each file read whole (not Parquet), for reuse.
    """
    from sigma_arrow.readers.registry import detect_format

    total = 0
    for path in paths:
        try:
            kind = detect_format(path) if format == "auto" else format
        except Exception:
            continue
        if kind == "parquet":
            total += sum(rows for _, rows in _parquet_parts(path, format, 1 << 62))
        elif counted is not None and path in counted:
            total += counted[path]
        else:
            estimate = _estimate(path, kind)
            if counted is not None:
                counted[path] = estimate
            total += estimate
        if total >= enough:
            break
    return total
