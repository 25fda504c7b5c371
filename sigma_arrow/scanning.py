"""``scan()``: stream match records from inputs (files, directories, globs, stdin) through the engine.

Memory is bounded by the batch size: one input is read at a time, batch by batch, while the next batch
is read (and flattened) in a background thread as the engine evaluates the current one.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import merge_batches
from sigma_arrow.readers.registry import expand_inputs, reader_for
from sigma_arrow.ruleset import RuleSet
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

DEFAULT_BATCH_SIZE = 65_536
#: Read-ahead depth (batches) of the background reader.
PREFETCH = 2


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
        ids = matches.column("rule_id")
        titles = matches.column("rule_title")
        for item in pc.value_counts(ids).to_pylist():
            self.by_rule[item["values"]] += item["counts"]
        if len(self.rule_titles) < 100_000:
            for rule_id, title in zip(ids.to_pylist(), titles.to_pylist(), strict=True):
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


def _prefetched(batches: Iterator[pa.RecordBatch], timer: dict[str, float]) -> Iterator[pa.RecordBatch]:
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
) -> Iterator[pa.RecordBatch]:
    """Stream match record batches (``sigma_arrow.schema.match_schema``) for every input.

    ``inputs``: files, directories (recursive), globs, ``-`` (stdin). ``rules``: a RuleSet or rule
    paths (loaded with the defaults). ``engine``: an ``Engine``, a backend name, or None (default).
    ``errors`` collects unreadable inputs and records (never raised); ``stats`` is filled as it goes.
    Batches without matches are not yielded.
    """
    from sigma_arrow.engine import Engine

    errors = errors if errors is not None else ErrorLog()
    stats = stats if stats is not None else ScanStats()
    ruleset = _as_ruleset(rules)
    if engine is None or isinstance(engine, str):
        engine = Engine(ruleset, backend=engine or "auto")
    stats.rules_loaded = len(ruleset)
    stats.rules_skipped = len(ruleset.errors) + len(getattr(engine, "skipped", []))
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = expand_inputs([os.fspath(p) for p in inputs], errors)
    stats.inputs = len(paths)
    batches = _read_all(paths, ruleset, format, batch_size, include_event, errors, stats)
    batches = _prefetched(batches, stats.seconds) if prefetch else _timed(batches, stats.seconds)
    try:
        for batch in _coalesced(batches, batch_size):
            yield from _evaluate(batch, engine, min_level, include_event, errors, stats)
            stats.skipped = Counter(errors.counts)
    finally:
        stats.skipped = Counter(errors.counts)
        stats.finished = time.perf_counter()


def _read_all(
    paths: list[str],
    ruleset: RuleSet,
    format: str,
    batch_size: int,
    include_event: bool,
    errors: ErrorLog,
    stats: ScanStats,
) -> Iterator[pa.RecordBatch]:
    """Event batches of every input in turn; a failing input is reported and the next one read."""
    for path in paths:
        stats.per_input.setdefault(path, 0)
        try:
            reader = reader_for(path, format, rules=ruleset, include_event=include_event)
            for batch in reader.read(path, batch_size=batch_size, errors=errors):
                stats.events += batch.num_rows
                stats.per_input[path] += batch.num_rows
                if batch.num_rows:
                    yield batch
        except GeneratorExit:
            raise
        except Exception as exc:  # one bad input never stops the scan: report it and go on
            kind = "file" if isinstance(exc, OSError) else "read"
            errors.report(path, None, kind, f"{type(exc).__name__}: {exc}")


def _coalesced(batches: Iterator[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Merge small batches (many small files) into batches of about ``batch_size`` rows.

    The engine's cost per batch is largely fixed: one batch of 10,000 events is far cheaper than 300
    batches of 30. Rows keep their own ``__source``/``__event_index``, so match records are unchanged.
    Batches whose column types cannot be unified (Parquet inputs that disagree) stay separate.
    """
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows >= batch_size // 2 and not pending:
            yield batch
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows >= batch_size // 2:
            yield from _merge(pending)
            pending, rows = [], 0
    if pending:
        yield from _merge(pending)


def _merge(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield merge_batches(batches)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        yield from batches


def _evaluate(
    batch: pa.RecordBatch,
    engine: Any,
    min_level: str | None,
    include_event: bool,
    errors: ErrorLog,
    stats: ScanStats,
) -> Iterator[pa.RecordBatch]:
    stats.batches += 1
    started = time.perf_counter()
    try:
        matches = engine.matches(batch, include_event=include_event, min_level=min_level)
    except Exception as exc:  # an engine failure costs this batch only, and is reported
        first = _first_index(batch)
        source = batch.column(SOURCE_COLUMN)[0].as_py() if SOURCE_COLUMN in batch.schema.names else "?"
        errors.report(
            str(source),
            first,
            "engine",
            f"batch of {batch.num_rows} events from record {first} not evaluated: "
            f"{type(exc).__name__}: {exc}",
        )
        return
    finally:
        stats.seconds["engine"] += time.perf_counter() - started
    if matches.num_rows:
        stats.count_matches(matches)
        yield matches


def _first_index(batch: pa.RecordBatch) -> int | None:
    if INDEX_COLUMN not in batch.schema.names or batch.num_rows == 0:
        return None
    value = batch.column(INDEX_COLUMN)[0].as_py()
    return value if isinstance(value, int) else None


def _timed(batches: Iterator[pa.RecordBatch], timer: dict[str, float]) -> Iterator[pa.RecordBatch]:
    while True:
        started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        timer["read"] += time.perf_counter() - started
        yield batch
