"""Native literal scans of a lane, per group and per way of skipping text: CPU seconds, best of runs.

Runs the engine over a lane's Parquet file once (as ``bench.engine_cpu`` reads it) and records
every literal scan it makes (the values and the group's literals). Each recorded scan is then
replayed with automata built every way the scanner can skip text, and the hits are checked against
the recorded ones:

    python -m bench.literal_scans bench/data/realistic-1000000-<key>.parquet [--runs 5] [--top 15]

Columns: ``auto`` (what the engine builds), ``none``, ``bigram`` (first-two-bytes table),
``wu-manber``, ``teddy`` (nibble-mask prefilter) and ``long`` (long window for hashes); a way that
does not apply to a group falls back to another, as the build does. CPU time
(``time.process_time``) of warm replays: the engine's own figures are higher (colder caches).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

from bench.engine_cpu import DEFAULT_RULES

WAYS = {"auto": -1, "none": 0, "bigram": 1, "wu-manber": 2, "teddy": 3, "long": 4}


def main() -> None:
    """Record a lane's literal scans, replay them every way, print CPU seconds per group."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parquet")
    parser.add_argument("--runs", type=int, default=5, help="replays per scan (the best counts)")
    parser.add_argument("--rows", type=int, default=0, help="first N rows only (0: all)")
    parser.add_argument("--top", type=int, default=15, help="groups to print, costliest first")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(here))

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import sigma_arrow as sa
    from bench.evaluate_parallel import _sparse_batches
    from sigma_arrow.engine import literals, native
    from sigma_arrow.workers import use_system_allocator

    use_system_allocator()
    if not literals.native_scan_enabled():
        raise SystemExit("the native scanner (sigma_arrow._cscan) is not built or switched off")
    rules = sa.load_rules([str(here / r) for r in DEFAULT_RULES], logsource_map="windows")
    parquet = pq.ParquetFile(args.parquet)
    strings = [f.name for f in parquet.schema_arrow if pa.types.is_string(f.type)]
    parquet = pq.ParquetFile(args.parquet, read_dictionary=strings)
    batches = _sparse_batches(parquet, 0, args.rows or parquet.metadata.num_rows, 262_144)

    recorded: list[tuple[Any, list[tuple[str, str]], bool, Any]] = []
    scan_values = native._scan_values

    def recording(values: Any, scanner: Any) -> Any:
        found = scan_values(values, scanner)
        if isinstance(scanner, literals.GroupAutomaton) and scanner.native is not None:
            recorded.append((values, list(scanner.literals), scanner.folds, found))
        return found

    native._scan_values = recording
    engine = sa.Engine(rules)
    for batch in batches:
        engine.evaluate(batch)
    native._scan_values = scan_values

    automata: dict[tuple[tuple[tuple[str, str], ...], bool], dict[str, Any]] = {}
    seconds: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    chosen: dict[str, str] = {}
    for values, lits, fold, (want_literals, want_values) in recorded:
        key = (tuple(lits), fold)
        if key not in automata:
            automata[key] = {
                way: literals.native_automaton(lits, fold, skip=skip)  # type: ignore[arg-type]
                for way, skip in WAYS.items()
            }
        kind = "keywords" if isinstance(values, pa.ChunkedArray) else "column"
        name = f"{kind} x {len(lits)} literals"
        chosen[name] = automata[key]["auto"].skips
        best = dict.fromkeys(WAYS, float("inf"))
        for _ in range(args.runs):  # the ways take turns: none of them always meets cold caches
            for way, automaton in automata[key].items():
                started = time.process_time()
                got_literals, got_values = literals.native_hits(automaton, values, None, len(lits), fold)
                best[way] = min(best[way], time.process_time() - started)
                if not (
                    np.array_equal(got_literals, want_literals) and np.array_equal(got_values, want_values)
                ):
                    raise SystemExit(f"{name}: {way} found other hits than the engine")
        for way, spent in best.items():
            seconds[name][way] += spent
    totals = {way: sum(s[way] for s in seconds.values()) for way in WAYS}
    print(f"{len(recorded)} scans; CPU seconds, best of {args.runs} replays each")
    print(f"{'group':34s} {'auto picks':12s}" + "".join(f"{way:>10s}" for way in WAYS))
    print(f"{'all':34s} {'':12s}" + "".join(f"{totals[way]:10.4f}" for way in WAYS))
    for name, row in sorted(seconds.items(), key=lambda item: -item[1]["auto"])[: args.top]:
        print(f"{name:34s} {chosen[name]:12s}" + "".join(f"{row[way]:10.4f}" for way in WAYS))


if __name__ == "__main__":
    main()
