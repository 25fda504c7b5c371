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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from sigma_arrow.engine import Engine, EngineProfile  # noqa: E402
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


def rotate_table(shift: int) -> dict[int, int]:
    """Translation rotating ASCII letters by ``shift`` and digits by ``shift`` (mod 10)."""
    lower = "abcdefghijklmnopqrstuvwxyz"
    table = {}
    for i, ch in enumerate(lower):
        table[ord(ch)] = ord(lower[(i + shift) % 26])
        table[ord(ch.upper())] = ord(lower[(i + shift) % 26].upper())
    for d in range(10):
        table[ord(str(d))] = ord(str((d + shift) % 10))
    return table


class LaneData:
    """Generates the lanes' batches on the fly (bounded memory whatever --rows is)."""

    SHIFTS = 9  # rotations 1..9 (never a multiple of 10, so digits always change)

    def __init__(self, base: pa.Table, keep_fraction: float) -> None:
        self.base = base
        self.keep_fraction = keep_fraction
        tables = [rotate_table(k) for k in range(self.SHIFTS + 1)]
        self.columns: dict[str, tuple[pa.Array, pa.Array, np.ndarray, np.ndarray, int]] = {}
        for name in base.column_names:
            column = base.column(name).combine_chunks()
            encoded = pc.dictionary_encode(column)
            words = encoded.dictionary.to_pylist()
            # The last 4 characters (file extensions) stay, so negated "not an .exe" rules stay quiet.
            shifted = pa.array(
                [w[:-4].translate(tables[k]) + w[-4:] for k in range(self.SHIFTS + 1) for w in words],
                type=pa.string(),
            )
            codes = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
            self.columns[name] = (column, shifted, codes, valid, len(words))

    def attack_dense(self, start: int, stop: int) -> pa.RecordBatch:
        source = np.arange(start, stop) % self.base.num_rows
        return self.base.take(pa.array(source)).combine_chunks().to_batches()[0]

    def realistic(self, start: int, stop: int) -> pa.RecordBatch:
        rows = np.arange(start, stop, dtype=np.int64)
        source = rows % self.base.num_rows
        mixed = (rows * 2654435761) % 1000003
        shift = 1 + mixed % self.SHIFTS
        keep = (mixed / 1000003.0) < self.keep_fraction
        shift[keep] = 0
        token = pc.cast(pa.array(rows), pa.string())
        arrays = {}
        for name, (column, shifted, codes, valid, n_words) in self.columns.items():
            if name in ROUTING:
                arrays[name] = column.take(pa.array(source))
                continue
            row_valid = valid[source]
            positions = shift * n_words + codes[source]
            values = shifted.take(pa.array(positions, mask=~row_valid))
            if name in HIGH_CARDINALITY:
                suffixed = pc.binary_join_element_wise(values, token, " ")
                values = pc.if_else(pa.array(keep), values, suffixed)
            arrays[name] = values
        return pa.RecordBatch.from_pydict(arrays)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_lane(
    name: str, engine: Engine, make: Callable[[int, int], pa.RecordBatch], rows: int, batch_rows: int
) -> None:
    engine.evaluate(make(0, 1000))  # warm up (imports, first allocations)
    engine.profile = EngineProfile()
    matched_events = 0
    matches = 0
    elapsed = 0.0
    n_batches = 0
    per_rule: dict[str, int] = {}
    for start in range(0, rows, batch_rows):
        batch = make(start, min(rows, start + batch_rows))
        started = time.perf_counter()
        masks = engine.evaluate(batch)
        elapsed += time.perf_counter() - started
        n_batches += 1
        any_match = np.zeros(batch.num_rows, dtype=bool)
        for rule_id, column in zip(masks.schema.names, masks.columns, strict=True):
            if column.true_count:
                matches += column.true_count
                per_rule[rule_id] = per_rule.get(rule_id, 0) + column.true_count
                any_match |= column.to_numpy(zero_copy_only=False)
        matched_events += int(any_match.sum())
        del batch, masks
    rate = rows / elapsed
    print(f"\n== lane {name}: {rows:,} rows in {n_batches} batches of <= {batch_rows:,}")
    print(f"   Engine.evaluate: {elapsed:.2f} s  ->  {rate:,.0f} events/s")
    print(
        f"   matching events {matched_events:,} ({100 * matched_events / rows:.3f} %), "
        f"rule matches {matches:,} by {len(per_rule)} rules"
    )
    top = sorted(per_rule.items(), key=lambda kv: -kv[1])[:5]
    print("   top rules: " + ", ".join(f"{k} {v:,}" for k, v in top))
    print("   " + engine.profile.format().replace("\n", "\n   "))
    print(f"   peak RSS so far: {peak_rss_mb():,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1 << 20)
    parser.add_argument("--batch", type=int, default=262_144)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lanes", default="attack-dense,realistic")
    parser.add_argument("--keep", type=float, default=0.003, help="unperturbed fraction (realistic lane)")
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
    data = LaneData(base, args.keep)
    print(f"peak RSS after building the inputs: {peak_rss_mb():,.0f} MB")
    lanes = args.lanes.split(",")
    if "attack-dense" in lanes:
        run_lane("attack-dense", engine, data.attack_dense, args.rows, args.batch)
    if "realistic" in lanes:
        run_lane("realistic", engine, data.realistic, args.rows, args.batch)
    print(f"\npeak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
