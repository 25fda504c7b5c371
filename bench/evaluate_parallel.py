"""In-memory ``Engine.evaluate`` on every core: one engine per process, each over its share in memory.

The engine is GIL-bound Python/numpy orchestration around native kernels, so a process evaluates on
one core. This measurement does what a data-parallel engine does with its cores: the lane's rows are
split evenly into ``workers`` contiguous ranges (cut across Parquet row groups where needed), one per
process; each reads its share into memory, builds its engine, and waits at a barrier; then all
time ``Engine.evaluate`` over their in-memory batches at once. A run's rate is all rows over the
slowest process's time. Peak RSS is the sum of the processes'.

The batches are held as ``SparseBatch``es by default (``--form sparse``: each column keeps only its
set values, the form decoding hands the engine; ~3x less memory for wide Windows events), as
``SparseBatch``es of dictionary-encoded string columns (``--form dictionary``: what a Parquet scan
hands it, codes into the row groups' dictionary pages), or as Arrow RecordBatches (``--form dense``).

``python -m bench.evaluate_parallel PARQUET --workers 2 [--runs 3] [--batch 262144] [--form FORM]``
prints JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import resource
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from typing import Any

DEFAULT_RULES = [
    "../shared/sigma/rules",
    "../shared/sigma/rules-emerging-threats",
    "../shared/sigma/rules-threat-hunting",
]


def _worker(
    spec: dict[str, Any], slot: tuple[int, int], barrier: Barrier, results: Connection
) -> None:  # pragma: no cover - runs in a child process
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sigma_arrow.workers import use_system_allocator

    use_system_allocator()  # as the CLI and its scan workers do (before pyarrow allocates anything)
    import sigma_arrow as sa

    rules = sa.load_rules(spec["rules"], logsource_map=spec.get("logsource_map", "windows"))
    engine = sa.Engine(rules)
    parquet = pq.ParquetFile(spec["parquet"])
    index, workers = slot
    total = parquet.metadata.num_rows
    # An even share of the rows: a contiguous range, cut across row groups where needed.
    start, stop = index * total // workers, (index + 1) * total // workers
    batch_size = int(spec.get("batch_size", 262_144))
    batches: list[Any]
    form = spec.get("form", "dictionary")
    if form in ("dictionary", "sparse"):
        if form == "dictionary":  # string columns read as their dictionary pages and codes
            strings = [f.name for f in parquet.schema_arrow if pa.types.is_string(f.type)]
            parquet = pq.ParquetFile(spec["parquet"], read_dictionary=strings)
        batches = _sparse_batches(parquet, start, stop, batch_size)
        n_rows = sum(batch.num_rows for batch in batches)
    else:
        groups, first = _row_groups(parquet, start, stop)
        table = parquet.read_row_groups(groups) if groups else parquet.schema_arrow.empty_table()
        table = table.slice(start - first, stop - start)
        batches = table.combine_chunks().to_batches(max_chunksize=batch_size)
        n_rows = table.num_rows
        del table
    seconds, matched_events, match_pairs, engine = timed_runs(
        rules, engine, batches, int(spec.get("runs", 3)), barrier.wait
    )
    results.send(
        {
            "rows": n_rows,
            "seconds": seconds,
            "matched_events": matched_events,
            "matches": match_pairs,
            "rules": len(rules),
            "rule_errors": len(rules.errors),
            "profile": engine.profile.as_dict(),
            "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
    )
    results.close()


def timed_runs(
    rules: Any, engine: Any, batches: list[Any], runs: int, before_run: Callable[[], object] | None = None
) -> tuple[list[float], int, int, Any]:
    """Time ``Engine.evaluate`` over the batches ``runs`` times: (seconds per run, matched events,
    (rule, event) matches of the first run, the last engine).

    Each run after the first starts from a fresh engine (its profile carried over) and cleared
    caches: nothing a run learnt (automata, kernel answers) helps the next. ``before_run`` is called
    just before each timed run (the parallel lane's barrier).
    """
    import numpy as np

    import sigma_arrow as sa
    from sigma_arrow.engine import native
    from sigma_arrow.workers import _release_memory

    seconds: list[float] = []
    matched_events = 0
    match_pairs = 0
    for run in range(runs):
        if run:
            native.clear_caches()
            profile = engine.profile
            del engine
            gc.collect()  # the previous run's engine (automata, memos) is freed before the next
            _release_memory()
            engine = sa.Engine(rules)
            engine.profile = profile
        if before_run is not None:
            before_run()
        started = time.perf_counter()
        masks = []
        for batch in batches:
            masks.append(engine.evaluate(batch))
            _release_memory()  # as scan workers do between batches: freed heap back to the system
        seconds.append(time.perf_counter() - started)
        if run == 0:
            for mask in masks:
                matched = np.zeros(mask.num_rows, dtype=bool)
                for column in mask.columns:
                    if column.true_count:
                        match_pairs += column.true_count
                        matched |= column.to_numpy(zero_copy_only=False)
                matched_events += int(matched.sum())
        del masks
    return seconds, matched_events, match_pairs, engine


#: How the in-memory batches are held (see the module docstring).
FORMS = ("dictionary", "sparse", "dense")
FORM_NOTES = {
    "dictionary": "batches held as SparseBatch of dictionary columns (as Parquet scans hand them)",
    "sparse": "batches held as SparseBatch",
    "dense": "batches held as RecordBatch",
}


def _row_groups(parquet: Any, start: int, stop: int) -> tuple[list[int], int]:
    """The row groups holding rows ``start`` to ``stop``, and the file row their first one starts at."""
    groups: list[int] = []
    first = position = 0
    for group in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if position < stop and position + rows > start:
            if not groups:
                first = position
            groups.append(group)
        position += rows
    return groups, first


def _sparse_batches(parquet: Any, start: int, stop: int, batch_size: int) -> list[Any]:
    """Rows ``start`` to ``stop`` as SparseBatches of ``batch_size`` rows (read one row group at a time)."""
    from sigma_arrow.engine.sparse import SparseBatch
    from sigma_arrow.workers import _release_memory

    batches: list[Any] = []
    pending: list[Any] = []
    rows = 0
    groups, position = _row_groups(parquet, start, stop)
    for group in groups:
        table = parquet.read_row_group(group).combine_chunks()
        size = table.num_rows
        batch = SparseBatch.from_batch(table.to_batches()[0]) if size else None
        del table
        _release_memory()  # the row group's dense offsets, freed between retained value buffers
        if batch is not None:
            low, high = max(start, position), min(stop, position + size)
            if (low, high) != (position, position + size):
                batch = batch.slice(low - position, high - low)
        position += size
        if batch is None or batch.num_rows == 0:
            continue
        # Cut batches of ``batch_size`` rows, each concatenated from the row groups it spans only: a
        # dictionary column then holds the values of its own row groups, not of the whole share.
        while rows + batch.num_rows >= batch_size:
            head = batch_size - rows
            pending.append(batch.slice(0, head))
            batches.append(SparseBatch.concat(pending, consume=True))
            _release_memory()
            batch = batch.slice(head, batch.num_rows - head)
            pending, rows = [], 0
        if batch.num_rows:
            pending.append(batch)
            rows += batch.num_rows
    if pending:
        batches.append(SparseBatch.concat(pending, consume=True))
    del pending
    _release_memory()
    return batches


def run_evaluate_parallel(spec: dict[str, Any]) -> dict[str, Any]:
    """Time in-memory evaluation on ``spec['workers']`` processes; return the combined figures."""
    workers = max(1, int(spec.get("workers", 2)))
    # Each process picks its own row groups (this one imports nothing heavy: its RSS counts too).
    shares = [(i, workers) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    pipes = [context.Pipe(duplex=False) for _ in range(workers)]
    processes = [
        context.Process(target=_worker, args=(spec, share, barrier, sender), daemon=True)
        for share, (_, sender) in zip(shares, pipes, strict=True)
    ]
    for process in processes:
        process.start()
    reports = [receiver.recv() for receiver, _ in pipes]
    for process in processes:
        process.join()
    runs = len(reports[0]["seconds"])
    seconds = [max(report["seconds"][run] for report in reports) for run in range(runs)]
    profile: dict[str, float] = {}
    for report in reports:
        for key, value in report["profile"].items():
            profile[key] = round(profile.get(key, 0) + value, 3)
    return {
        "rules": reports[0]["rules"],
        "rule_errors": reports[0]["rule_errors"],
        "rows": sum(report["rows"] for report in reports),
        "seconds": seconds,
        "matched_events": sum(report["matched_events"] for report in reports),
        "matches": sum(report["matches"] for report in reports),
        "workers": workers,
        "form": spec.get("form", "dictionary"),
        "worker_rows": [report["rows"] for report in reports],
        "profile": profile,
        "summed_max_rss_kb": sum(report["max_rss_kb"] for report in reports),
    }


def main() -> None:
    """Command line: print the figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parquet")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=262_144)
    parser.add_argument(
        "--form",
        choices=FORMS,
        default="dictionary",
        help="hold the batches as SparseBatches of plain strings (what JSON/EVTX decoding hands the "
        "engine), of dictionary columns (what Parquet scans hand it) or as RecordBatches",
    )
    parser.add_argument("--rules", action="append", default=None)
    args = parser.parse_args()
    spec = {
        "parquet": args.parquet,
        "rules": args.rules or DEFAULT_RULES,
        "workers": args.workers,
        "runs": args.runs,
        "batch_size": args.batch,
        "form": args.form,
    }
    out = run_evaluate_parallel(spec)
    rates = [out["rows"] / s for s in out["seconds"]]
    out["events_per_second"] = sorted(rates)[len(rates) // 2]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
