"""In-memory ``Engine.evaluate`` throughput with the whole SigmaHQ corpus (standalone).

Two lanes over >= 1M rows built by repeating the flattened EVTX attack samples:

* ``attack-dense``: events as they are (every event is an attack sample; many rules fire);
* ``realistic``: most events are perturbed (letters of every non-routing string value rotated by a
  per-row shift, a unique per-row token appended to naturally high-cardinality fields) so that only
  ~0.1 % of events match, and columns such as CommandLine are (nearly) all distinct.

Prints events/s, match counts, the engine's per-stage profile and the peak RSS.

    python bench/engine_bench.py [--rows 1048576] [--batch 262144] [--lanes attack-dense,realistic]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from sigma_arrow.engine import Engine  # noqa: E402
from sigma_arrow.flatten import flatten_record  # noqa: E402
from sigma_arrow.loader import load_rules  # noqa: E402

#: Columns routing reads: kept as they are so that events still reach their rules.
ROUTING = {"Channel", "EventID", "EventType", "Provider_Name"}
#: Fields that are (nearly) unique per event in real logs: get a per-row token in the realistic lane.
HIGH_CARDINALITY = {
    "CommandLine",
    "ParentCommandLine",
    "TargetFilename",
    "ProcessGuid",
    "ParentProcessGuid",
    "ProcessId",
    "ParentProcessId",
    "ScriptBlockText",
    "SystemTime",
    "UtcTime",
    "EventRecordID",
    "TargetObject",
    "Details",
    "Hashes",
    "DestinationIp",
    "SourcePort",
    "LogonId",
    "TargetLogonId",
    "NewProcessId",
    "ProcessID",
    "ThreadID",
    "ScriptBlockId",
    "Payload",
    "ContextInfo",
    "QueryName",
}


def base_table() -> pa.Table:
    import orjson
    from evtx import PyEvtxParser

    rows = []
    for path in sorted((SHARED / "data" / "evtx-attack-samples").rglob("*.evtx")):
        try:
            for record in PyEvtxParser(str(path)).records_json():
                rows.append(flatten_record(orjson.loads(record["data"])))
        except Exception:
            continue
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return pa.table({n: pa.array([r.get(n) for r in rows], type=pa.string()) for n in names})


def repeat(base: pa.Table, n_rows: int) -> tuple[pa.Table, np.ndarray]:
    source = np.arange(n_rows) % base.num_rows
    table = base.take(pa.array(source))
    return table, source


def rotate_table(alphabet_shift: int) -> dict[int, int]:
    lower = "abcdefghijklmnopqrstuvwxyz"
    table = {}
    for i, ch in enumerate(lower):
        table[ord(ch)] = ord(lower[(i + alphabet_shift) % 26])
        table[ord(ch.upper())] = ord(lower[(i + alphabet_shift) % 26].upper())
    return table


def realistic(base: pa.Table, n_rows: int, keep_fraction: float, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    source = np.arange(n_rows) % base.num_rows
    shift = rng.integers(1, 26, size=n_rows)
    keep = rng.random(n_rows) < keep_fraction
    shift[keep] = 0
    tables = [rotate_table(k) for k in range(26)]
    token = pc.cast(pa.array(np.arange(n_rows)), pa.string())
    columns = {}
    for name in base.column_names:
        column = base.column(name).combine_chunks()
        if name in ROUTING:
            columns[name] = column.take(pa.array(source))
            continue
        encoded = pc.dictionary_encode(column)
        words = encoded.dictionary.to_pylist()
        n_words = len(words)
        shifted = pa.array([w.translate(tables[k]) for k in range(26) for w in words], type=pa.string())
        codes = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
        row_codes = codes[source]
        row_valid = valid[source]
        positions = shift * n_words + np.where(row_valid, row_codes, 0)
        values = shifted.take(pa.array(positions, mask=~row_valid))
        if name in HIGH_CARDINALITY:
            suffixed = pc.binary_join_element_wise(values, token, " ")
            values = pc.if_else(pa.array(keep), values, suffixed)
        columns[name] = values
    return pa.table(columns)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_lane(name: str, engine: Engine, table: pa.Table, batch_rows: int) -> None:
    batches = table.to_batches(max_chunksize=batch_rows)
    engine.evaluate(batches[0].slice(0, 1000))  # warm up (imports, first allocations)
    engine.profile.seconds = dict.fromkeys(engine.profile.seconds, 0.0)
    engine.profile.rows = engine.profile.batches = 0
    matched_events = 0
    matches = 0
    started = time.perf_counter()
    for batch in batches:
        masks = engine.evaluate(batch)
        any_match = np.zeros(batch.num_rows, dtype=bool)
        for column in masks.columns:
            if column.true_count:
                matches += column.true_count
                any_match |= column.to_numpy(zero_copy_only=False)
        matched_events += int(any_match.sum())
    elapsed = time.perf_counter() - started
    rate = table.num_rows / elapsed
    print(f"\n== lane {name}: {table.num_rows:,} rows in {len(batches)} batches of <= {batch_rows:,}")
    print(f"   {elapsed:.2f} s  ->  {rate:,.0f} events/s (counting loop included)")
    print(
        f"   matching events {matched_events:,} ({100 * matched_events / table.num_rows:.3f} %), "
        f"rule matches {matches:,}"
    )
    print("   " + engine.profile.format().replace("\n", "\n   "))
    print(f"   peak RSS so far: {peak_rss_mb():,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1 << 20)
    parser.add_argument("--batch", type=int, default=262_144)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lanes", default="attack-dense,realistic")
    parser.add_argument("--keep", type=float, default=0.004, help="unperturbed fraction (realistic lane)")
    args = parser.parse_args()

    started = time.perf_counter()
    dirs = [SHARED / "sigma" / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")]
    rules = load_rules(dirs)
    print(
        f"rules: {len(rules):,} loaded ({len(rules.errors)} errors) in {time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    engine = Engine(rules, threads=args.threads)
    print(f"engine: built in {time.perf_counter() - started:.1f} s; skipped {len(engine.skipped)} rules")
    started = time.perf_counter()
    base = base_table()
    print(
        f"events: {base.num_rows:,} distinct EVTX events, {base.num_columns} columns "
        f"({time.perf_counter() - started:.1f} s)"
    )
    lanes = args.lanes.split(",")
    if "attack-dense" in lanes:
        table, _ = repeat(base, args.rows)
        run_lane("attack-dense", engine, table, args.batch)
        del table
    if "realistic" in lanes:
        table = realistic(base, args.rows, args.keep)
        run_lane("realistic", engine, table, args.batch)
    print(f"\npeak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
