"""CPU microseconds per record of what a scan worker does with EVTX units, stage by stage.

    python bench/evtx_worker_stages.py                                   # the bench's EVTX lane
    python bench/evtx_worker_stages.py ../shared/data/evtx-attack-samples --units 2

The units are planned as ``sigma-arrow scan --format evtx`` plans them; each is read with
``workers.read_unit`` (parse, checks, decode, coalesce: the SparseBatches the engine takes) and each
batch evaluated with ``Engine.matches_and_events`` and encoded as JSON Lines, all in this process.
``time.process_time`` per stage: on a busy machine CPU time is what compares between runs. Worker
start-up and the calling process's planning and writing come on top.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sigma_arrow as sa  # noqa: E402
from sigma_arrow import workers  # noqa: E402
from sigma_arrow.errorlog import ErrorLog  # noqa: E402
from sigma_arrow.readers.registry import expand_inputs  # noqa: E402

SHARED = ROOT.parent / "shared"
RULES = [SHARED / "sigma" / name for name in ("rules", "rules-emerging-threats", "rules-threat-hunting")]
LANE = ROOT / "bench" / "data" / "evtx-repeat-425x36"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", default=[str(LANE)])
    parser.add_argument("--units", type=int, default=0, help="only the first N units (0: all)")
    args = parser.parse_args()
    workers.use_system_allocator()
    workers.keep_freed_memory()
    rules = sa.load_rules([str(r) for r in RULES])
    engine = sa.Engine(rules)
    options = workers.ReadOptions("evtx", 65_536, workers.ENGINE_BATCH_ROWS, True, None, "auto", "jsonl")
    units = list(workers.plan_units(expand_inputs(args.inputs), "evtx", options.engine_rows, 65_536))
    if args.units:
        units = units[: args.units]
    errors = ErrorLog()
    rows = 0

    def count(_source: str, read: int) -> None:
        nonlocal rows
        rows += read

    read = evaluate = encode = 0.0
    matches = batches = 0
    for unit in units:
        stream = workers.read_unit(unit, rules, options, errors, count)
        while True:
            started = time.process_time()
            batch = next(stream, None)
            read += time.process_time() - started
            if batch is None:
                break
            batches += 1
            started = time.process_time()
            split = workers.evaluate_split(batch, engine, options, errors)
            evaluate += time.process_time() - started
            started = time.process_time()
            if split is not None and split[0].num_rows:
                workers.encode_jsonl_events(*split)
                matches += split[0].num_rows
            encode += time.process_time() - started
    per = 1e6 / max(rows, 1)
    print(f"{rows:,} records, {len(units)} units, {batches} engine batches, {matches:,} matches")
    print(f"  read (parse + decode)   {read * per:6.2f} µs/record")
    print(f"  engine                  {evaluate * per:6.2f} µs/record")
    print(f"  JSON Lines encoding     {encode * per:6.2f} µs/record")
    print(f"  total                   {(read + evaluate + encode) * per:6.2f} µs/record")
    print(f"  peak RSS                {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
