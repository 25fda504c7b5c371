"""Parquet archive hunting at scale: build archives with the ``convert`` code, scan them with all of SigmaHQ.

    python -m bench.parquet_bench                       # 10M-event archive + pruning measurement
    python -m bench.parquet_bench --events 1000000      # smaller
    python -m bench.parquet_bench --only pruning        # just the pruning measurement
    python -m bench.parquet_bench --only stages         # read vs engine CPU, plain vs dictionary reads

``--only stages`` (``--stages-files``: default the ``python -m bench`` lanes' 1M-event files): the
in-process scan's two stages apart, in one thread each after the other, so their CPU seconds do not
mix: the reader as a scan's work unit uses it (``ParquetReader.read_files`` with the scan's rules,
events included, coalesced into ``SparseBatch``es), then the engine over those batches with match
records encoded as JSON Lines. Once with strings read as plain arrays, once as dictionaries
(``ParquetReader(dictionary=True)``); the SHA-256 of the sorted JSON Lines must agree.

Archives (under bench/data/, rebuilt only when missing): the 8,255 events of the 277 EVTX attack samples,
read and flattened by the scan readers, repeated until the row count with a distinct ``__source`` per copy
(``copyNNNNN/<original path>``; ``__event_index`` stays the record's index), written by
``sigma_arrow.convert.ArchiveWriter`` (zstd, 65,536-row row groups). The pruning archives add a
``BenchUnreferencedBlob`` column (200 random hex characters per event) that no rule references.

Each scan runs in a fresh process under ``/usr/bin/time -v`` (peak RSS). The scan: whole SigmaHQ corpus
(rules, rules-emerging-threats, rules-threat-hunting; cached rule loading and engine construction timed
apart), the Parquet reader with row-group pruning, and either ``--no-event`` (only referenced columns
read) or events with late materialisation (referenced columns first, full rows only for matching rows),
match records written as JSONL to /dev/null.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "data" / "evtx-attack-samples"
#: The large column no rule references (checked: e.g. ``Payload`` is a PowerShell field rules do use).
BLOB = "BenchUnreferencedBlob"
RULE_DIRS = [SHARED / "sigma" / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")]


def base_events() -> pa.Table:
    """The EVTX attack samples, read and flattened exactly as ``scan``/``convert`` do."""
    from sigma_arrow.convert import read_events
    from sigma_arrow.errorlog import ErrorLog

    batches = list(read_events([str(SAMPLES)], errors=ErrorLog()))
    table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")
    return table.combine_chunks()


def build_archive(path: Path, events: int, payload: bool) -> dict[str, Any]:
    """Repeat the samples into an archive of ``events`` rows (skipped when it already exists)."""
    from sigma_arrow.convert import ArchiveWriter
    from sigma_arrow.schema import SOURCE_COLUMN

    marker = path / ".built.json"  # hidden: a scan of the archive directory skips it
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    if path.exists():
        for old in sorted(path.rglob("*"), reverse=True):
            old.unlink() if old.is_file() else old.rmdir()
    base = base_events()
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    written = 0
    copy = 0
    with ArchiveWriter(path, row_group_size=65_536, max_buffered_rows=200_000) as writer:
        while written < events:
            rows = min(base.num_rows, events - written)
            table = base.slice(0, rows)
            source = pc.binary_join_element_wise(f"copy{copy:05d}/", table.column(SOURCE_COLUMN), "")
            table = table.set_column(table.schema.get_field_index(SOURCE_COLUMN), SOURCE_COLUMN, source)
            if payload:
                raw = rng.integers(0, 256, size=(rows, 100), dtype=np.uint8)
                hexed = [bytes(r).hex() for r in raw]
                table = table.append_column(BLOB, pa.array(hexed, pa.string()))
            for batch in table.to_batches():
                writer.write(batch)
            written += rows
            copy += 1
    info = {
        "events": written,
        "copies": copy,
        "files": writer.stats.files,
        "mb": round(sum(f.stat().st_size for f in path.rglob("*.parquet")) / 1e6, 1),
        "build_s": round(time.perf_counter() - started, 1),
        "payload": payload,
    }
    marker.write_text(json.dumps(info))
    return info


# ---------------------------------------------------------------- the measured child process


def load(spec: dict[str, Any]) -> Any:
    """The whole SigmaHQ corpus, or (``no_keywords``) the corpus without its keyword rules.

    Keyword rules search every string column, so with them no string column can be pruned.
    """
    import sigma_arrow as sa
    from compiler.ir import has_keywords, referenced_fields

    rules = sa.load_rules([str(d) for d in RULE_DIRS])
    assert not any(BLOB in referenced_fields(r.predicate) for r in rules.rules)
    if spec.get("no_keywords"):
        rules.rules = [r for r in rules.rules if not any(has_keywords(x.detection) for x in r.routes)]
    return rules


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One scan, in this process (run under /usr/bin/time -v by the parent)."""
    import sigma_arrow as sa
    from sigma_arrow.errorlog import ErrorLog
    from sigma_arrow.readers.parquet import ParquetReader, ScanStats, engine_prefilter
    from sigma_arrow.sinks import open_sink

    started = time.perf_counter()
    rules = load(spec)
    loaded = time.perf_counter()
    engine = sa.Engine(rules)
    built = time.perf_counter()
    include_event = spec["event"]
    stats = ScanStats()
    errors = ErrorLog()
    reader = ParquetReader(
        rules=rules if spec.get("prune", True) else None,
        include_event=include_event,
        prefilter=engine_prefilter(engine) if include_event and spec.get("late", True) else None,
        stats=stats,
        batch_readahead=spec.get("readahead", 1),
        fragment_readahead=1,
    )
    sink = open_sink("/dev/null", "jsonl", include_event=include_event)
    matches = 0
    engine_s = 0.0
    scan_started = time.perf_counter()
    for batch in reader.read(spec["archive"], batch_size=spec.get("batch_size", 65_536), errors=errors):
        t0 = time.perf_counter()
        found = engine.matches(batch, include_event=include_event)
        engine_s += time.perf_counter() - t0
        matches += found.num_rows
        sink.write(found)
    sink.close()
    seconds = time.perf_counter() - scan_started
    return {
        "rules": len(rules),
        "rules_load_s": round(loaded - started, 2),
        "engine_build_s": round(built - loaded, 2),
        "events": stats.rows_total,
        "scan_s": round(seconds, 2),
        "events_per_s": round(stats.rows_total / seconds),
        "matches": matches,
        "engine_s_outside_reader": round(engine_s, 2),
        "rows_read": stats.rows_read,
        "rows_materialised": stats.rows_materialised,
        "row_groups": f"{stats.row_groups_read}/{stats.row_groups_total} read",
        "mb_read": round(stats.bytes_read / 1e6, 1),
        "mb_total": round(stats.bytes_total / 1e6, 1),
        "columns_read": len(stats.columns_read),
        "problems": errors.total,
    }


def read_only(archive: str, prune: bool) -> dict[str, Any]:
    """Reader alone (no engine): pruned columns vs every column."""
    from sigma_arrow.errorlog import ErrorLog
    from sigma_arrow.readers.parquet import ParquetReader, ScanStats

    rules = load({"no_keywords": True})
    stats = ScanStats()
    reader = ParquetReader(rules=rules if prune else None, include_event=False, stats=stats)
    started = time.perf_counter()
    rows = sum(b.num_rows for b in reader.read(archive, batch_size=65_536, errors=ErrorLog()))
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "read_s": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "mb_read": round(stats.bytes_read / 1e6, 1),
        "columns_read": len(stats.columns_read),
    }


def stages(path: str, dictionary: bool) -> dict[str, Any]:
    """Read CPU and engine CPU (seconds per 1M events) of one file, as the in-process scan runs them."""
    import hashlib
    import resource

    import sigma_arrow as sa
    from sigma_arrow import workers
    from sigma_arrow.errorlog import ErrorLog
    from sigma_arrow.readers.parquet import ParquetReader, resolve
    from sigma_arrow.sinks.text import encode_jsonl_events

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    rules = load({})
    engine = sa.Engine(rules)
    errors = ErrorLog()
    read_cpu, read_wall = cpu(), time.perf_counter()
    reader = ParquetReader(
        rules=rules, include_event=True, max_batch_bytes=workers.ENGINE_BATCH_BYTES, dictionary=dictionary
    )
    filesystem, files = resolve(path)
    batches = list(
        workers.coalesce(
            reader.read_files(
                filesystem, [(f, None) for f in files], batch_size=workers.ENGINE_BATCH_ROWS, errors=errors
            ),
            workers.ENGINE_BATCH_ROWS,
            workers.SPARSE_BATCH_BYTES,
            sparse=True,
        )
    )
    engine_cpu, engine_wall = cpu(), time.perf_counter()
    lines: list[bytes] = []
    for batch in batches:
        records, events, rows = engine.matches_and_events(batch)
        if records.num_rows:
            lines.extend(encode_jsonl_events(records, events, rows).splitlines())
    done_cpu = cpu()
    events_read = sum(b.num_rows for b in batches)
    per_million = 1e6 / max(events_read, 1)
    return {
        "dictionary": dictionary,
        "events": events_read,
        "engine_batches": len(batches),
        "batch_mb": round(max(b.nbytes for b in batches) / 2**20) if batches else 0,
        "read_cpu_s_per_1m": round((engine_cpu - read_cpu) * per_million, 2),
        "read_wall_s_per_1m": round((engine_wall - read_wall) * per_million, 2),
        "engine_cpu_s_per_1m": round((done_cpu - engine_cpu) * per_million, 2),
        "engine": {k: round(v, 2) for k, v in engine.profile.as_dict().items() if k.endswith("_s")},
        "matches": len(lines),
        "matches_sha256": hashlib.sha256(b"\n".join(sorted(lines))).hexdigest()[:16],
        "problems": errors.total,
    }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec in a child process under /usr/bin/time -v; add its peak RSS."""
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "bench.parquet_bench",
        "--child",
        json.dumps(spec),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    result["peak_rss_mb"] = round(int(peak.group(1)) / 1024) if peak else None
    # The machine may be shared: CPU seconds of the whole child (rule loading included) next to wall time.
    cpu = [re.search(rf"{kind} time \(seconds\): ([0-9.]+)", done.stderr) for kind in ("User", "System")]
    result["child_cpu_s"] = round(sum(float(m.group(1)) for m in cpu if m), 1)
    return result


def show(title: str, result: dict[str, Any]) -> None:
    print(f"{title}: " + ", ".join(f"{k}={v}" for k, v in result.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--pruning-events", type=int, default=500_000)
    parser.add_argument("--only", choices=["scale", "pruning", "stages"], default=None)
    parser.add_argument(
        "--stages-files",
        nargs="*",
        type=Path,
        default=None,
        help="Parquet files for --only stages (default: bench/data/*-1000000-*.parquet)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        if "stages" in spec:
            result = stages(spec["stages"], spec["dictionary"])
        elif spec.get("read_only"):
            result = read_only(spec["archive"], spec["prune"])
        else:
            result = child(spec)
        print(json.dumps(result))
        return
    if not SAMPLES.exists() or not RULE_DIRS[0].exists():
        sys.exit(f"needs {SAMPLES} and the SigmaHQ rules beside the project")
    DATA.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONPATH", str(ROOT))

    if args.only == "stages":
        # The bench's lane files may be symlinks to one another's data: each file once.
        found = {
            p.resolve(): p for p in sorted(DATA.glob("*-1000000-*.parquet"), key=lambda p: p.is_symlink())
        }
        for path in args.stages_files or sorted(found.values()):
            for dictionary in (False, True):
                form = "dictionary" if dictionary else "plain"
                show(
                    f"stages, {path.name}, strings {form}",
                    measure({"stages": str(path), "dictionary": dictionary}),
                )
        return

    if args.only in (None, "scale"):
        archive = DATA / f"parquet-archive-{args.events}"
        show("archive", build_archive(archive, args.events, payload=False))
        show("scan --no-event (referenced columns only)", measure({"archive": str(archive), "event": False}))
        show("scan with events (late materialisation)", measure({"archive": str(archive), "event": True}))

    if args.only in (None, "pruning"):
        plain = DATA / f"parquet-archive-{args.pruning_events}"
        wide = DATA / f"parquet-archive-{args.pruning_events}-blob"
        show("archive", build_archive(plain, args.pruning_events, payload=False))
        show("archive + blob", build_archive(wide, args.pruning_events, payload=True))
        # The corpus without its 107 keyword rules: keyword rules need every string column.
        for name, path in (("without blob", plain), ("with blob", wide)):
            for prune in (True, False):
                what = "referenced columns" if prune else "all columns"
                spec = {"archive": str(path), "read_only": True, "prune": prune}
                show(f"read only, {name}, {what}", measure(spec))
            base = {"archive": str(path), "no_keywords": True}
            show(f"scan --no-event, {name}", measure({**base, "event": False}))
            show(f"scan with events, late materialisation, {name}", measure({**base, "event": True}))
            show(
                f"scan with events, all columns read, {name}", measure({**base, "event": True, "late": False})
            )


if __name__ == "__main__":
    main()
