"""The benchmark harness behind ``python -m bench`` (issue 4).

Builds (or reuses) the datasets, then for each lane measures, each in its own process under
``/usr/bin/time -v`` (peak RSS):

* in-memory ``Engine.evaluate`` over the lane's Parquet already read into batches;
* Parquet, NDJSON and (attack lane) EVTX end-to-end through ``sigma_arrow.scan`` with JSONL output
  to /dev/null;
* the DuckDB peer (pySigma DuckDB backend, one query per rule) on a prefix of the same Parquet;

checks on a sample that the engine's matches equal the reference evaluator's, prints every figure
next to its target, and rewrites the results block of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import datasets
from bench.duckdb_peer import default_rule_dirs
from bench.evaluate_parallel import FORM_NOTES, FORMS

PROJECT = datasets.PROJECT
RESULTS = PROJECT / "bench" / "RESULTS.md"
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"

#: Targets of issue 4 (events/s unless noted).
TARGETS = {"evaluate": 1_000_000, "parquet": 500_000, "ndjson": 300_000, "evtx": 150_000}
TARGET_RATIO = 100.0
TARGET_RSS_BYTES = 2 * 1024**3
LOAD_AT_START = [0.0]
LABELS = {
    "evaluate": "in-memory Engine.evaluate",
    "parquet": "Parquet end-to-end (scan)",
    "ndjson": "NDJSON end-to-end (scan)",
    "evtx": "EVTX end-to-end (scan)",
    "duckdb": "DuckDB peer (Parquet)",
}


# ---------------------------------------------------------------- measuring in a subprocess


@dataclass
class Measurement:
    """One lane × mode: throughput over runs, peak RSS, and what the runner reported."""

    mode: str
    rows: int = 0
    rates: list[float] = field(default_factory=list)
    rss_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def rate(self) -> float:
        """Median events per second over the runs."""
        return statistics.median(self.rates) if self.rates else 0.0


def _time_binary() -> str | None:
    return "/usr/bin/time" if Path("/usr/bin/time").exists() else None


#: How often the process tree's memory is sampled (seconds).
RSS_SAMPLE_SECONDS = 0.05


class TreeMemory:
    """Samples the summed RSS of a process and all its descendants (scan workers) in a thread."""

    def __init__(self, pid: int, interval: float = RSS_SAMPLE_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for process in tree:
                if process.pid == root.pid and _time_binary() and process.name() == "time":
                    continue  # /usr/bin/time itself: not part of the measurement
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self.processes = max(self.processes, len(tree))
            self._stop.wait(self.interval)


def run_measurement(spec: dict[str, Any], timeout: float | None = None) -> tuple[dict[str, Any], int]:
    """Run ``bench.runner`` with ``spec`` in a child process; (its JSON result, its peak RSS in bytes).

    The peak RSS is the larger of ``/usr/bin/time``'s figure for the runner and the largest sum over
    the runner's process tree (scan workers included), sampled every ``RSS_SAMPLE_SECONDS``.
    """
    command = [sys.executable, "-m", "bench.runner", json.dumps(spec)]
    timer = _time_binary()
    if timer:
        command = [timer, "-v", *command]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH", "")]))
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT, env=env
    )
    with TreeMemory(child.pid) as memory:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = [line for line in stderr.splitlines() if line and not line.startswith("\t")][-3:]
        raise RuntimeError(" | ".join(tail) or f"runner exited with {child.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    rss_kb = int(result.get("self_max_rss_kb", 0))
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if found:
        rss_kb = int(found.group(1))
    result["tree_peak_rss_bytes"] = memory.peak
    result["tree_processes"] = memory.processes
    return result, max(rss_kb * 1024, memory.peak)


def measure_evaluate(
    parquet: Path, rules: list[str], runs: int, workers: int = 1, form: str = "dictionary"
) -> Measurement:
    """In-memory Engine.evaluate: ``runs`` timed passes over in-memory 262,144-row batches.

    ``workers`` processes each evaluate their share of the lane (all cores: one engine per core);
    ``form``: how the batches are held (``bench.evaluate_parallel.FORMS``).
    """
    out = Measurement("evaluate")
    try:
        spec = {"kind": "evaluate", "parquet": str(parquet), "rules": rules, "runs": runs, "workers": workers}
        spec["form"] = form
        result, out.rss_bytes = run_measurement(spec)
    except Exception as error:
        out.error = str(error)
        return out
    out.rows = int(result["rows"])
    out.rates = [out.rows / s for s in result["seconds"] if s > 0]
    out.details = result
    return out


def measure_scan(
    mode: str, inputs: list[str], rules: list[str], runs: int, fmt: str = "auto", workers: int = 0
) -> Measurement:
    """End-to-end scan: ``runs`` fresh processes; the rate is the median, RSS the largest.

    ``workers`` as ``scan --workers`` (0: automatic, the CLI's default).
    """
    out = Measurement(mode)
    for _ in range(runs):
        spec = {"kind": "scan", "inputs": inputs, "rules": rules, "format": fmt, "workers": workers}
        try:
            result, rss = run_measurement(spec)
        except Exception as error:
            out.error = str(error)
            return out
        out.rows = int(result["rows"])
        out.rates.append(out.rows / result["seconds"][0] if result["seconds"][0] > 0 else 0.0)
        out.rss_bytes = max(out.rss_bytes, rss)
        out.details = result
    return out


def measure_duckdb(
    parquet: Path, rows: int | None, rules: list[str], count_only: bool = False
) -> Measurement:
    """The DuckDB peer, once (it is slow), on the first ``rows`` events."""
    out = Measurement("duckdb")
    try:
        result, out.rss_bytes = run_measurement(
            {"kind": "duckdb", "parquet": str(parquet), "rows": rows, "rules": rules, "count": count_only}
        )
    except Exception as error:
        out.error = str(error)
        return out
    out.rows = int(result["rows"])
    out.rates = [float(result["events_per_second"])]
    out.details = result
    return out


# ---------------------------------------------------------------- EVTX lane inputs


#: What ``complete`` says in a finished EVTX lane tree (older trees, all symlinks, are rebuilt).
_EVTX_LINKS = "hard links where possible"


def evtx_repeat_dir(
    dataset: datasets.Dataset, data_dir: Path, limit: int = 0, rows: int = 0
) -> tuple[Path, int]:
    """A directory tree listing the source EVTX files repeatedly (via links), and its record count.

    The files (the first ``limit`` when given) repeat until they hold at least ``rows`` records
    (default: the lane's row count).
    ``scan`` de-duplicates its inputs, so repetition needs distinct paths: ``r000/`` links every
    source file, ``r001/`` ... are symlinks to ``r000/``. ``r000/`` holds hard links where the
    filesystem allows (a folder of plain files, as a triage collection is: listing it needs no
    ``stat`` per file), else symlinks.
    """
    files = dataset.evtx_files[:limit] if limit else dataset.evtx_files
    if limit:
        import evtx

        records = sum(sum(1 for _ in evtx.PyEvtxParser(str(f)).records_json()) for f in files)
    else:
        records = dataset.evtx_records // dataset.evtx_repeats
    repeats = max(1, -(-(rows or dataset.rows) // max(records, 1)))
    root = data_dir / f"evtx-repeat-{len(files)}x{repeats}"
    first = root / "r000"
    marker = root / "complete"
    if not marker.exists() or marker.read_text() != _EVTX_LINKS:
        shutil.rmtree(root, ignore_errors=True)
        first.mkdir(parents=True)
        for number, source in enumerate(files):
            link = first / f"{number:04d}-{source.name}"
            try:
                link.hardlink_to(source.resolve())
            except OSError:  # another filesystem, or links not allowed: a symlink then
                link.symlink_to(source)
        for repeat in range(1, repeats):
            (root / f"r{repeat:03d}").symlink_to("r000", target_is_directory=True)
        marker.write_text(_EVTX_LINKS)
    return root, records * repeats


# ---------------------------------------------------------------- reference check

_CHECK_RULES: list[Any] = []
_CHECK_CONDITIONS: list[Any] = []
_CHECK_RULE_CONDITIONS: list[list[int]] = []


def _reference_rows(rows: list[dict[str, Any]]) -> list[list[int]]:
    """For each row, the positions of the rules the reference evaluator says match (worker side)."""
    from compiler.ir import Const
    from compiler.reference import evaluate, evaluate_rule

    out: list[list[int]] = []
    for row in rows:
        # A rule's predicate is "any route whose condition and detection hold": a rule none of
        # whose route conditions holds cannot match, so only the others go to evaluate_rule.
        holds = [(isinstance(c, Const) and c.value) or evaluate(c, row) for c in _CHECK_CONDITIONS]
        out.append(
            [
                position
                for position, rule in enumerate(_CHECK_RULES)
                if any(holds[c] for c in _CHECK_RULE_CONDITIONS[position]) and evaluate_rule(rule, row)
            ]
        )
    return out


def reference_check(parquet: Path, sample_rows: int, ruleset: Any, workers: int = 2) -> dict[str, Any]:
    """Engine vs reference evaluator on the first ``sample_rows`` events: (rule, event) pairs agreeing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sigma_arrow.engine import Engine

    reader = pq.ParquetFile(parquet)
    batches = []
    total = 0
    for batch in reader.iter_batches(batch_size=min(sample_rows, 65_536)):
        batches.append(batch)
        total += batch.num_rows
        if total >= sample_rows:
            break
    sample = pa.Table.from_batches(batches).slice(0, sample_rows).combine_chunks().to_batches()[0]
    engine = Engine(ruleset)
    started = time.perf_counter()
    engine_rows = engine.match_rows(sample)
    engine_pairs = {(int(r), i) for i, rows in enumerate(engine_rows) for r in rows}

    # Identical events get identical answers: evaluate each distinct event once.
    dict_rows = [{k: v for k, v in row.items() if v is not None} for row in sample.to_pylist()]
    keys: dict[tuple[tuple[str, Any], ...], int] = {}
    row_to_unique = [keys.setdefault(tuple(sorted(row.items())), len(keys)) for row in dict_rows]
    unique_rows: list[dict[str, Any]] = [{} for _ in keys]
    for row, unique in zip(dict_rows, row_to_unique, strict=True):
        unique_rows[unique] = row

    global _CHECK_RULES, _CHECK_CONDITIONS, _CHECK_RULE_CONDITIONS
    _CHECK_RULES = list(ruleset.rules)
    conditions: dict[Any, int] = {}
    _CHECK_RULE_CONDITIONS = [
        [conditions.setdefault(route.condition, len(conditions)) for route in rule.routes]
        for rule in _CHECK_RULES
    ]
    _CHECK_CONDITIONS = list(conditions)
    chunks = [unique_rows[i : i + 250] for i in range(0, len(unique_rows), 250)]
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            answers = [a for part in pool.map(_reference_rows, chunks) for a in part]
    else:
        answers = [a for part in map(_reference_rows, chunks) for a in part]
    reference_pairs = {(r, i) for r, unique in enumerate(row_to_unique) for i in answers[unique]}

    pairs = sample.num_rows * len(_CHECK_RULES)
    only_engine = sorted(engine_pairs - reference_pairs)
    only_reference = sorted(reference_pairs - engine_pairs)
    rule_ids = [rule.id for rule in _CHECK_RULES]
    return {
        "events": sample.num_rows,
        "distinct_events": len(unique_rows),
        "pairs": pairs,
        "agree": pairs - len(only_engine) - len(only_reference),
        "disagree": len(only_engine) + len(only_reference),
        "engine_matches": len(engine_pairs),
        "reference_matches": len(reference_pairs),
        "only_engine": [f"event {r} rule {rule_ids[i]}" for r, i in only_engine[:5]],
        "only_reference": [f"event {r} rule {rule_ids[i]}" for r, i in only_reference[:5]],
        "disagreeing_rules": sorted({rule_ids[i] for _, i in only_engine + only_reference})[:20],
        "seconds": round(time.perf_counter() - started, 1),
    }


# ---------------------------------------------------------------- reporting


def machine_info() -> dict[str, str]:
    """nproc, memory, CPU and the versions that matter."""
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("pyarrow", "polars", "duckdb", "pysigma", "pysigma-backend-duckdb", "evtx", "sigma-arrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": cpu,
        "python": platform.python_version(),
        **versions,
    }


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _gb(value: int) -> str:
    return f"{value / 1024**3:.2f} GB"


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def figure_rows(lane: str, results: dict[str, Measurement], ratio_base: str) -> list[list[str]]:
    """Table rows (lane, mode, rate, target, RSS, note) for one lane."""
    rows: list[list[str]] = []
    duck = results.get("duckdb")
    for mode, measurement in results.items():
        label = LABELS[mode]
        if measurement.error:
            rows.append([lane, label, "n/a", "", "", f"not measured: {measurement.error}"])
            continue
        unit = "records/s" if mode == "evtx" else "events/s"
        rate = f"{_rate(measurement.rate)} {unit}"
        rss = f"{_gb(measurement.rss_bytes)} ({_verdict(measurement.rss_bytes < TARGET_RSS_BYTES)})"
        note = f"{measurement.rows:,} events"
        if measurement.details.get("workers"):
            workers = measurement.details["workers"]
            note += f", {workers} worker process(es) (RSS summed over the process tree)"
        if len(measurement.rates) > 1:
            note += f", median of {len(measurement.rates)} runs"
        if mode in TARGETS:
            target = f">= {TARGETS[mode]:,} ({_verdict(measurement.rate >= TARGETS[mode])})"
        else:
            target = "-"
            d = measurement.details
            note = (
                f"{d['rows']:,}-event prefix, 1 run; {d['converted_rules']:,}/{d['detection_rules']:,} rules "
                f"converted, {d['queries_ran']:,} `SELECT {d.get('select', '*')}` queries ran "
                f"({d['query_seconds']:,.0f} s)"
            )
            if d["rows"] < 20_000:
                note += "; small prefix: fixed per-query costs dominate, the ratio is not meaningful"
            rss = f"{_gb(measurement.rss_bytes)}"
        if mode == "evaluate" and measurement.details.get("rows"):
            matched = measurement.details.get("matched_events", 0)
            note += f"; {matched / measurement.rows:.3%} of events match a rule"
            note += "; " + FORM_NOTES[measurement.details.get("form", "dense")]
        rows.append([lane, label, rate, target, rss, note])
    base = results.get(ratio_base)
    if duck and not duck.error and duck.rate > 0:
        if base and not base.error and base.rate > 0:
            ratio = base.rate / duck.rate
            rows.append(
                [
                    lane,
                    f"ours ({LABELS[ratio_base]}) / DuckDB",
                    f"{ratio:,.0f}x",
                    f">= {TARGET_RATIO:.0f}x ({_verdict(ratio >= TARGET_RATIO)})",
                    "",
                    "per-event rates",
                ]
            )
        else:
            rows.append([lane, "ours / DuckDB", "n/a", f">= {TARGET_RATIO:.0f}x", "", "engine not measured"])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    """A GitHub markdown table of figure rows."""
    head = ["lane", "measurement", "throughput", "target", "peak RSS (< 2 GB)", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(block: str, path: Path = RESULTS) -> None:
    """Replace the results block of RESULTS.md (the human-written header is kept)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    new = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + new + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    path.write_text(text)


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The harness's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="sigma-arrow benchmark: SigmaHQ corpus over attack-dense and realistic lanes (issue 4).",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="events per lane (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per throughput figure; median reported")
    parser.add_argument("--quick", action="store_true", help="smoke check: 100k events, 1 run, small samples")
    parser.add_argument("--lanes", default="attack,realistic", help="comma-separated: attack,realistic")
    parser.add_argument(
        "--modes",
        default="evaluate,parquet,ndjson,evtx",
        help="comma-separated subset of evaluate,parquet,ndjson,evtx",
    )
    parser.add_argument(
        "--duckdb-rows",
        type=int,
        default=50_000,
        help="events (a prefix of the lane) the DuckDB peer runs on; 0 = all (default 50,000)",
    )
    parser.add_argument("--no-duckdb", action="store_true", help="skip the DuckDB peer")
    parser.add_argument(
        "--duckdb-count",
        action="store_true",
        help="DuckDB peer runs SELECT count(*) instead of the backend's SELECT * (no rows fetched)",
    )
    parser.add_argument(
        "--check-rows", type=int, default=10_000, help="events per lane in the reference check (10,000)"
    )
    parser.add_argument(
        "--evtx-rows", type=int, default=0, help="EVTX lane: at least this many records (default: --rows)"
    )
    parser.add_argument(
        "--evtx-files", type=int, default=0, help="EVTX lane: use only the first N source files (0 = all)"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the reference check")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="scan worker processes for the end-to-end lanes, as `scan --workers` (default 0: automatic)",
    )
    parser.add_argument(
        "--evaluate-workers",
        type=int,
        default=0,
        help="in-memory lane: engine processes, each over its share of the batches (default 0: one per core)",
    )
    parser.add_argument(
        "--evaluate-form",
        choices=FORMS,
        default="dictionary",
        help="in-memory lane: hold the batches as SparseBatches (default; plain strings, what JSON/EVTX "
        "decoding hands the engine), as SparseBatches of dictionary columns (what Parquet scans hand it) "
        "or as Arrow RecordBatches",
    )
    parser.add_argument("--rules", action="append", type=Path, help="rule dirs (default: the SigmaHQ corpus)")
    parser.add_argument(
        "--shared", type=Path, default=datasets.DEFAULT_SHARED, help="the ../shared directory"
    )
    parser.add_argument("--data-dir", type=Path, default=datasets.DEFAULT_DATA_DIR, help="dataset cache")
    parser.add_argument("--seed", type=int, default=datasets.DEFAULT_SEED)
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file to update")
    parser.add_argument("--no-write", action="store_true", help="do not update the results file")
    parser.add_argument("--json", type=Path, help="also write all figures as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        defaults = {"rows": 1_000_000, "runs": 3, "duckdb_rows": 50_000, "check_rows": 10_000}
        quick = {"rows": 100_000, "runs": 1, "duckdb_rows": 2_000, "check_rows": 2_000}
        for name, value in quick.items():
            if getattr(args, name) == defaults[name]:
                setattr(args, name, value)
    return args


def engine_available() -> str | None:
    """None when the engine, loader and scan can be imported; otherwise why not."""
    try:
        from sigma_arrow.engine import Engine  # noqa: F401
        from sigma_arrow.loader import load_rules  # noqa: F401
        from sigma_arrow.scanning import scan  # noqa: F401
    except Exception as error:
        return f"engine not available ({type(error).__name__}: {error})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print/record the figures."""
    args = parse_args(argv)
    LOAD_AT_START[0] = os.getloadavg()[0]
    command = "python -m bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    started = time.perf_counter()
    lanes = [lane.strip() for lane in args.lanes.split(",") if lane.strip()]
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    rule_dirs = [str(p) for p in (args.rules or default_rule_dirs(args.shared))]
    info = machine_info()
    print(f"sigma-arrow benchmark  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"load average (1 min): {LOAD_AT_START[0]:.1f}")
    print(f"command: {command}")

    built = time.perf_counter()
    sets = datasets.build(lanes, args.rows, data_dir=args.data_dir, shared=args.shared, seed=args.seed)
    print(f"datasets ready in {time.perf_counter() - built:.1f} s")

    unavailable = engine_available()
    ruleset = None
    if unavailable:
        print(unavailable)
    else:
        from sigma_arrow.loader import load_rules

        loading = time.perf_counter()
        ruleset = load_rules(rule_dirs)
        print(
            f"rules: {len(ruleset):,} compiled, {len(ruleset.errors):,} not loadable "
            f"({time.perf_counter() - loading:.1f} s, cached by sigma_arrow)"
        )

    all_rows: list[list[str]] = []
    figures: dict[str, Any] = {"machine": info, "command": command, "lanes": {}}
    checks: dict[str, dict[str, Any]] = {}
    evtx_counts: dict[str, int] = {}
    for lane in lanes:
        dataset = sets[lane]
        print(f"\n== lane {lane}: {dataset.rows:,} events ({dataset.parquet.name})")
        results: dict[str, Measurement] = {}
        for mode in modes:
            if mode == "evtx" and lane != "attack":
                continue  # EVTX cannot be perturbed (no writer): attack lane only
            if unavailable:
                results[mode] = Measurement(mode, error=unavailable)
                continue
            print(f"  {LABELS[mode]} ...", flush=True)
            if mode == "evaluate":
                results[mode] = measure_evaluate(
                    dataset.parquet,
                    rule_dirs,
                    args.runs,
                    args.evaluate_workers or os.cpu_count() or 1,
                    args.evaluate_form,
                )
            elif mode == "parquet":
                results[mode] = measure_scan(
                    mode, [str(dataset.parquet)], rule_dirs, args.runs, workers=args.workers
                )
            elif mode == "ndjson":
                results[mode] = measure_scan(
                    mode, [str(dataset.ndjson)], rule_dirs, args.runs, "jsonl", args.workers
                )
            elif mode == "evtx":
                limits = (args.evtx_files, args.evtx_rows)
                tree, evtx_counts[lane] = evtx_repeat_dir(dataset, args.data_dir, *limits)
                results[mode] = measure_scan(mode, [str(tree)], rule_dirs, args.runs, "evtx", args.workers)
            _print_measurement(results[mode])
        if not args.no_duckdb:
            rows = args.duckdb_rows or None
            print(
                f"  {LABELS['duckdb']} on {'all' if rows is None else f'the first {rows:,}'} events ...",
                flush=True,
            )
            results["duckdb"] = measure_duckdb(dataset.parquet, rows, rule_dirs, args.duckdb_count)
            _print_measurement(results["duckdb"])
        lane_rows = figure_rows(lane, results, "parquet" if "parquet" in results else "evaluate")
        if ruleset is not None and not args.no_check:
            print(f"  reference check on {args.check_rows:,} events ...", flush=True)
            try:
                checks[lane] = check = reference_check(dataset.parquet, args.check_rows, ruleset)
                verdict = "ok" if check["disagree"] == 0 else "DISAGREE"
                print(
                    f"    agree {check['agree']:,} / disagree {check['disagree']:,} (rule, event) pairs "
                    f"({check['events']:,} events, {check['distinct_events']:,} distinct; "
                    f"{check['engine_matches']:,} engine matches, {check['reference_matches']:,} reference)"
                    f" {verdict} [{check['seconds']} s]"
                )
                for example in check["only_engine"] + check["only_reference"]:
                    print(f"      e.g. {example}")
                lane_rows.append(
                    [
                        lane,
                        f"reference check ({check['events']:,} events)",
                        f"agree {check['agree']:,}",
                        f"disagree 0 ({_verdict(check['disagree'] == 0)})",
                        "",
                        f"disagree {check['disagree']:,} (rule, event) pairs; "
                        f"{check['engine_matches']:,} matches",
                    ]
                )
            except Exception as error:
                checks[lane] = {"error": str(error)}
                print(f"    reference check failed: {error}")
        all_rows.extend(lane_rows)
        figures["lanes"][lane] = {
            "dataset": {
                "rows": dataset.rows,
                "parquet": dataset.parquet.name,
                "info": dataset.info,
                "evtx_records": dataset.evtx_records,
            },
            "results": {
                m: {
                    "rate": r.rate,
                    "rates": r.rates,
                    "rss_bytes": r.rss_bytes,
                    "rows": r.rows,
                    "error": r.error,
                    "details": r.details,
                }
                for m, r in results.items()
            },
            "check": checks.get(lane),
        }

    table = markdown_table(all_rows)
    print("\n" + table)
    elapsed = time.perf_counter() - started
    print(f"\nbenchmark took {elapsed / 60:.1f} min")
    block = _results_block(command, info, table, sets, args, elapsed, evtx_counts)
    if not args.no_write:
        write_results(block, args.results)
        print(f"results written to {args.results}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


def _print_measurement(m: Measurement) -> None:
    if m.error:
        print(f"    not measured: {m.error}")
        return
    unit = "records/s" if m.mode == "evtx" else "events/s"
    runs = ", ".join(_rate(r) for r in m.rates)
    extra = ""
    d = m.details
    if m.mode == "evaluate":
        extra = (
            f"; {d.get('matched_events', 0):,} events matched, {d.get('matches', 0):,} (rule, event) matches"
        )
    elif m.mode == "duckdb":
        extra = (
            f"; {d['converted_rules']:,}/{d['detection_rules']:,} rules converted, "
            f"{d['queries_ran']:,} queries ran, {d['matches']:,} matches, load {d['load_seconds']} s, "
            f"queries {d['query_seconds']} s"
        )
    elif d:
        extra = f"; {d.get('matches', 0):,} match records, stages {d.get('stages')}"
        if "workers" in d:
            extra += f", {d['workers']} worker process(es), {d.get('tree_processes', 1)} processes sampled"
    print(f"    {_rate(m.rate)} {unit} (runs: {runs}), peak RSS {_gb(m.rss_bytes)}, {m.rows:,} events{extra}")


def _results_block(
    command: str,
    info: dict[str, str],
    table: str,
    sets: dict[str, datasets.Dataset],
    args: argparse.Namespace,
    elapsed: float,
    evtx_counts: dict[str, int],
) -> str:
    lanes = []
    for lane, dataset in sets.items():
        text = f"`{lane}`: {dataset.rows:,} events"
        if lane in evtx_counts:
            text += f" (EVTX lane: {evtx_counts[lane]:,} records, the source .evtx files read repeatedly)"
        if lane == "realistic":
            text += f" ({dataset.info.get('attack_rows', 0):,} untouched attack events)"
        lanes.append(text)
    duck = (
        "not run"
        if args.no_duckdb
        else (
            f"on the first {args.duckdb_rows:,} events of each lane (per-event rates)"
            if args.duckdb_rows
            else "on all events"
        )
    )
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    return (
        f"### Latest run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
        f"- command: `{command}` ({elapsed / 60:.1f} min)\n"
        f"- machine: {machine}\n"
        f"- datasets: {'; '.join(lanes)}\n"
        f"- runs per figure: {args.runs} (the median is reported); DuckDB peer: {duck}\n"
        f"- load average (1 min) at start: {LOAD_AT_START[0]:.1f} on {os.cpu_count()} cores "
        "(other processes running on the machine make every figure slower)\n\n"
        f"{table}\n"
    )
