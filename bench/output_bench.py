"""Match-record output: the Python encoder vs the native one (sigma_arrow._cencode), CPU seconds.

    python bench/output_bench.py                          # bench/data/attack-1000000-*.parquet
    python bench/output_bench.py --input FILE --repeat 3

The scan workers' path, in this process, on each engine batch of the input (read as ``scan`` reads
it, ``SparseBatch``es included); the engine runs once per batch, outside the timing:

* before: ``Engine.matches`` (the ``event`` struct, a take of every event column) and
  ``encode_jsonl_python``;
* after: ``Engine.matches_and_events`` (no struct) and ``encode_jsonl_events`` (native);
* also ``Engine.matches`` + native ``encode_jsonl`` (what a caller of ``matches`` gets).

Figures are CPU seconds of this process per 1M events (on a busy machine CPU time is what compares
between runs), the best of ``--repeat`` runs per batch; the outputs are checked to be identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sigma_arrow import workers  # noqa: E402
from sigma_arrow.engine import Engine  # noqa: E402
from sigma_arrow.errorlog import ErrorLog  # noqa: E402
from sigma_arrow.loader import load_rules  # noqa: E402
from sigma_arrow.sinks import text  # noqa: E402

SIGMA = ROOT.parent / "shared" / "sigma"
RULE_DIRS = [SIGMA / "rules", SIGMA / "rules-emerging-threats", SIGMA / "rules-threat-hunting"]


def best(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Best CPU seconds of ``repeat`` runs, and the last result."""
    seconds, result = float("inf"), None
    for _ in range(repeat):
        started = time.process_time()
        result = run()
        seconds = min(seconds, time.process_time() - started)
    return seconds, result


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    found = sorted((ROOT / "bench" / "data").glob("attack-1000000-*.parquet"))
    parser.add_argument("--input", default=str(found[0]) if found else None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if not args.input or not text.native_encode_enabled():
        sys.exit("needs an input (bench/data/attack-1000000-*.parquet) and the built native encoder")
    rules = load_rules([str(p) for p in RULE_DIRS])
    engine = Engine(rules)
    options = workers.ReadOptions("auto", 65_536, workers.ENGINE_BATCH_ROWS, True, None)
    totals = dict.fromkeys(("before", "matches + native", "after"), 0.0)
    events = matches = 0
    for unit in workers.plan_units([args.input], "auto", options.engine_rows, options.batch_size):
        for batch in workers.read_unit(unit, rules, options, ErrorLog(), lambda source, rows: None):
            rows = engine.match_rows(batch)
            engine.match_rows = lambda _batch, rows=rows: rows  # type: ignore[method-assign]
            os.environ[text.PURE_PYTHON_ENV] = "1"
            seconds, expected = best(
                args.repeat, lambda batch=batch: text.encode_jsonl(engine.matches(batch))
            )
            totals["before"] += seconds
            os.environ[text.PURE_PYTHON_ENV] = "0"
            seconds, whole = best(args.repeat, lambda batch=batch: text.encode_jsonl(engine.matches(batch)))
            totals["matches + native"] += seconds
            seconds, split = best(
                args.repeat, lambda batch=batch: text.encode_jsonl_events(*engine.matches_and_events(batch))
            )
            totals["after"] += seconds
            del engine.match_rows
            if not expected == whole == split:
                sys.exit("outputs differ")
            events += batch.num_rows
            matches += expected.count(b"\n")
    per_million = 1e6 / max(events, 1)
    print(f"{args.input}: {events} events, {matches} match records (outputs identical)")
    for name, seconds in totals.items():
        print(f"  {name:<18} {seconds * per_million:7.3f} CPU-s per 1M events")
    print(f"  before / after     {totals['before'] / max(totals['after'], 1e-9):7.1f}x")


if __name__ == "__main__":
    main()
