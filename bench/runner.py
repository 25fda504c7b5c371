"""One measurement in its own process (the harness wraps it in ``/usr/bin/time -v`` for peak RSS).

``python -m bench.runner '<json spec>'`` prints one JSON line with the figures. Kinds:

* ``evaluate``: read a Parquet file into memory, then time ``Engine.evaluate`` over all its batches,
  ``runs`` times (the in-memory lane).
* ``scan``: ``sigma_arrow.scan`` over the inputs, match records written as JSONL to /dev/null (the
  end-to-end lanes: reading, flattening, engine and output).
* ``duckdb``: the DuckDB peer (bench.duckdb_peer).

Rule loading (cached by sigma_arrow) and engine construction are timed separately, not in the rate.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI sets it (sigma_arrow/cli/__init__.py)

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _load(spec: dict[str, Any], build_engine: bool = True) -> tuple[Any, Any, dict[str, float]]:
    import sigma_arrow as sa

    started = time.perf_counter()
    rules = sa.load_rules(spec["rules"], logsource_map=spec.get("logsource_map", "windows"))
    loaded = time.perf_counter()
    engine = sa.Engine(rules) if build_engine else None
    built = time.perf_counter()
    timings = {"rules_load_s": round(loaded - started, 3), "engine_build_s": round(built - loaded, 3)}
    return rules, engine, timings


def run_evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    """In-memory: Engine.evaluate over a Parquet file already read into record batches.

    ``workers`` > 1: one engine per process, each over its share of the row groups in its own memory
    (``bench.evaluate_parallel``); the rate is all rows over the slowest process's time.
    """
    if int(spec.get("workers", 1)) > 1:
        # Nothing heavy is imported here first: this process's memory counts in the summed RSS.
        from bench.evaluate_parallel import run_evaluate_parallel

        return run_evaluate_parallel(spec)
    import pyarrow.parquet as pq

    from bench.evaluate_parallel import timed_runs

    rules, engine, out = _load(spec)
    table = pq.read_table(spec["parquet"]).combine_chunks()
    batches = table.to_batches(max_chunksize=int(spec.get("batch_size", 262_144)))
    rows = table.num_rows
    seconds, matched_events, match_pairs, engine = timed_runs(
        rules, engine, batches, int(spec.get("runs", 3))
    )
    out.update(
        rules=len(rules),
        rule_errors=len(rules.errors),
        rows=rows,
        seconds=seconds,
        matched_events=matched_events,
        matches=match_pairs,
        profile={k: round(v, 3) for k, v in engine.profile.as_dict().items()},
    )
    return out


def run_scan(spec: dict[str, Any]) -> dict[str, Any]:
    """End-to-end: sigma_arrow.scan over the inputs, matches as JSONL to /dev/null, as the CLI does.

    Same defaults as ``sigma-arrow scan``: decoding pool configured, ``workers`` 0 (automatic), JSON
    Lines encoded by the workers. The engine is built before the clock starts, as for a scan in one
    process; workers are forked from this process and share it (``engine_build_s`` reports the
    build). Where forking is not safe, spawned workers build their own inside the timed scan.
    """
    from sigma_arrow import workers as parallel_scan
    from sigma_arrow.errorlog import ErrorLog
    from sigma_arrow.readers import parallel
    from sigma_arrow.readers.registry import expand_inputs
    from sigma_arrow.scanning import ScanStats, scan_chunks
    from sigma_arrow.sinks.base import open_sink
    from sigma_arrow.sinks.text import JsonLinesSink

    parallel.configure()  # as the CLI does
    parallel_scan.use_system_allocator()
    fmt = spec.get("format", "auto")
    workers = parallel_scan.choose_workers(int(spec.get("workers", 0)), expand_inputs(spec["inputs"]), fmt)
    rules, engine, out = _load(spec, build_engine=workers == 1 or parallel_scan.fork_is_safe())
    stats = ScanStats()
    errors = ErrorLog()
    sink = open_sink(spec.get("output", "/dev/null"), "jsonl")
    started = time.perf_counter()
    stats.started = started
    for batch, encoded in scan_chunks(
        spec["inputs"],
        rules,
        format=fmt,
        engine=engine,
        stats=stats,
        errors=errors,
        workers=workers,
        encode="jsonl",
    ):
        writing = time.perf_counter()
        if encoded is not None and isinstance(sink, JsonLinesSink):
            sink.stream.write(encoded)
        else:
            sink.write(batch)
        stats.seconds["output"] += time.perf_counter() - writing
    sink.close()
    elapsed = time.perf_counter() - started
    out.update(
        rules=len(rules),
        rows=stats.events,
        seconds=[elapsed],
        matches=stats.matches,
        inputs=stats.inputs,
        workers=workers,
        stages={k: round(v, 3) for k, v in stats.seconds.items()},
        input_problems=errors.total,
        input_problem_examples=[f"{p.source}:{p.offset}: {p.message}" for p in errors.examples[:3]],
    )
    return out


def run_duckdb(spec: dict[str, Any]) -> dict[str, Any]:
    """The DuckDB peer over a Parquet prefix."""
    from bench.duckdb_peer import run_peer

    rules = [Path(p) for p in spec["rules"]]
    return run_peer(
        Path(spec["parquet"]), spec.get("rows"), rules, spec.get("threads"), spec.get("count", False)
    )


KINDS = {"evaluate": run_evaluate, "scan": run_scan, "duckdb": run_duckdb}


def main(argv: list[str]) -> int:
    """Run the measurement described by the JSON spec in ``argv[0]``; print its JSON result."""
    spec = json.loads(argv[0])
    result = KINDS[spec["kind"]](spec)
    result["self_max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
