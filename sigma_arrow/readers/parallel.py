"""Decoding big inputs on every core: JSON documents → flattened batches in worker processes.

Parsing and flattening JSON is Python work (one core per process), so large NDJSON and EVTX inputs
hand blocks of documents to a small process pool and take the batches back in input order, a few
blocks in flight. Small inputs stay in-process (starting workers costs about a second).

The pool is off by default in the library (worker processes are spawned, which re-imports the
caller's ``__main__``: scripts without an ``if __name__ == "__main__":`` guard would break); the CLI
turns it on with ``configure()`` when cores are idle. ``SIGMA_ARROW_DECODE_WORKERS`` overrides both
(``1``: off). If the pool cannot run, decoding falls back to the calling process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pyarrow as pa

from sigma_arrow.errorlog import ErrorLog, InputProblem
from sigma_arrow.flatten import decode_lines

#: Inputs smaller than this (bytes on disk) are decoded in-process.
PARALLEL_MIN_BYTES = 48 << 20

_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_broken = False
_default_workers = 1
_lock = threading.Lock()


def configure(workers: int | None = None) -> None:
    """Set the default pool size (None: automatic; 1: decode in-process).

    Automatic means the CPU count (up to 4) when at least one core is idle (load average below
    ``cores - 1``), else 1: on a machine that is already busy, extra processes only add contention.
    """
    global _default_workers
    if workers is not None:
        _default_workers = max(1, workers)
        return
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on every platform
        load = 0.0
    _default_workers = min(4, cores) if cores > 1 and load <= cores - 1 else 1


def decode_workers() -> int:
    """How many decoding processes to use (``SIGMA_ARROW_DECODE_WORKERS``, else ``configure()``'s)."""
    configured = os.environ.get("SIGMA_ARROW_DECODE_WORKERS", "")
    if configured.strip().isdigit():
        return max(1, int(configured))
    return _default_workers


def worth_it(path: str, workers: int | None = None) -> bool:
    """Whether ``path`` is big enough for the pool (and the pool is on)."""
    if _broken or (workers if workers is not None else decode_workers()) < 2 or path == "-":
        return False
    try:
        return os.path.getsize(path) >= PARALLEL_MIN_BYTES
    except OSError:
        return False


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=True)
            # spawn: the parent has threads (reader, engine); forking them is unsafe.
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            _pool_size = workers
        return _pool


@atexit.register
def _shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def _decode_job(
    lines: Sequence[bytes | str], source: str, indices: range | Sequence[int], offsets: Sequence[int] | None
) -> tuple[pa.RecordBatch, list[InputProblem]]:
    log = ErrorLog(max_examples=1 << 62)
    batch = decode_lines(lines, source=source, indices=indices, errors=log, offsets=offsets)
    return batch, log.examples


Job = tuple[Sequence[bytes | str], range | Sequence[int], Sequence[int] | None]


def decode_in_pool(
    jobs: Iterable[Job], source: str, errors: ErrorLog, workers: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Decode ``(lines, indices, offsets)`` jobs in worker processes; batches come back in job order."""
    size = workers if workers is not None else decode_workers()
    pending: deque[tuple[Future[Result] | None, Job]] = deque()
    iterator = iter(jobs)
    try:
        pool: ProcessPoolExecutor | None = _get_pool(size)
    except (OSError, RuntimeError):
        pool = None
    try:
        for job in iterator:
            future = _submit(pool, job, source)
            if future is None:
                pool = None
            pending.append((future, job))
            while len(pending) > size:
                yield _collect(*pending.popleft(), source, errors)
        while pending:
            yield _collect(*pending.popleft(), source, errors)
    finally:
        for future, _ in pending:
            if future is not None:
                future.cancel()


Result = tuple[pa.RecordBatch, list[InputProblem]]


def _submit(pool: ProcessPoolExecutor | None, job: Job, source: str) -> Future[Result] | None:
    global _broken
    if pool is None or _broken:
        return None
    try:
        return pool.submit(_decode_job, job[0], source, job[1], job[2])
    except (BrokenProcessPool, RuntimeError):
        _broken = True
        return None


def _collect(future: Future[Result] | None, job: Job, source: str, errors: ErrorLog) -> pa.RecordBatch:
    """Return the job's batch from its worker, or decode it here when the pool could not."""
    global _broken
    if future is not None:
        try:
            batch, problems = future.result()
        except (BrokenProcessPool, OSError, RuntimeError):
            _broken = True  # e.g. spawning failed; decode in-process from now on
        else:
            for problem in problems:
                errors.add(problem)
            return batch
    return decode_lines(job[0], source=source, indices=job[1], errors=errors, offsets=job[2])
