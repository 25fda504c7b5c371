"""Engine CPU seconds per stage on a lane's Parquet file, in one process (noise-resistant).

The batches are read as the in-memory lane holds them (``SparseBatch``es of dictionary columns, as
Parquet scans hand them), then ``Engine.evaluate`` runs over all of them ``--runs`` times, each run
with a fresh engine and cleared caches. The engine's stage clock is swapped for
``time.process_time``, so the figures are CPU seconds of this process even on a busy machine; the
best of the runs after the first (warm-up) is printed with every run as JSON lines.

    python -m bench.engine_cpu bench/data/realistic-1000000-<key>.parquet [--runs 4] [--rows N]

Compare two trees (e.g. a baseline from ``git archive``) with ``--root OTHER_TREE``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_RULES = [
    "../shared/sigma/rules",
    "../shared/sigma/rules-emerging-threats",
    "../shared/sigma/rules-threat-hunting",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parquet")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=0, help="first N rows only (0: all)")
    parser.add_argument("--batch", type=int, default=262_144)
    parser.add_argument("--rules", action="append", help="rule directories (default: the SigmaHQ corpus)")
    parser.add_argument("--root", help="import sigma_arrow from this tree instead (a baseline checkout)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    if args.root:
        sys.path.insert(0, str(Path(args.root).resolve()))
    sys.path.insert(1, str(here))  # bench.evaluate_parallel from this tree

    from sigma_arrow.workers import use_system_allocator

    use_system_allocator()
    import pyarrow as pa
    import pyarrow.parquet as pq

    import sigma_arrow as sa
    from bench.evaluate_parallel import _sparse_batches
    from sigma_arrow.engine import native

    time.perf_counter = time.process_time  # the engine's stage clock: CPU seconds of this process
    rules = sa.load_rules([str(here / r) for r in (args.rules or DEFAULT_RULES)], logsource_map="windows")
    parquet = pq.ParquetFile(args.parquet)
    strings = [f.name for f in parquet.schema_arrow if pa.types.is_string(f.type)]
    parquet = pq.ParquetFile(args.parquet, read_dictionary=strings)
    total = args.rows or parquet.metadata.num_rows
    batches = _sparse_batches(parquet, 0, total, args.batch)
    print(f"engine module: {native.__file__}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    for run in range(args.runs):
        native.clear_caches()
        gc.collect()
        engine = sa.Engine(rules)
        started = time.process_time()
        matches = 0
        for batch in batches:
            masks = engine.evaluate(batch)
            matches += sum(column.true_count for column in masks.columns)
        figures: dict[str, Any] = {"run": run, "cpu_s": round(time.process_time() - started, 3)}
        figures["matches"] = matches
        for key, value in engine.profile.as_dict().items():
            if key.endswith("_s"):
                figures[key] = round(float(value), 3)
        print(json.dumps(figures))
        results.append(figures)
    timed = results[1:] or results
    best = {k: min(r[k] for r in timed) for k in timed[0] if k not in ("run", "matches")}
    print(json.dumps({"best_of_runs_after_the_first": best, "rows": total, "matches": timed[0]["matches"]}))


if __name__ == "__main__":
    main()
