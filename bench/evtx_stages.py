"""Where an EVTX scan's time goes: CPU microseconds per record of each stage, one process.

    python bench/evtx_stages.py                        # the EVTX attack samples (+ regression .evtx)
    python bench/evtx_stages.py bench/data/evtx-repeat-425x36 --repeat 3

Stages, each timed alone over the same files (best of ``--repeat``, ``time.process_time``: on a busy
machine CPU time is what compares between runs):

* ``parse``: the ``evtx`` package's Rust parser, ``records_json()`` of every file, the JSON text kept;
* ``decode``: ``decode_lines`` (the native decoder) on those records in 65,536-record blocks;
* ``read``: ``EvtxReader.read_small_files`` (parse + per-file checks + decode: what a scan worker does);
* ``engine``: ``Engine.matches`` on the read batches (SigmaHQ rules, warmed up on the first batch);
* ``encode``: the match records as JSON Lines (``encode_jsonl``).

The scan's fixed costs come on top: worker start-up (interpreter, imports, RuleSet, engine build) and
the engine's cost per batch (see ``bench/harness.py`` for end-to-end figures).
"""

from __future__ import annotations

import argparse
import operator
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sigma_arrow.errorlog import ErrorLog  # noqa: E402
from sigma_arrow.flatten import decode_lines  # noqa: E402
from sigma_arrow.readers.evtx import EvtxReader  # noqa: E402
from sigma_arrow.readers.registry import expand_inputs  # noqa: E402

SHARED = ROOT.parent / "shared"
RULES = [SHARED / "sigma" / name for name in ("rules", "rules-emerging-threats", "rules-threat-hunting")]
BLOCK = 65_536


def best_cpu(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best CPU seconds of ``repeat`` runs, and the last run's result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        started = time.process_time()
        result = run()
        best = min(best, time.process_time() - started)
    return best, result


def main() -> None:
    """Print CPU microseconds per record of each stage."""
    import evtx

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="*", help="directories or .evtx files (default: shared samples)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-engine", action="store_true", help="leave out the engine and encode stages")
    args = parser.parse_args()
    roots = [Path(p) for p in args.inputs] or [SHARED / "data" / "evtx-attack-samples", SHARED / "sigma"]
    files = [f for f in expand_inputs([str(r) for r in roots]) if f.lower().endswith(".evtx")]
    data: Callable[[Any], str] = operator.itemgetter("data")

    def parse() -> list[str]:
        texts: list[str] = []
        for f in files:
            texts.extend(map(data, evtx.PyEvtxParser(f, number_of_threads=1).records_json()))
        return texts

    parse_s, lines = best_cpu(parse, args.repeat)
    records = len(lines)

    def decode(texts: list[str] = lines) -> int:
        rows = 0
        for start in range(0, records, BLOCK):
            block = texts[start : start + BLOCK]
            rows += decode_lines(block, source="x", indices=range(len(block)), errors=ErrorLog()).num_rows
        return rows

    decode_s, _ = best_cpu(decode, args.repeat)

    def read() -> list[Any]:
        reader = EvtxReader()
        return [batch for batch, _ in reader.read_small_files(files, batch_size=BLOCK, errors=ErrorLog())]

    read_s, batches = best_cpu(read, args.repeat)
    lines.clear()
    print(f"{len(files):,} files, {records:,} records; CPU microseconds per record (best of {args.repeat})")
    print(f"  parse (records_json)     {parse_s / records * 1e6:6.2f}")
    print(f"  decode (native)          {decode_s / records * 1e6:6.2f}")
    print(f"  read (read_small_files)  {read_s / records * 1e6:6.2f}  (parse + decode + per-file checks)")
    if args.no_engine:
        return
    import pyarrow as pa

    from sigma_arrow.engine import Engine
    from sigma_arrow.flatten import merge_batches
    from sigma_arrow.loader import load_rules
    from sigma_arrow.sinks.text import encode_jsonl

    engine = Engine(load_rules([str(r) for r in RULES]))
    merged = merge_batches(batches)
    engine_batches: list[pa.RecordBatch] = [
        merged.slice(start, 262_144) for start in range(0, merged.num_rows, 262_144)
    ]
    engine.matches(engine_batches[0].slice(0, 1000))  # warm-up: the first batch builds caches
    engine_s, found = best_cpu(lambda: [engine.matches(b) for b in engine_batches], args.repeat)
    encode_s, _ = best_cpu(lambda: [encode_jsonl(m) for m in found], args.repeat)
    matches = sum(m.num_rows for m in found)
    print(f"  engine (matches)         {engine_s / records * 1e6:6.2f}  ({len(engine_batches)} batches)")
    print(f"  encode (JSON Lines)      {encode_s / records * 1e6:6.2f}  ({matches:,} match records)")


if __name__ == "__main__":
    main()
