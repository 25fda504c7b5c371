"""Ingest throughput: EVTX -> flattened batches and NDJSON -> flattened batches (records/s).

    python bench/ingest.py                 # EVTX samples + 1M-line synthetic NDJSON (built once)
    python bench/ingest.py --lines 200000  # a smaller synthetic file
    python bench/ingest.py --ndjson bench/data/realistic-1000000-*.ndjson   # also these NDJSON files

Figures are records per wall second and per CPU-second of this process (``time.process_time``): on a
busy machine only the latter are comparable between runs. Run with ``SIGMA_ARROW_DECODE_WORKERS=1``
to measure one process.

The synthetic NDJSON is built from the EVTX attack samples (their JSON, repeated) into bench/data/
(gitignored), in two shapes: nested EVTX JSON (as ``evtx_dump`` writes it) and already-flat events.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sigma_arrow.errorlog import ErrorLog  # noqa: E402
from sigma_arrow.flatten import flatten_record, ndjson_to_batch  # noqa: E402
from sigma_arrow.readers.evtx import EvtxReader  # noqa: E402
from sigma_arrow.readers.json import JsonReader  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "evtx-attack-samples"
DATA = ROOT / "bench" / "data"


def evtx_files() -> list[Path]:
    return sorted(SAMPLES.rglob("*.evtx"))


def bench_evtx(files: list[Path], batch_size: int) -> None:
    import evtx

    started = time.perf_counter()
    raw = sum(1 for f in files for _ in evtx.PyEvtxParser(str(f)).records_json())
    parse_s = time.perf_counter() - started
    reader = EvtxReader()
    errors = ErrorLog()
    started, cpu = time.perf_counter(), time.process_time()
    rows = sum(b.num_rows for f in files for b in reader.read(str(f), batch_size=batch_size, errors=errors))
    total_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"evtx parser alone (records_json): {raw:>9,} records {parse_s:7.2f} s {raw / parse_s:>10,.0f} rec/s"
    )
    print(
        f"evtx -> batches (EvtxReader):     {rows:>9,} records {total_s:7.2f} s "
        f"{rows / total_s:>10,.0f} rec/s "
        f"({rows / cpu_s:,.0f} per CPU-second)"
    )


def build_ndjson(files: list[Path], lines: int) -> tuple[Path, Path]:
    import evtx

    DATA.mkdir(parents=True, exist_ok=True)
    nested = DATA / f"evtx_nested_{lines}.ndjson"
    flat = DATA / f"evtx_flat_{lines}.ndjson"
    if nested.exists() and flat.exists():
        return nested, flat
    records = [json.loads(r["data"]) for f in files for r in evtx.PyEvtxParser(str(f)).records_json()]
    nested_lines = [orjson.dumps(r) for r in records]
    flat_lines = [
        orjson.dumps({k: v for k, v in flatten_record(r).items() if v is not None}) for r in records
    ]
    for path, source in ((nested, nested_lines), (flat, flat_lines)):
        with path.open("wb") as out:
            for i in range(lines):
                out.write(source[i % len(source)])
                out.write(b"\n")
    return nested, flat


def bench_ndjson(path: Path, batch_size: int) -> None:
    size = path.stat().st_size
    errors = ErrorLog()
    started, cpu = time.perf_counter(), time.process_time()
    rows = sum(b.num_rows for b in JsonReader("ndjson").read(str(path), batch_size=batch_size, errors=errors))
    elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{path.name:<28} JsonReader: {rows:>9,} records {elapsed:7.2f} s {rows / elapsed:>10,.0f} rec/s "
        f"({rows / cpu_s:,.0f} per CPU-second; {size / elapsed / 1e6:,.0f} MB/s, {size / rows:,.0f} B/record)"
    )
    # The decoder alone on one in-memory block (no file I/O).
    with path.open("rb") as handle:
        block = b"".join(handle.readline() for _ in range(batch_size))
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    batch = ndjson_to_batch(block, source="bench", first_index=0, errors=errors)
    elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{'':<28} ndjson_to_batch on {batch.num_rows:,} lines: {batch.num_rows / elapsed:>10,.0f} rec/s "
        f"({batch.num_rows / cpu_s:,.0f} per CPU-second), {batch.num_columns} columns"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--ndjson", nargs="*", default=[], help="more NDJSON files to measure")
    args = parser.parse_args()
    if not SAMPLES.exists():
        sys.exit(f"{SAMPLES} not found (needs ../shared beside the project)")
    files = evtx_files()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.1f} (wall figures suffer when it exceeds the "
        f"cores); batch size {args.batch_size:,}; {len(files)} EVTX files"
    )
    bench_evtx(files, args.batch_size)
    nested, flat = build_ndjson(files, args.lines)
    bench_ndjson(nested, args.batch_size)
    bench_ndjson(flat, args.batch_size)
    for extra in args.ndjson:
        bench_ndjson(Path(extra), args.batch_size)


if __name__ == "__main__":
    main()
