"""Where a Kafka job member decodes and evaluates its batches: in its own process, or in workers.

The engine is GIL-bound, so one process evaluates on one core. With ``workers`` > 1 the member's
process only consumes, writes outputs and commits; each batch's message values go to one of
``workers`` spawned processes, which decode, evaluate and encode the match records, and the results
are taken back **in batch order** (the job commits strictly in order). While workers evaluate, the
member fetches the next batch.

Hand-off (measured on 131,072 realistic messages, 112 MB): the values are written into a reusable
``memfd`` (one ``pwritev`` per 1,024 values, 0.05 s CPU) that the worker opens through
``/proc/<member pid>/fd``, reads and slices (0.06 s); pickling one joined buffer through the pool's pipe
cost 0.16-0.18 s in the member plus the worker's unpickling, and 0.5 s of wall time. Where memfd is
missing (not Linux) the joined buffer goes through the pipe.

A worker that dies fails the batch it held: the job stops before committing it (``KafkaJobError``).
Workers also exit on their own when the member process dies (kill -9), so none is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from compiler.errors import SigmaArrowError
from sigma_arrow.kafka.decode import DecodedBatch, decode_message_block, decode_messages, restore_coordinates
from sigma_arrow.kafka.output import MatchSet

#: ``pwritev`` takes at most IOV_MAX (1,024 on Linux) buffers per call.
_IOV_MAX = 1024
_DIED = "a worker process died while evaluating a batch (killed, or out of memory?)"
#: Bytes a worker reads from a memfd at a time.
_READ_CHUNK = 16 << 20
#: How often a worker checks that the member process is still alive, in seconds.
_WATCH_SECONDS = 0.5


class WorkerFailure(SigmaArrowError):
    """A worker process died or failed while evaluating a batch (the batch is not committed)."""


class MatchEngine(Protocol):
    """What the job needs from sigma_arrow.engine.Engine (in process; workers build an Engine)."""

    def matches(
        self, batch: pa.RecordBatch, *, include_event: bool = True, min_level: str | None = None
    ) -> pa.RecordBatch:
        """Match records of one event batch."""
        ...


@dataclass(frozen=True, slots=True)
class EvaluateOptions:
    """How a batch's matches are built: events in records, level floor, whether Kafka keys are needed."""

    include_event: bool = True
    min_level: str | None = None
    keys: bool = False


@dataclass(slots=True)
class BatchOutcome:
    """What a batch produced: encoded match records (and keys), undecodable messages, timings."""

    payloads: list[bytes] = field(default_factory=list)
    #: Per payload: its Kafka message key (only with ``EvaluateOptions.keys``).
    keys: list[bytes] = field(default_factory=list)
    #: (position in the batch's messages, error); position -1: a problem no message could be named for.
    failures: list[tuple[int, str]] = field(default_factory=list)
    events: int = 0
    matches: int = 0
    decode_seconds: float = 0.0
    engine_seconds: float = 0.0
    encode_seconds: float = 0.0
    #: CPU seconds of the process that evaluated it (worker mode only).
    cpu_seconds: float = 0.0
    #: The worker that evaluated it (0: the member's process), its peak RSS so far in bytes, and the
    #: CPU seconds it spent starting (imports, unpickling the rules, building the engine).
    pid: int = 0
    peak_rss: int = 0
    start_seconds: float = 0.0


def evaluate_values(
    engine: MatchEngine,
    values: Sequence[bytes | None],
    sources: pa.Array,
    offsets: Sequence[int] | np.ndarray,
    options: EvaluateOptions,
) -> BatchOutcome:
    """Decode message values, evaluate the events and encode the match records (any process)."""
    tick = time.perf_counter()
    decoded = decode_messages(values, sources, offsets)
    return evaluate_decoded(engine, decoded, options, time.perf_counter() - tick)


def evaluate_decoded(
    engine: MatchEngine, decoded: DecodedBatch, options: EvaluateOptions, decode_seconds: float
) -> BatchOutcome:
    """Evaluate a decoded batch's events and encode the match records."""
    tock = time.perf_counter()
    outcome = BatchOutcome(failures=decoded.failures, events=decoded.events, decode_seconds=decode_seconds)
    if decoded.batch is None:
        return outcome
    # Events are serialised from the decoded batch (output.MatchSet), not from an event struct.
    found = engine.matches(decoded.batch, include_event=False, min_level=options.min_level)
    tick = time.perf_counter()
    outcome.engine_seconds = tick - tock
    if found.num_rows:
        records, rows, sub_index = restore_coordinates(found, decoded)
        match_set = MatchSet(records, rows, sub_index, decoded.batch if options.include_event else None)
        outcome.payloads = match_set.payloads()
        if options.keys:
            outcome.keys = match_set.message_keys()
        outcome.matches = len(match_set)
    outcome.encode_seconds = time.perf_counter() - tick
    return outcome


# ---------------------------------------------------------------- what a worker receives


@dataclass(frozen=True, slots=True)
class _Task:
    """One batch for a worker: value lengths (-1: tombstone), coordinates, and where the bytes are."""

    lengths: bytes
    source_names: tuple[str, ...]
    source_codes: bytes
    offsets: bytes
    #: (member pid, memfd number, bytes written), or None when ``blob`` holds the values.
    memfd: tuple[int, int, int] | None = None
    blob: bytes | None = None

    def values(self) -> list[bytes | None]:
        """Return the message values (tombstones as None)."""
        lengths = np.frombuffer(self.lengths, dtype=np.int64)
        ends = np.cumsum(np.maximum(lengths, 0))
        starts = ends - np.maximum(lengths, 0)
        if self.memfd is None:
            assert self.blob is not None
            values = _slices(self.blob, 0, starts.tolist(), ends.tolist())
        else:
            pid, number, _ = self.memfd
            handle = os.open(f"/proc/{pid}/fd/{number}", os.O_RDONLY)
            try:
                values = _read_slices(handle, starts, ends)
            finally:
                os.close(handle)
        for tombstone in np.flatnonzero(lengths < 0).tolist():
            values[tombstone] = None
        return values

    def data(self) -> bytes:
        """Return all the values' bytes, end to end (tombstones take none)."""
        if self.memfd is None:
            assert self.blob is not None
            return self.blob
        pid, number, written = self.memfd
        handle = os.open(f"/proc/{pid}/fd/{number}", os.O_RDONLY)
        try:
            return os.pread(handle, written, 0)
        finally:
            os.close(handle)

    def decode(self) -> DecodedBatch:
        """Decode the batch: from the values' bytes at once when each is one event, else value by value."""
        lengths = np.frombuffer(self.lengths, dtype=np.int64)
        sources, offsets = self.sources(), np.frombuffer(self.offsets, dtype=np.int64)
        decoded = decode_message_block(self.data(), lengths, sources, offsets)
        if decoded is None:
            decoded = decode_messages(self.values(), sources, offsets)
        return decoded

    def sources(self) -> pa.Array:
        """Per message: ``topic:partition``."""
        codes = pa.array(np.frombuffer(self.source_codes, dtype=np.int32))
        return pa.array(list(self.source_names), pa.string()).take(codes)


def _slices(data: bytes, base: int, starts: list[int], ends: list[int]) -> list[bytes | None]:
    """Slice the values out of ``data``, which holds the batch's bytes from offset ``base`` on."""
    return [data[start - base : end - base] for start, end in zip(starts, ends, strict=True)]


def _read_slices(handle: int, starts: np.ndarray, ends: np.ndarray) -> list[bytes | None]:
    """Read the values from the memfd a chunk at a time.

    ``pread`` rather than ``mmap``: mapped pages of the memfd would count in this worker's memory
    until all of the batch is sliced; a chunk at a time only ``_READ_CHUNK`` does.
    """
    values: list[bytes | None] = []
    count = len(starts)
    first = 0
    while first < count:
        base = int(starts[first])
        last = max(first + 1, int(np.searchsorted(ends, base + _READ_CHUNK, side="right")))
        data = os.pread(handle, int(ends[last - 1]) - base, base)
        values += _slices(data, base, starts[first:last].tolist(), ends[first:last].tolist())
        first = last
    return values


# ---------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _init_worker(payload: bytes, backend: str, options: EvaluateOptions, member: int) -> None:
    """Worker start: ignore Ctrl-C (the member handles it), build the engine once, watch the member."""
    import pickle

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["SIGMA_ARROW_DECODE_WORKERS"] = "1"
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    from sigma_arrow.engine import Engine
    from sigma_arrow.workers import use_system_allocator

    use_system_allocator()
    _WORKER["engine"] = Engine(pickle.loads(payload), backend=backend)
    _WORKER["options"] = options
    threading.Thread(target=_watch_member, args=(member,), daemon=True, name="watch-member").start()
    # At exit (the pool is shut down; results were sent synchronously), skip the interpreter's
    # teardown of the engine's many objects: ~0.5 CPU-seconds per worker, measured.
    atexit.register(os._exit, 0)
    _WORKER["start_seconds"] = time.process_time()


def _watch_member(member: int) -> None:
    """End this worker when the member process is gone (killed): its work can never be committed."""
    while True:
        time.sleep(_WATCH_SECONDS)
        if os.getppid() != member:
            os._exit(1)


def _ready() -> int:
    return os.getpid()


def _run_task(task: _Task) -> BatchOutcome:
    """Decode, evaluate and encode one batch (in a worker)."""
    from sigma_arrow.gc_pause import gc_paused

    cpu = time.process_time()
    with gc_paused():
        tick = time.perf_counter()
        decoded = task.decode()
        outcome = evaluate_decoded(_WORKER["engine"], decoded, _WORKER["options"], time.perf_counter() - tick)
        del decoded
    # No malloc_trim between batches (scan workers do it): the next batch needs as much memory again,
    # and faulting it back in cost ~1 us per event of system time (measured, 131,072-event batches).
    outcome.cpu_seconds = time.process_time() - cpu
    outcome.pid = os.getpid()
    outcome.start_seconds = _WORKER["start_seconds"]
    outcome.peak_rss = peak_rss()
    return outcome


def peak_rss() -> int:
    """Return the peak resident set size of this process, in bytes.

    Linux's ``VmHWM`` is the peak of this process image; ``ru_maxrss`` also counts the process that
    forked it, before ``exec`` (a worker spawned by a big process would report that one's size).
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------- the member's side


@dataclass(slots=True)
class Pending:
    """A batch handed to an evaluator: its outcome, or the worker's future and its memfd slot."""

    outcome: BatchOutcome | None = None
    future: Future[BatchOutcome] | None = None
    slot: int | None = None
    #: Seconds the member spent handing the batch over.
    handoff_seconds: float = 0.0

    def ready(self) -> bool:
        """Whether the outcome can be taken without waiting."""
        return self.future is None or self.future.done()


class Evaluator(Protocol):
    """Runs batches (in process, or in worker processes) and gives back their outcomes."""

    #: How many batches may be in flight at once.
    capacity: int
    workers: int

    def submit(
        self,
        values: Sequence[bytes | None],
        source_names: Sequence[str],
        source_codes: Any,
        offsets: Any,
    ) -> Pending:
        """Start evaluating a batch (values plus per-message ``source_codes`` and ``offsets`` arrays)."""
        ...

    def result(self, pending: Pending) -> BatchOutcome:
        """Wait for a batch's outcome (raises WorkerFailure when its worker died or failed)."""
        ...

    def discard(self, pending: Pending) -> None:
        """Forget a batch (waits until no worker reads its values any more)."""
        ...

    def close(self, *, wait: bool) -> None:
        """Stop the workers (``wait``: let them finish; else end them now)."""
        ...


class InlineEvaluator:
    """Evaluates each batch at once, in the member's process (``workers`` = 1)."""

    capacity = 1
    workers = 1

    def __init__(self, engine: MatchEngine, options: EvaluateOptions) -> None:
        self.engine = engine
        self.options = options

    def submit(
        self,
        values: Sequence[bytes | None],
        source_names: Sequence[str],
        source_codes: Any,
        offsets: Any,
    ) -> Pending:
        """Evaluate the batch now."""
        codes = np.frombuffer(source_codes, dtype=np.int32)
        sources = pa.array(list(source_names), pa.string()).take(pa.array(codes))
        return Pending(outcome=evaluate_values(self.engine, values, sources, offsets, self.options))

    def result(self, pending: Pending) -> BatchOutcome:
        """Return the outcome computed at submit."""
        assert pending.outcome is not None
        return pending.outcome

    def discard(self, pending: Pending) -> None:
        """Nothing to release."""

    def close(self, *, wait: bool) -> None:
        """Nothing to stop."""


class WorkerEvaluator:
    """Evaluates batches in ``workers`` spawned processes; at most ``workers + 1`` batches in flight."""

    def __init__(self, rules: Sequence[Any], backend: str, options: EvaluateOptions, workers: int) -> None:
        from sigma_arrow.cache import dumps
        from sigma_arrow.ruleset import RuleSet

        self.workers = workers
        # One batch more than workers: the next batch is fetched and handed over while every worker
        # is busy, so none waits for the member between batches.
        self.capacity = workers + 1
        payload = dumps(RuleSet(rules=list(rules)))
        context = multiprocessing.get_context("spawn")  # the member has librdkafka threads: no fork
        try:
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(payload, backend, options, os.getpid()),
            )
            # Start every worker now: they build their engines while the member joins its group.
            self.started = [self.pool.submit(_ready) for _ in range(workers)]
        except (OSError, RuntimeError) as exc:
            raise WorkerFailure(f"cannot start Kafka worker processes: {exc}") from exc
        self.slots: list[int] = []
        if hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd"):
            self.slots = [os.memfd_create(f"sigma-arrow-kafka-{n}") for n in range(self.capacity)]
        self.free = list(range(len(self.slots)))
        self.closed = False

    def submit(
        self,
        values: Sequence[bytes | None],
        source_names: Sequence[str],
        source_codes: Any,
        offsets: Any,
    ) -> Pending:
        """Hand the batch to a worker (the values through a free memfd slot, or the pipe)."""
        tick = time.perf_counter()
        count = len(values)
        present = values
        if None in values:  # tombstones: no bytes, length -1
            lengths = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64, count=count)
            present = [v for v in values if v is not None]
        else:
            lengths = np.fromiter(map(len, values), dtype=np.int64, count=count)  # type: ignore[arg-type]
        common = {
            "lengths": lengths.tobytes(),
            "source_names": tuple(source_names),
            "source_codes": bytes(source_codes),
            "offsets": bytes(offsets),
        }
        slot = None
        if self.free:
            slot = self.free.pop()
            number = self.slots[slot]
            written = 0
            for start in range(0, len(present), _IOV_MAX):
                written += os.pwritev(number, present[start : start + _IOV_MAX], written)  # type: ignore[arg-type]
            task = _Task(memfd=(os.getpid(), number, written), **common)  # type: ignore[arg-type]
        else:
            task = _Task(blob=b"".join(present), **common)  # type: ignore[arg-type, arg-type]
        try:
            future = self.pool.submit(_run_task, task)
        except (BrokenProcessPool, RuntimeError) as exc:
            if slot is not None:
                self.free.append(slot)
            raise WorkerFailure(_DIED) from exc
        return Pending(future=future, slot=slot, handoff_seconds=time.perf_counter() - tick)

    def result(self, pending: Pending) -> BatchOutcome:
        """Wait for the batch's outcome and free its slot."""
        assert pending.future is not None
        try:
            return pending.future.result()
        except BrokenProcessPool as exc:
            raise WorkerFailure(_DIED) from exc
        except Exception as exc:
            raise WorkerFailure(f"a worker failed on a batch: {type(exc).__name__}: {exc}") from exc
        finally:
            self._release(pending)

    def discard(self, pending: Pending) -> None:
        """Wait until the batch's worker is done with it (its slot is reused), ignore its outcome."""
        if pending.future is not None:
            wait_futures([pending.future])
        self._release(pending)

    def _release(self, pending: Pending) -> None:
        if pending.slot is not None:
            self.free.append(pending.slot)
            pending.slot = None

    def close(self, *, wait: bool) -> None:
        """Shut the pool down (ending the workers at once unless ``wait``) and close the slots."""
        if self.closed:
            return
        self.closed = True
        if not wait:
            for process in list((getattr(self.pool, "_processes", None) or {}).values()):
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    process.terminate()
        self.pool.shutdown(wait=wait, cancel_futures=True)
        for number in self.slots:
            with contextlib.suppress(OSError):
                os.close(number)
        self.slots = []
