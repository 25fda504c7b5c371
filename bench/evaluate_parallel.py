"""In-memory ``Engine.evaluate`` on every core: one engine per process, each over its share in memory.

The engine is GIL-bound Python/numpy orchestration around native kernels, so a process evaluates on
one core. This measurement does what a data-parallel engine does with its cores: the lane's Parquet
row groups are dealt round-robin to ``workers`` processes; each reads its share into memory, builds
its engine, and waits at a barrier; then all time ``Engine.evaluate`` over their in-memory batches at
once. A run's rate is all rows over the slowest process's time. Peak RSS is the sum of the processes'.

``python -m bench.evaluate_parallel PARQUET --workers 2 [--runs 3] [--batch 262144]`` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from typing import Any

DEFAULT_RULES = [
    "../shared/sigma/rules",
    "../shared/sigma/rules-emerging-threats",
    "../shared/sigma/rules-threat-hunting",
]


def _worker(
    spec: dict[str, Any], share: list[int], barrier: Barrier, results: Connection
) -> None:  # pragma: no cover - runs in a child process
    import numpy as np
    import pyarrow.parquet as pq

    import sigma_arrow as sa

    rules = sa.load_rules(spec["rules"], logsource_map=spec.get("logsource_map", "windows"))
    engine = sa.Engine(rules)
    parquet = pq.ParquetFile(spec["parquet"])
    table = parquet.read_row_groups(share) if share else parquet.schema_arrow.empty_table()
    batches = table.combine_chunks().to_batches(max_chunksize=int(spec.get("batch_size", 262_144)))
    seconds: list[float] = []
    matched_events = 0
    match_pairs = 0
    for run in range(int(spec.get("runs", 3))):
        if run:
            # A fresh engine per run: nothing a run learnt (automata, kernel answers) helps the next.
            from sigma_arrow.engine import native

            native.clear_caches()
            profile = engine.profile
            engine = sa.Engine(rules)
            engine.profile = profile
        barrier.wait()
        started = time.perf_counter()
        masks = [engine.evaluate(batch) for batch in batches]
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
    results.send(
        {
            "rows": table.num_rows,
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


def run_evaluate_parallel(spec: dict[str, Any]) -> dict[str, Any]:
    """Time in-memory evaluation on ``spec['workers']`` processes; return the combined figures."""
    import pyarrow.parquet as pq

    workers = max(1, int(spec.get("workers", 2)))
    row_groups = pq.ParquetFile(spec["parquet"]).num_row_groups
    shares = [list(range(i, row_groups, workers)) for i in range(workers)]
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
    parser.add_argument("--rules", action="append", default=None)
    args = parser.parse_args()
    spec = {
        "parquet": args.parquet,
        "rules": args.rules or DEFAULT_RULES,
        "workers": args.workers,
        "runs": args.runs,
        "batch_size": args.batch,
    }
    out = run_evaluate_parallel(spec)
    rates = [out["rows"] / s for s in out["seconds"]]
    out["events_per_second"] = sorted(rates)[len(rates) // 2]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
