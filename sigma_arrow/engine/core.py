"""``Engine``: evaluate a whole RuleSet over Arrow record batches (masks and match records)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from compiler.model import CompiledRule
from sigma_arrow.engine.columns import IntArray
from sigma_arrow.engine.native import STAGES, BatchEvaluation, Plan, build_plan
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.ruleset import RuleSet
from sigma_arrow.schema import (
    INDEX_COLUMN,
    LEVELS,
    SOURCE_COLUMN,
    TIMESTAMP_FIELDS,
    event_columns,
    match_schema,
)

BACKENDS = ("native", "polars", "datafusion", "pyarrow")
#: Big batches are evaluated in slices of at most this many rows (bounds intermediate memory).
SLICE_ROWS = 262_144


@dataclass(slots=True)
class EngineProfile:
    """Cumulative seconds per stage plus counters (``scan --profile`` prints ``format()``)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    batches: int = 0
    rows: int = 0

    def format(self) -> str:
        """Format the profile as a one-stage-per-line summary."""
        total = sum(self.seconds.values())
        lines = [f"engine: {self.batches} batches, {self.rows} rows, {total:.3f} s"]
        for stage, seconds in self.seconds.items():
            share = 100 * seconds / total if total else 0.0
            lines.append(f"  {stage:<9} {seconds:9.3f} s  {share:5.1f} %")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, float | int]:
        """Stage seconds and counters as a flat dict."""
        out: dict[str, float | int] = {f"{k}_s": v for k, v in self.seconds.items()}
        out["batches"] = self.batches
        out["rows"] = self.rows
        return out


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    """Return a process-wide thread pool of that size (engines share it; no threads leak per engine)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="sigma-arrow-engine")
        return pool


def unique_column_names(ids: Sequence[str]) -> list[str]:
    """Rule ids made unique: the 2nd, 3rd... occurrence of an id gets ``~2``, ``~3``..."""
    seen: dict[str, int] = {}
    names = []
    for rule_id in ids:
        count = seen.get(rule_id, 0) + 1
        seen[rule_id] = count
        names.append(rule_id if count == 1 else f"{rule_id}~{count}")
    return names


def _bool_column(rows: IntArray, length: int) -> pa.Array:
    """Build a non-null boolean array, true at ``rows`` (built straight as a bitmap)."""
    bits = np.zeros((length + 7) // 8, dtype=np.uint8)
    if len(rows):
        np.bitwise_or.at(bits, rows >> 3, (1 << (rows & 7)).astype(np.uint8))
    return pa.Array.from_buffers(pa.bool_(), length, [None, pa.py_buffer(bits)])


def event_struct(batch: pa.RecordBatch, rows: pa.Array) -> pa.StructArray:
    """Build the ``event`` of match records: the batch's event columns (not reserved ones) at ``rows``."""
    fields = event_columns(batch.schema)
    if not fields:
        return pa.array([{}] * len(rows), type=pa.struct([]))
    return pa.StructArray.from_arrays([batch.column(name).take(rows) for name in fields], names=fields)


class Engine:
    """Evaluate every rule of a RuleSet over record batches.

    ``backend``: "native" (the whole-ruleset engine; "auto" picks it), or "polars", "datafusion",
    "pyarrow" (one expression per rule, from ``compiler/backends``; differential partners).
    Rules a backend cannot run are listed in ``skipped`` as (rule id, reason); their mask is all false.
    ``threads`` > 1 also splits the literal scans over a thread pool; polars already runs each scan on
    all cores, and on this 2-core machine 1 measured as fast or faster, so it is the default.
    """

    def __init__(self, rules: RuleSet | Sequence[CompiledRule], backend: str = "auto", threads: int = 1):
        self.rules: list[CompiledRule] = list(rules)
        self.backend = "native" if backend == "auto" else backend
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.column_names = unique_column_names([rule.id for rule in self.rules])
        self.profile = EngineProfile()
        self.threads = max(1, threads)
        self._plan: Plan | None = None
        self._other = None
        if self.backend == "native":
            self._plan = build_plan(self.rules)
            self.skipped: list[tuple[str, str]] = list(self._plan.skipped)
        else:
            from sigma_arrow.engine.wrappers import ExpressionBackend

            self._other = ExpressionBackend(self.backend, self.rules)
            self.skipped = list(self._other.skipped)
        self._pool = _shared_pool(self.threads) if self.threads > 1 else None

    @property
    def stats(self) -> EngineProfile:
        """Alias of ``profile``."""
        return self.profile

    # ------------------------------------------------------------ core

    def match_rows(self, batch: pa.RecordBatch | SparseBatch) -> list[IntArray]:
        """Sorted matching row positions for every rule (ruleset order)."""
        self.profile.batches += 1
        self.profile.rows += batch.num_rows
        if self._other is not None:
            started = time.perf_counter()
            if isinstance(batch, SparseBatch):
                batch = batch.to_batch()
            rows = self._other.match_rows(batch)
            self.profile.seconds["algebra"] += time.perf_counter() - started
            return rows
        assert self._plan is not None
        plan = self._plan
        if batch.num_rows <= SLICE_ROWS:
            return BatchEvaluation(plan, batch, self.profile.seconds, self._pool).run()
        # Big batches are evaluated in slices (bounded intermediate memory); the slices' literal
        # passes use the thread pool (polars / Arrow release the GIL, the rule algebra does not).
        parts: list[list[IntArray]] = []
        for start in range(0, batch.num_rows, SLICE_ROWS):
            piece = batch.slice(start, SLICE_ROWS)
            rows = BatchEvaluation(plan, piece, self.profile.seconds, self._pool).run()
            parts.append([r + start for r in rows])
        return [np.concatenate(columns) for columns in zip(*parts, strict=True)]

    def evaluate(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """One non-null boolean column per rule (ruleset order; duplicate ids get ``~N`` suffixes)."""
        rows = self.match_rows(batch)
        started = time.perf_counter()
        length = batch.num_rows
        none = _bool_column(np.empty(0, dtype=np.int64), length)
        arrays = [_bool_column(r, length) if len(r) else none for r in rows]
        out = pa.RecordBatch.from_arrays(arrays, names=self.column_names)
        self.profile.seconds["output"] += time.perf_counter() - started
        return out

    def matches(
        self, batch: pa.RecordBatch | SparseBatch, *, include_event: bool = True, min_level: str | None = None
    ) -> pa.RecordBatch:
        """Match records (schema ``sigma_arrow.schema.match_schema``), ordered by event then rule."""
        rows = self.match_rows(batch)
        started = time.perf_counter()
        batch, rule_pos, row_pos = self._positions(batch, rows, min_level)
        out = self._records(batch, rule_pos, row_pos, include_event)
        self.profile.seconds["output"] += time.perf_counter() - started
        return out

    def matches_and_events(
        self, batch: pa.RecordBatch | SparseBatch, *, min_level: str | None = None
    ) -> tuple[pa.RecordBatch, pa.RecordBatch | SparseBatch, IntArray]:
        """Return ``matches`` without ``event``, the batch holding the events, and each match's row in it.

        For writers that encode the events themselves (``sinks.text.encode_jsonl_events``): the
        ``event`` struct, a take of every one of the batch's columns, is never built, and a sparse
        batch's matched rows are not made dense (only the columns the records themselves read).
        """
        rows = self.match_rows(batch)
        started = time.perf_counter()
        events, rule_pos, row_pos = self._positions(batch, rows, min_level, dense=False)
        if isinstance(events, SparseBatch):
            names = [n for n in (SOURCE_COLUMN, INDEX_COLUMN, *TIMESTAMP_FIELDS) if n in events.schema.names]
            own = SparseBatch(
                pa.schema([events.schema.field(n) for n in names]),
                [events.sparse_column(n) for n in names],
                events.num_rows,
            )
            head, head_rows = own.dense_rows(row_pos)
            out = self._records(head, rule_pos, head_rows, include_event=False)
        else:
            out = self._records(events, rule_pos, row_pos, include_event=False)
        self.profile.seconds["output"] += time.perf_counter() - started
        return out, events, row_pos

    @overload
    def _positions(
        self, batch: pa.RecordBatch | SparseBatch, rows: list[IntArray], min_level: str | None
    ) -> tuple[pa.RecordBatch, IntArray, IntArray]: ...

    @overload
    def _positions(
        self,
        batch: pa.RecordBatch | SparseBatch,
        rows: list[IntArray],
        min_level: str | None,
        *,
        dense: bool,
    ) -> tuple[pa.RecordBatch | SparseBatch, IntArray, IntArray]: ...

    def _positions(
        self,
        batch: pa.RecordBatch | SparseBatch,
        rows: list[IntArray],
        min_level: str | None,
        *,
        dense: bool = True,
    ) -> tuple[pa.RecordBatch | SparseBatch, IntArray, IntArray]:
        """(batch, rule positions, row positions) of the match records, ordered by event then rule.

        ``dense``: a SparseBatch comes back as a RecordBatch of the matched rows only (positions
        into it); else as it is.
        """
        minimum = LEVELS.index(min_level) if min_level in LEVELS else 0
        rule_parts: list[IntArray] = []
        row_parts: list[IntArray] = []
        for position, matched in enumerate(rows):
            if not len(matched):
                continue
            level = self.rules[position].meta.level
            if minimum and (LEVELS.index(level) if level in LEVELS else 0) < minimum:
                continue
            rule_parts.append(np.full(len(matched), position, dtype=np.int64))
            row_parts.append(matched)
        rule_pos = np.concatenate(rule_parts) if rule_parts else np.empty(0, dtype=np.int64)
        row_pos = np.concatenate(row_parts) if row_parts else np.empty(0, dtype=np.int64)
        order = np.lexsort((rule_pos, row_pos))
        rule_pos, row_pos = rule_pos[order], row_pos[order]
        if dense and isinstance(batch, SparseBatch):
            # Match records need whole events: only the matched rows are made dense.
            batch, row_pos = batch.dense_rows(row_pos)
        return batch, rule_pos, row_pos

    def _records(
        self, batch: pa.RecordBatch, rule_pos: IntArray, row_pos: IntArray, include_event: bool
    ) -> pa.RecordBatch:
        metas = [rule.meta for rule in self.rules]
        take_rules = pa.array(rule_pos, type=pa.int64())
        take_rows = pa.array(row_pos, type=pa.int64())
        rule_ids = pa.array([m.id for m in metas], type=pa.string()).take(take_rules)
        titles = pa.array([m.title for m in metas], type=pa.string()).take(take_rules)
        levels = pa.array([m.level for m in metas], type=pa.string()).take(take_rules)
        tags = pa.array([list(m.tags) for m in metas], type=pa.list_(pa.string())).take(take_rules)
        names = batch.schema.names
        if SOURCE_COLUMN in names:
            source = batch.column(SOURCE_COLUMN).take(take_rows).cast(pa.string())
        else:
            source = pa.nulls(len(row_pos), type=pa.string())
        if INDEX_COLUMN in names:
            index = batch.column(INDEX_COLUMN).take(take_rows).cast(pa.int64())
        else:
            index = take_rows
        timestamp = pa.nulls(len(row_pos), type=pa.string())
        for name in TIMESTAMP_FIELDS:
            if name in names:
                column = batch.column(name).take(take_rows)
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                try:
                    text = column.cast(pa.string())
                except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                    continue  # a nested / binary column cannot be a timestamp text
                timestamp = pc.coalesce(timestamp, text)
        arrays = [rule_ids, titles, levels, tags, source, index, timestamp]
        event_type = None
        if include_event:
            event = event_struct(batch, take_rows)
            arrays.append(event)
            event_type = event.type
        return pa.RecordBatch.from_arrays(arrays, schema=match_schema(event_type))
