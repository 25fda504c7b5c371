"""``scan()``: stream match records from inputs (files, directories, globs, stdin) through the engine.

The inputs are split into work units (``sigma_arrow.workers``). With one worker (the library default)
the units run here: one engine batch is read (and flattened) in a background thread while the engine
evaluates the previous one. With several, worker processes read, decode and evaluate units and this
process merges their match records in input order: the same records, in the same order.
Memory is bounded by the batch size and the few units in flight.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sigma_arrow.errorlog import ErrorLog, InputProblem
from sigma_arrow.readers.registry import expand_inputs
from sigma_arrow.ruleset import RuleSet

DEFAULT_BATCH_SIZE = 65_536
#: Read-ahead depth (engine batches, up to 262,144 rows each) of the background reader.
PREFETCH = 1


@dataclass
class ScanStats:
    """What a scan did: events read per input, matches by level and rule, problems, time per stage."""

    events: int = 0
    per_input: dict[str, int] = field(default_factory=dict)
    matches: int = 0
    by_level: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    rule_titles: dict[str, str] = field(default_factory=dict)
    rules_loaded: int = 0
    rules_skipped: int = 0
    inputs: int = 0
    batches: int = 0
    #: Skipped inputs/records by kind (a copy of the ErrorLog's counts, see ``errors``).
    skipped: Counter[str] = field(default_factory=Counter)
    #: Seconds per stage: ``read`` (parse + flatten), ``engine``, ``output`` (sinks, by the caller).
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "engine": 0.0, "output": 0.0})
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    #: Processes that evaluated the scan (1: the calling process).
    workers: int = 1
    #: Rules the engine cannot run: (rule id, reason).
    engine_skipped: list[tuple[str, str]] = field(default_factory=list)
    #: The engine's per-stage profile (summed over the workers in a parallel scan).
    engine_profile: Any = None
    #: Parallel scans: CPU and wall seconds the workers spent on units (CPU < wall: busy machine).
    worker_cpu: float = 0.0
    worker_wall: float = 0.0

    @property
    def elapsed(self) -> float:
        """Wall-clock seconds from start to finish (or now)."""
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started

    @property
    def events_per_second(self) -> float:
        """Events read per wall-clock second."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    def count_matches(self, matches: pa.RecordBatch) -> None:
        """Add one batch of match records to the counters."""
        if matches.num_rows == 0:
            return
        self.matches += matches.num_rows
        for item in pc.value_counts(matches.column("rule_level")).to_pylist():
            self.by_level[item["values"] or "informational"] += item["counts"]
        ids = matches.column("rule_id").dictionary_encode()
        codes = ids.indices.to_numpy(zero_copy_only=False)
        rule_ids = ids.dictionary.to_pylist()
        counts = np.bincount(codes, minlength=len(rule_ids))
        for rule_id, count in zip(rule_ids, counts.tolist(), strict=True):
            self.by_rule[rule_id] += count
        if len(self.rule_titles) < 100_000:
            # Each rule's title from its first record (not a Python pass over every record).
            _, first = np.unique(codes, return_index=True)
            titles = matches.column("rule_title").take(pa.array(first.astype(np.int64))).to_pylist()
            for rule_id, title in zip(rule_ids, titles, strict=True):
                self.rule_titles.setdefault(rule_id, title or "")

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly summary."""
        return {
            "events": self.events,
            "inputs": self.inputs,
            "per_input": dict(self.per_input),
            "matches": self.matches,
            "by_level": dict(self.by_level),
            "by_rule": dict(self.by_rule.most_common()),
            "rules_loaded": self.rules_loaded,
            "rules_skipped": self.rules_skipped,
            "skipped": dict(self.skipped),
            "elapsed_s": round(self.elapsed, 3),
            "events_per_s": round(self.events_per_second, 1),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "workers": self.workers,
        }


def _as_ruleset(rules: RuleSet | str | os.PathLike[str] | Iterable[Any]) -> RuleSet:
    if isinstance(rules, RuleSet):
        return rules
    from sigma_arrow.loader import load_rules

    if isinstance(rules, (str, os.PathLike)):
        return load_rules([rules])
    items = list(rules)
    if items and all(isinstance(r, (str, os.PathLike)) for r in items):
        return load_rules(items)
    return RuleSet(rules=items)


def _prefetched(batches: Iterator[Any], timer: dict[str, float]) -> Iterator[Any]:
    """Iterate ``batches`` in a background thread, ``PREFETCH`` batches ahead (time goes to ``read``)."""
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    item = next(batches)
                except StopIteration:
                    break
                timer["read"] += time.perf_counter() - started
                slots.put(item)
        except BaseException as exc:  # re-raised in the consumer, which decides what to report
            slots.put(_Failure(exc))
        finally:
            slots.put(done)

    worker = threading.Thread(target=produce, name="sigma-arrow-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                break
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.05)
        worker.join()


@dataclass
class _Failure:
    error: BaseException


def scan(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    rules: RuleSet | str | os.PathLike[str] | Iterable[Any],
    *,
    format: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_level: str | None = None,
    include_event: bool = True,
    errors: ErrorLog | None = None,
    engine: Any = None,
    stats: ScanStats | None = None,
    prefetch: bool = True,
    workers: int | None = None,
    engine_batch_rows: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream match record batches (``sigma_arrow.schema.match_schema``) for every input.

    ``inputs``: files, directories (recursive), globs, ``-`` (stdin). ``rules``: a RuleSet or rule
    paths (loaded with the defaults). ``engine``: an ``Engine``, a backend name, or None (default).
    ``errors`` collects unreadable inputs and records (never raised); ``stats`` is filled as it goes.
    Batches without matches are not yielded.

    ``workers``: processes that read, decode and evaluate work units (``sigma_arrow.workers``): 1 in
    this process, 0 automatic (every core for big inputs), None the configured default
    (``workers.configure``; 1 unless changed). Results are identical whatever the number.
    ``batch_size``: events per decoded block; engine batches hold up to ``engine_batch_rows``
    (default: 262,144 with the default ``batch_size``, else ``batch_size``).
    A worker process that dies raises ``sigma_arrow.workers.WorkerError``.
    """
    for batch, _ in scan_chunks(
        inputs,
        rules,
        format=format,
        batch_size=batch_size,
        min_level=min_level,
        include_event=include_event,
        errors=errors,
        engine=engine,
        stats=stats,
        prefetch=prefetch,
        workers=workers,
        engine_batch_rows=engine_batch_rows,
    ):
        yield batch


def scan_chunks(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    rules: RuleSet | str | os.PathLike[str] | Iterable[Any],
    *,
    format: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_level: str | None = None,
    include_event: bool = True,
    errors: ErrorLog | None = None,
    engine: Any = None,
    stats: ScanStats | None = None,
    prefetch: bool = True,
    workers: int | None = None,
    engine_batch_rows: int | None = None,
    encode: str | None = None,
    on_start: Callable[[], None] | None = None,
) -> Iterator[tuple[pa.RecordBatch, bytes | memoryview | None]]:
    """``scan`` for output writers: (match batch, the batch as JSON Lines or None) pairs.

    ``encode="jsonl"``: the matches are also encoded as JSON Lines (exactly what ``JsonLinesSink``
    writes; by the worker processes in a parallel scan, whose batches then have no ``event``
    column). The JSON Lines are bytes, or from worker processes a read-only memoryview of the
    worker's output as the page cache holds it (write it as it is; ``bytes()`` copies it).
    Without ``encode`` the second item is None. ``on_start`` is called once the scan runs
    (after its worker processes were forked: start progress threads there, not before). Everything
    else as ``scan``.
    """
    from sigma_arrow import workers as parallel_scan

    errors = errors if errors is not None else ErrorLog()
    stats = stats if stats is not None else ScanStats()
    ruleset = _as_ruleset(rules)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = expand_inputs([os.fspath(p) for p in inputs], errors)
    stats.inputs = len(paths)
    stats.rules_loaded = len(ruleset)
    if engine_batch_rows is None:
        engine_batch_rows = (
            parallel_scan.ENGINE_BATCH_ROWS if batch_size == DEFAULT_BATCH_SIZE else batch_size
        )
    backend = engine if isinstance(engine, str) else getattr(engine, "backend", None) or "auto"
    options = parallel_scan.ReadOptions(
        format, batch_size, max(1, engine_batch_rows), include_event, min_level, backend, encode
    )
    counted: dict[str, int] = {}  # files' event estimates: made once for the choice and the plan
    count = parallel_scan.choose_workers(workers, paths, format, counted=counted)
    stats.workers = count
    units = parallel_scan.plan_units(paths, format, options.engine_rows, batch_size, counted)
    try:
        if count > 1:
            stats.rules_skipped = len(ruleset.errors)
            if (engine is None or isinstance(engine, str)) and parallel_scan.fork_is_safe():
                # Built once here, shared by the forked workers (instead of once per worker).
                from sigma_arrow.engine import Engine

                engine = Engine(ruleset, backend=engine or "auto")
            built = None if engine is None or isinstance(engine, str) else engine
            yield from _scan_in_workers(units, ruleset, options, count, errors, stats, built, on_start)
        else:
            if engine is None or isinstance(engine, str):
                from sigma_arrow.engine import Engine

                engine = Engine(ruleset, backend=engine or "auto")
            if on_start is not None:
                on_start()
            stats.engine_skipped = list(getattr(engine, "skipped", []))
            stats.engine_profile = getattr(engine, "profile", None)
            stats.rules_skipped = len(ruleset.errors) + len(stats.engine_skipped)
            yield from _scan_here(units, ruleset, engine, options, errors, stats, prefetch)
    finally:
        stats.skipped = Counter(errors.counts)
        stats.finished = time.perf_counter()


def _scan_here(
    units: Iterator[Any],
    ruleset: RuleSet,
    engine: Any,
    options: Any,
    errors: ErrorLog,
    stats: ScanStats,
    prefetch: bool,
) -> Iterator[tuple[pa.RecordBatch, bytes | memoryview | None]]:
    """Run the units in this process: read in a background thread, evaluate here."""
    from sigma_arrow import workers as parallel_scan

    capture = parallel_scan._Capture()

    def count(source: str, rows: int) -> None:
        stats.per_input[source] = stats.per_input.get(source, 0) + rows
        stats.events += rows

    def items() -> Iterator[tuple[pa.RecordBatch | None, list[InputProblem]]]:
        # Problems travel with the batch read after them: reported in the order a worker reports them.
        for unit in units:
            for batch in parallel_scan.read_unit(unit, ruleset, options, capture, count):
                yield batch, capture.take()
        yield None, capture.take()

    source = _prefetched(items(), stats.seconds) if prefetch else _timed(items(), stats.seconds)
    for batch, problems in source:
        for problem in problems:
            errors.add(problem)
        if batch is not None:
            stats.batches += 1
            # As in the workers: JSON Lines are encoded from the batch, without an event struct.
            found, text, (engine_seconds, encode_seconds) = parallel_scan.evaluate_encoded(
                batch, engine, options, errors
            )
            del batch
            stats.seconds["engine"] += engine_seconds
            stats.seconds["output"] += encode_seconds
            if found is not None and found.num_rows:
                assert not isinstance(text, int)  # written to no file descriptor here
                stats.count_matches(found)
                yield found, text
        stats.skipped = Counter(errors.counts)


def _scan_in_workers(
    units: Iterator[Any],
    ruleset: RuleSet,
    options: Any,
    workers: int,
    errors: ErrorLog,
    stats: ScanStats,
    engine: Any = None,
    on_start: Callable[[], None] | None = None,
) -> Iterator[tuple[pa.RecordBatch, bytes | memoryview | None]]:
    """Run the units in worker processes; merge their results here, in unit order."""
    from sigma_arrow import workers as parallel_scan
    from sigma_arrow.engine import EngineProfile

    profile = EngineProfile()
    stats.engine_profile = profile
    for result in parallel_scan.run_units(units, ruleset, options, workers, engine, on_start):
        for source, rows in result.per_input.items():
            stats.per_input[source] = stats.per_input.get(source, 0) + rows
            stats.events += rows
            profile.rows += rows
        for problem in result.problems:
            errors.add(problem)
        stats.batches += result.batches
        profile.batches += result.batches
        stats.seconds["read"] += result.read_seconds
        stats.seconds["engine"] += result.engine_seconds
        stats.seconds["output"] += result.encode_seconds
        stats.worker_cpu += result.cpu_seconds
        stats.worker_wall += result.wall_seconds
        for stage, seconds in result.profile.items():
            profile.seconds[stage] = profile.seconds.get(stage, 0.0) + seconds
        if not stats.engine_skipped and result.skipped:
            stats.engine_skipped = list(result.skipped)
            stats.rules_skipped = len(ruleset.errors) + len(result.skipped)
        for found, text in zip(result.matches, result.encoded_parts(), strict=True):
            stats.count_matches(found)
            yield found, text
        stats.skipped = Counter(errors.counts)


def _timed(batches: Iterator[Any], timer: dict[str, float]) -> Iterator[Any]:
    while True:
        started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        timer["read"] += time.perf_counter() - started
        yield batch
