"""Literal-pass figures: CPU seconds of the engine's literal stage per 262,144-row batch, per scan call.

    python -m bench.literal_bench realistic|attack [--batches N]

CPU time (``time.process_time``, all threads) is measured, not wall clock: the machine is shared.
Set ``SIGMA_ARROW_PURE_PYTHON_SCAN=1`` to measure the polars / pyahocorasick fallback. The printed
checksum (over every literal's hit positions) must be equal in both modes.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sigma_arrow.engine import Engine, literals, native
from sigma_arrow.loader import load_rules

ROOT = Path(__file__).resolve().parent.parent
LANES = {
    "realistic": "bench/data/realistic-1000000-76c137e961.parquet",
    "attack": "bench/data/attack-1000000-2233ad3286.parquet",
}
RULE_DIRS = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
BATCH_ROWS = 262_144


def main() -> None:
    """Print literal stage CPU seconds per batch and the costliest scan calls."""
    parser = argparse.ArgumentParser()
    parser.add_argument("lane", choices=sorted(LANES))
    parser.add_argument("--batches", type=int, default=3, help="times the same batch is evaluated")
    args = parser.parse_args()
    sigma = ROOT.parent / "shared" / "sigma"
    engine = Engine(load_rules([str(sigma / d) for d in RULE_DIRS]))
    parquet = pq.ParquetFile(ROOT / LANES[args.lane])
    groups = list(range(min(parquet.num_row_groups, 8)))
    batch = parquet.read_row_groups(groups).slice(0, BATCH_ROWS).combine_chunks().to_batches()[0]
    native_scan = literals.native_scan_enabled()
    print(f"lane {args.lane}: {batch.num_rows} rows, {batch.num_columns} columns, native scan={native_scan}")

    calls: dict[tuple[str, int, int], list[float]] = collections.defaultdict(lambda: [0, 0.0, 0])
    scan_values = native._scan_values

    def timed_scan(values: pa.Array, scanner: Any) -> Any:
        started = time.process_time()
        result = scan_values(values, scanner)
        spent = time.process_time() - started
        kind = "group" if isinstance(scanner, literals.GroupAutomaton) else "lits"
        n_literals = len(scanner.literals) if kind == "group" else len(scanner)
        entry = calls[(kind, len(values), n_literals)]
        entry[0] += 1
        entry[1] += spent
        entry[2] = len(result[0])
        return result

    native._scan_values = timed_scan  # type: ignore[assignment]
    literal_pass = native.BatchEvaluation.literal_pass
    stage = [0.0]
    digest = hashlib.sha256()

    def timed_pass(self: native.BatchEvaluation, *a: Any, **k: Any) -> None:
        started = time.process_time()
        literal_pass(self, *a, **k)
        stage[0] += time.process_time() - started

    native.BatchEvaluation.literal_pass = timed_pass  # type: ignore[method-assign]
    run = native.BatchEvaluation.run

    def checked_run(self: native.BatchEvaluation) -> Any:
        out = run(self)
        for position, rows in enumerate(out):
            digest.update(position.to_bytes(8, "little") + rows.astype("int64").tobytes())
        return out

    native.BatchEvaluation.run = checked_run  # type: ignore[method-assign]
    for i in range(args.batches):
        stage[0] = 0.0
        started = time.process_time()
        rows = engine.match_rows(batch)
        total = time.process_time() - started
        matched = sum(len(r) for r in rows)
        print(f"batch {i}: cpu {total:.3f} s, literal stage cpu {stage[0]:.3f} s, matches {matched}")
    print("match checksum", digest.hexdigest()[:16])
    per_batch = sum(entry[1] for entry in calls.values()) / args.batches
    n_calls = sum(entry[0] for entry in calls.values()) / args.batches
    print(f"scans: {n_calls:.0f} calls, {per_batch:.3f} cpu s per batch")
    print("scan calls (kind, values, literals): calls, cpu s/call, hits")
    for key, (count, spent, hits) in sorted(calls.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"  {key}: {int(count)} calls, {spent / count:.4f} s/call, {int(hits)} hits")


if __name__ == "__main__":
    main()
