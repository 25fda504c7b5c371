"""JSON decoding: the Python path vs the native decoder (sigma_arrow._cdecode), records per second.

    python bench/decode_bench.py                   # NDJSON bench files (200k lines each) + EVTX records
    python bench/decode_bench.py --lines 50000     # shorter
    python bench/decode_bench.py --scan            # also end-to-end `sigma-arrow scan` (full SigmaHQ corpus)

Measured, each with the native decoder off (``SIGMA_ARROW_PURE_PYTHON_DECODE=1``) and on:

* ``decode_lines`` on blocks of ``--batch-size`` lines of every ``bench/data/*-1000000-*.ndjson`` (first
  ``--lines`` lines; no file I/O in the timing);
* ``decode_lines`` on the EVTX attack samples' ``records_json()`` strings (repeated up to ``--lines``),
  i.e. EVTX decoding without the Rust parser; then ``EvtxReader`` on the sample files (parser included);
* with ``--scan``: ``sigma-arrow scan`` over a ``--lines``-line prefix of the first NDJSON file
  (written to /tmp), one process (``--workers 1``), wall time.

Figures are records per wall second and per CPU-second of this process (on a busy machine only the
latter compare between runs); each is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sigma_arrow import flatten  # noqa: E402
from sigma_arrow.errorlog import ErrorLog  # noqa: E402
from sigma_arrow.readers.evtx import EvtxReader  # noqa: E402

SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "data" / "evtx-attack-samples"
RULES = [SHARED / "sigma" / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")]
DATA = ROOT / "bench" / "data"


def set_native(on: bool) -> None:
    if on:
        os.environ.pop(flatten.PURE_PYTHON_ENV, None)
    else:
        os.environ[flatten.PURE_PYTHON_ENV] = "1"


def best(run: Callable[[], int], repeat: int) -> tuple[int, float, float]:
    """(records, wall s, CPU s) of the fastest of ``repeat`` runs."""
    results = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        records = run()
        results.append((records, time.perf_counter() - wall, time.process_time() - cpu))
    return min(results, key=lambda r: r[2])


def line(label: str, records: int, wall: float, cpu: float, base: float | None = None) -> float:
    rate = records / cpu
    speedup = f"  x{rate / base:4.1f}" if base else ""
    print(f"  {label:<34} {records:>9,} rec {records / wall:>11,.0f} rec/s {rate:>11,.0f} rec/CPU-s{speedup}")
    return rate


def decode_blocks(blocks: list[list[bytes]] | list[list[str]]) -> int:
    errors = ErrorLog()
    return sum(
        flatten.decode_lines(block, source="bench", indices=range(len(block)), errors=errors).num_rows
        for block in blocks
    )


def compare(title: str, lines: list[bytes] | list[str], batch_size: int, repeat: int) -> None:
    blocks = [lines[i : i + batch_size] for i in range(0, len(lines), batch_size)]
    print(f"{title} ({len(lines):,} documents, blocks of {batch_size:,})")
    set_native(False)
    base = line("decode_lines, Python", *best(lambda: decode_blocks(blocks), max(1, repeat - 1)))
    set_native(True)
    line("decode_lines, native", *best(lambda: decode_blocks(blocks), repeat), base=base)
    refused = (
        sum(flatten._cdecode.decode(block) is None for block in blocks) if flatten._cdecode else len(blocks)
    )
    print(f"  native decoder refused {refused} of {len(blocks)} blocks")


def evtx_strings(limit: int) -> tuple[list[str], list[Path]]:
    import evtx

    files = sorted(SAMPLES.rglob("*.evtx"))
    records = [
        r["data"] for f in files for r in evtx.PyEvtxParser(str(f), number_of_threads=1).records_json()
    ]
    repeated = list(itertools.islice(itertools.cycle(records), max(limit, len(records))))
    return repeated, files


def bench_evtx_reader(files: list[Path], batch_size: int, repeat: int) -> None:
    import evtx

    print(f"EVTX files: {len(files)} attack samples (small files: per-file costs weigh)")
    parse = best(
        lambda: sum(1 for f in files for _ in evtx.PyEvtxParser(str(f), number_of_threads=1).records_json()),
        repeat,
    )
    line("records_json() alone (1 thread)", *parse)

    def read() -> int:
        errors = ErrorLog()
        reader = EvtxReader(threads=1)
        return sum(
            b.num_rows for f in files for b in reader.read(str(f), batch_size=batch_size, errors=errors)
        )

    set_native(False)
    base = line("EvtxReader, Python decode", *best(read, max(1, repeat - 1)))
    set_native(True)
    line("EvtxReader, native decode", *best(read, repeat), base=base)


def bench_scan(ndjson: Path, lines: int) -> None:
    prefix = Path(tempfile.gettempdir()) / f"sigma-arrow-bench-{lines}-{ndjson.name}"
    if not prefix.exists():
        with ndjson.open("rb") as source, prefix.open("wb") as out:
            out.writelines(itertools.islice(source, lines))
    command = [sys.executable, "-c", "from sigma_arrow.cli import main; main()", "scan", "--workers", "1"]
    command += ["--no-event"]
    for rules in RULES:
        command += ["-r", str(rules)]
    command += [str(prefix), "-o", os.devnull]
    print(f"sigma-arrow scan, full SigmaHQ corpus, {lines:,} lines of {ndjson.name}, --workers 1")
    subprocess.run(command, check=False, capture_output=True)  # warm the compiled-ruleset cache
    for native in (False, True):
        env = dict(os.environ)
        env.pop(flatten.PURE_PYTHON_ENV, None)
        if not native:
            env[flatten.PURE_PYTHON_ENV] = "1"
        started = time.perf_counter()
        done = subprocess.run(command, env=env, check=False, capture_output=True, text=True)
        wall = time.perf_counter() - started
        label = "native decode" if native else "Python decode"
        print(
            f"  {label:<34} {lines:>9,} ev {wall:7.1f} s {lines / wall:>11,.0f} ev/s (exit {done.returncode})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scan", action="store_true", help="also time end-to-end scans")
    args = parser.parse_args()
    if flatten._cdecode is None:
        sys.exit("sigma_arrow._cdecode is not built: pip install -e . (needs a C compiler)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f}")
    ndjson_files = sorted(DATA.glob("*-1000000-*.ndjson"))
    for path in ndjson_files:
        with path.open("rb") as handle:
            lines = [raw.rstrip(b"\r\n") for raw in itertools.islice(handle, args.lines) if raw.strip()]
        compare(f"NDJSON {path.name}", lines, args.batch_size, args.repeat)
    if SAMPLES.exists():
        strings, files = evtx_strings(args.lines)
        compare("EVTX records_json() strings", strings, args.batch_size, args.repeat)
        bench_evtx_reader(files, args.batch_size, args.repeat)
    if args.scan and ndjson_files and all(r.exists() for r in RULES):
        bench_scan(ndjson_files[0], args.lines)


if __name__ == "__main__":
    main()
