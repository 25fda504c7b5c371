"""Parallel scans (``scan --workers N``): the same match records, order, problems and stats as one process."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import multiprocessing
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import sigma_arrow as sa
from sigma_arrow import flatten, workers
from sigma_arrow.cli import cli
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import records_to_batch
from sigma_arrow.readers import json as json_reader
from sigma_arrow.readers.json import JsonReader, read_ndjson_range
from sigma_arrow.readers.registry import expand_inputs
from sigma_arrow.ruleset import RuleSet
from sigma_arrow.scanning import ScanStats, scan_chunks
from sigma_arrow.schema import INDEX_COLUMN, RESERVED_COLUMNS
from sigma_arrow.sinks.text import encode_jsonl

PROJECT = Path(__file__).resolve().parents[1]
RULES = PROJECT / "rules"
EVENTS = PROJECT / "examples" / "events.jsonl"

# NDJSON layouts the line scan must count exactly as the reader does (blank = empty or whitespace).
NDJSON_CASES = {
    "plain": b'{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n{"a": 5}\n',
    "blank lines": b'\n{"a": 1}\n\n\n{"a": 2}\n  \n\t\n{"a": 3}\n\r\n{"a": 4}\n',
    "no final newline": b'{"a": 1}\n{"a": 2}\n{"a": 3}',
    "bom": b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n{"a": 3}\n',
    "bom then blank": b'\xef\xbb\xbf\n{"a": 1}\n{"a": 2}\n',
    "crlf": b'{"a": 1}\r\n{"a": 2}\r\n\r\n{"a": 3}\r\n',
    "indented and malformed": b'  {"a": 1}\n{"a": \n not json\n {"a": 4}\n[1, 2]\n{"a": 6}\n',
    "one line": b'{"a": 1}',
    "empty": b"",
}


def _problems(log: ErrorLog) -> list[tuple[Any, ...]]:
    return [(p.source, p.offset, p.kind, p.message) for p in log.examples]


def _numpy_ranges(path: str, per_range: int) -> list[tuple[int, int, int, int]]:
    """``ndjson_ranges`` without the native decoder (its numpy newline scan)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flatten, "native_decode_enabled", lambda: False)
        return list(workers.ndjson_ranges(path, per_range))


@pytest.mark.parametrize("window", [7, 4096, 1 << 27], ids=lambda w: f"window{w}")
@pytest.mark.parametrize("per_range", [1, 5, 97, 1000])
def test_native_ndjson_ranges_across_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int, per_range: int
) -> None:
    """Range starts found over mapped windows (cut inside lines and blank runs) equal numpy's."""
    lines = [b'{"n": %d, "pad": "%s"}' % (n, b"x" * (n % 50)) for n in range(3000)]
    data = b"\xef\xbb\xbf" + b"".join(
        line + b"\n" * (1 + n % 3) + b" \t\n" * (n % 5 == 0) for n, line in enumerate(lines)
    )
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    monkeypatch.setattr(json_reader, "MAP_WINDOW", window)
    assert flatten.native_decode_enabled()
    assert list(workers.ndjson_ranges(str(path), per_range)) == _numpy_ranges(str(path), per_range)


@pytest.mark.parametrize("name", NDJSON_CASES)
@pytest.mark.parametrize("per_range", [1, 2, 3])
def test_ndjson_ranges_read_like_the_whole_file(tmp_path: Path, name: str, per_range: int) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(NDJSON_CASES[name])
    whole_log = ErrorLog(max_examples=1000)
    whole = [
        i
        for b in JsonReader("ndjson").read(str(path), batch_size=2, errors=whole_log)
        for i in b.column(INDEX_COLUMN).to_pylist()
    ]
    ranges = list(workers.ndjson_ranges(str(path), per_range))
    assert ranges == _numpy_ranges(str(path), per_range)  # the native counter finds the same starts
    assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
    parts_log = ErrorLog(max_examples=1000)
    parts: list[int] = []
    for start, end, first, count in ranges:
        assert count <= per_range
        batches = read_ndjson_range(str(path), start, end, first, batch_size=2, errors=parts_log)
        parts += [i for b in batches for i in b.column(INDEX_COLUMN).to_pylist()]
    assert parts == whole
    assert _problems(parts_log) == _problems(whole_log)


def _scan(paths: list[str], rules: RuleSet, count: int, **options: Any) -> dict[str, Any]:
    """Everything a scan produces: records, their JSON Lines, problems, statistics."""
    errors = ErrorLog(max_examples=1000)
    stats = ScanStats()
    records: list[dict[str, Any]] = []
    lines = b""
    for batch, encoded in scan_chunks(
        paths, rules, errors=errors, stats=stats, workers=count, encode="jsonl", **options
    ):
        lines += encoded if encoded is not None else encode_jsonl(batch)
        records += [{k: v for k, v in r.items() if k != "event"} for r in batch.to_pylist()]
    assert stats.workers == count
    return {
        "records": records,
        "jsonl": lines,
        "problems": _problems(errors),
        "counts": dict(errors.counts),
        "stats": (stats.events, stats.per_input, stats.batches, stats.matches, stats.by_rule, stats.skipped),
    }


def _inputs(tmp_path: Path) -> dict[str, list[str]]:
    """Example inputs: NDJSON (split into ranges), Parquet row groups, many small files, bad records."""
    events = EVENTS.read_bytes()
    big = tmp_path / "big.jsonl"
    lines = events.splitlines(keepends=True)
    big.write_bytes(b"".join(lines * 3) + b"not json\n\n" + b"".join(lines))
    flat = records_to_batch([json.loads(line) for line in lines if line.strip()], source="x", first_index=0)
    table = pa.Table.from_batches([flat]).drop_columns(list(RESERVED_COLUMNS))
    parquet = tmp_path / "events.parquet"
    pq.write_table(table, parquet, row_group_size=3)
    small = tmp_path / "small"
    small.mkdir()
    for i, line in enumerate(lines):
        (small / f"e{i:02d}.jsonl").write_bytes(line)
    (small / "bad.jsonl").write_bytes(b'{"a": \n')
    return {
        "ndjson ranges": [str(big)],
        "parquet row groups": [str(parquet)],
        "small files": [str(small)],
        "mixed": [str(big), str(parquet), str(small), str(tmp_path / "missing.jsonl")],
    }


#: How worker processes start: forked from the scanning process (sharing its engine) or spawned.
START_METHODS = {"fork": "", "spawn": "1"}


def _fresh(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new interpreter: no threads or fork-unsafe libraries from other tests.

    Whether workers are forked depends on the whole process (``workers.fork_is_safe``); a test
    session has imported polars, DataFusion, Kafka and Dask by then, so the fork path is tested here.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def _compare_scans(paths: list[str], start: str) -> tuple[dict[str, Any], dict[str, Any]]:
    workers.SPLIT_MIN_BYTES = 0  # split the small example file into ranges
    os.environ["SIGMA_ARROW_SPAWN_WORKERS"] = START_METHODS[start]
    assert workers.fork_is_safe() == (start == "fork")
    rules = sa.load_rules([RULES])
    options = {"batch_size": 4, "engine_batch_rows": 8}  # small units: many of them, many batches
    return _scan(paths, rules, 1, **options), _scan(paths, rules, 2, **options)


@pytest.mark.parametrize("start", START_METHODS)
@pytest.mark.parametrize("case", ["ndjson ranges", "parquet row groups", "small files", "mixed"])
def test_workers_give_identical_results(tmp_path: Path, case: str, start: str) -> None:
    alone, parallel = _fresh(_compare_scans, _inputs(tmp_path)[case], start)
    assert alone["records"], "the example rules match the example events"
    for key in alone:
        assert parallel[key] == alone[key], key


def test_units_cover_the_inputs_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "SPLIT_MIN_BYTES", 0)
    paths = expand_inputs(_inputs(tmp_path)["mixed"][:3])
    units = list(workers.plan_units(paths, "auto", 8, 4))
    inputs = [part.input for unit in units for part in unit.parts]
    assert list(dict.fromkeys(inputs)) == paths and len(paths) == 23
    ranges = [p.lines for unit in units for p in unit.parts if p.lines and p.input == paths[0]]
    assert [r[2] for r in ranges] == list(range(0, 8 * len(ranges), 8))
    assert all(unit.rows <= 8 or len(unit.parts) == 1 for unit in units)


class _DieOnLoad:
    """Unpickling this in a worker kills the worker process (a crash the scan must report)."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (os._exit, (3,))


def test_spawned_worker_crash_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGMA_ARROW_SPAWN_WORKERS", "1")
    rules = sa.load_rules([RULES])
    doomed = RuleSet(rules=rules.rules, filters=[_DieOnLoad()])  # type: ignore[list-item]
    with pytest.raises(workers.WorkerError) as raised:
        list(sa.scan([str(EVENTS)], doomed, workers=2))
    assert "\n" not in str(raised.value) and "worker" in str(raised.value)


def _die(unit: workers.Unit) -> workers.UnitResult:
    os._exit(3)


def _forked_crash() -> str:
    workers._run_unit = _die  # type: ignore[assignment]  # forked workers inherit the patched module
    assert workers.fork_is_safe()
    try:
        list(sa.scan([str(EVENTS)], sa.load_rules([RULES]), workers=2))
    except workers.WorkerError as error:
        return str(error)
    return "no error"


def test_forked_worker_crash_is_one_clear_error() -> None:
    message = _fresh(_forked_crash)
    assert "\n" not in message and "died" in message


def _scan_with_one_rule_engine() -> tuple[set[str], set[str], str, list[bool]]:
    assert workers.fork_is_safe()
    rules = sa.load_rules([RULES])
    everything = {r["rule_id"] for r in _scan([str(EVENTS)], rules, 2)["records"]}
    chosen = next(rule for rule in rules.rules if rule.id in everything)
    one_rule = sa.Engine(RuleSet(rules=[chosen]))
    started: list[bool] = []
    found: set[str] = set()
    for batch, _ in scan_chunks(
        [str(EVENTS)], rules, workers=2, engine=one_rule, on_start=lambda: started.append(True)
    ):
        found.update(batch.column("rule_id").to_pylist())
    return everything, found, chosen.id, started


def test_forked_workers_use_the_callers_engine() -> None:
    """Forked workers evaluate with the engine built by the caller, not one of their own."""
    everything, found, chosen, started = _fresh(_scan_with_one_rule_engine)
    assert len(everything) > 1 and found == {chosen}
    assert started == [True]


def _sleep_briefly() -> None:
    threading.Event().wait(0.2)


def _fork_is_safe_when(case: str) -> bool:
    other = threading.Thread(target=_sleep_briefly)
    if case == "spawn asked for":
        os.environ["SIGMA_ARROW_SPAWN_WORKERS"] = "1"
    elif case == "another thread":
        other.start()
    elif case == "polars loaded":
        import polars  # noqa: F401
    try:
        return workers.fork_is_safe()
    finally:
        if other.is_alive():
            other.join()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("single thread", True),
        ("spawn asked for", False),
        ("another thread", False),
        ("polars loaded", False),
    ],
)
def test_fork_is_safe(case: str, expected: bool) -> None:
    assert _fresh(_fork_is_safe_when, case) is expected


def test_choose_workers() -> None:
    assert workers.choose_workers(1, [str(EVENTS)], "auto") == 1
    assert workers.choose_workers(3, [str(EVENTS)], "auto") == 3
    assert workers.choose_workers(0, [str(EVENTS)], "auto") == 1  # too small to pay for workers
    assert workers.choose_workers(2, ["-"], "auto") == 1  # stdin is read here


def test_cli_workers_option() -> None:
    outputs = {}
    for count in ("1", "2"):
        result = CliRunner().invoke(
            cli, ["scan", "-r", str(RULES), str(EVENTS), "--workers", count], catch_exceptions=False
        )
        assert result.exit_code == 0
        outputs[count] = result.stdout
    assert outputs["1"] == outputs["2"] and outputs["1"].count("\n") == 10


def test_cli_profile_sums_the_workers() -> None:
    result = CliRunner().invoke(
        cli, ["scan", "-r", str(RULES), str(EVENTS), "--workers", "2", "--profile"], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert "summed over 2 worker processes" in result.stderr
    assert "engine: 1 batches, 20 rows" in result.stderr  # the workers' engine profiles, summed


@pytest.mark.shared
def test_identical_on_real_data(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sigma_rule_dirs: list[Path],
    evtx_samples: Path,
    regression_data: Path,
) -> None:
    """The SigmaHQ corpus over the EVTX samples, the regression JSON and an NDJSON of the samples."""
    import evtx

    monkeypatch.setattr(workers, "SPLIT_MIN_BYTES", 0)
    ndjson = tmp_path / "samples.jsonl"
    with ndjson.open("wb") as out:
        for source in sorted(evtx_samples.glob("*.evtx"))[:60]:
            for record in evtx.PyEvtxParser(str(source)).records_json():
                out.write(json.dumps(json.loads(record["data"])).encode() + b"\n")
        out.write(b"{broken\n")
    inputs = [str(evtx_samples), str(ndjson), *map(str, sorted(regression_data.rglob("*.json"))[:40])]
    rules: list[str] = []
    for directory in sigma_rule_dirs:
        rules += ["-r", str(directory)]
    results = {}
    for count in ("1", "2"):
        errors = tmp_path / f"errors-{count}.jsonl"
        result = CliRunner().invoke(
            cli,
            ["scan", *rules, *inputs, "--workers", count, "--batch-size", "2000", "--errors", str(errors)],
            catch_exceptions=False,
        )
        results[count] = (result.exit_code, result.stdout, errors.read_bytes())
    assert results["1"][1].count("\n") > 1000
    assert results["1"][0] == 1  # the broken NDJSON line
    assert results["2"] == results["1"]


@pytest.mark.parametrize("start", START_METHODS)
def test_automatic_workers_for_columnar_inputs_on_two_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """Spawned workers do not pay on 2 cores for Parquet (the reader thread overlaps); forked do."""
    monkeypatch.setattr(workers, "fork_is_safe", lambda: start == "fork")
    big = tmp_path / "big.parquet"
    pq.write_table(pa.table({"EventID": pa.array(["4688"] * 600_000)}), big)
    assert workers.choose_workers(0, [str(big)], "auto", cores=2) == (2 if start == "fork" else 1)
    assert workers.choose_workers(0, [str(big)], "auto", cores=4) == 4
    assert workers.choose_workers(3, [str(big)], "auto", cores=2) == 3  # asked for: as asked
    monkeypatch.setattr(workers, "AUTO_MIN_EVENTS", 1)
    monkeypatch.setattr(workers, "AUTO_MIN_EVENTS_FORKED", 1)
    assert workers.choose_workers(0, [str(EVENTS)], "auto", cores=2) == 2  # JSON: workers win
    assert workers.choose_workers(0, [str(EVENTS), str(big)], "auto", cores=2) == 2


@pytest.mark.shared
def test_evtx_record_counts_from_chunk_headers(tmp_path: Path, evtx_samples: Path) -> None:
    """Units are sized by the records EVTX chunk headers announce: exactly what the parser yields."""
    import gzip

    import evtx

    from sigma_arrow.readers.evtx import count_records

    samples = sorted(evtx_samples.glob("*.evtx"))[:40]
    for sample in samples:
        assert count_records(str(sample)) == sum(1 for _ in evtx.PyEvtxParser(str(sample)).records_json())
    data = samples[0].read_bytes()
    cases = {
        "compressed": gzip.compress(data),
        "not evtx": b"{}\n" * 100,
        "header only": data[:0x1000],
        "damaged chunk magic": data[:0x1000] + b"X" * 8 + data[0x1008:],
    }
    expected = {"compressed": None, "not evtx": None, "header only": 0, "damaged chunk magic": 0}
    for name, content in cases.items():
        path = tmp_path / (f"{name}.evtx.gz" if name == "compressed" else f"{name}.evtx")
        path.write_bytes(content)
        assert count_records(str(path)) == expected[name], name
    assert count_records(str(tmp_path / "missing.evtx")) is None


@pytest.mark.parametrize(
    "events, expected",
    [
        (10, 65_536),  # one unit anyway
        (200_000, 65_536),  # small scan: units no smaller than MIN_UNIT_ROWS
        (303_048, 75_762),  # a quarter each
        (524_287, 131_072),
        (524_288, 262_144),  # two full batches or more: engine batches as usual
        (3_000_000, 262_144),
    ],
)
def test_small_scans_get_smaller_units(monkeypatch: pytest.MonkeyPatch, events: int, expected: int) -> None:
    monkeypatch.setattr(workers, "_estimate", lambda path, kind: events)
    assert workers.unit_rows([str(EVENTS)], "jsonl", 262_144) == expected
    monkeypatch.setattr(workers, "_estimate", lambda path, kind: events // 8)
    size = workers.unit_rows([str(EVENTS)] * 8, "jsonl", 262_144)
    units = list(workers.plan_units([str(EVENTS)] * 8, "jsonl", 262_144, 65_536))
    assert all(unit.rows <= size or len(unit.parts) == 1 for unit in units)
    assert sum(len(unit.parts) for unit in units) == 8
    assert len(units) == min(8, -(-8 * (events // 8) // size))


@pytest.mark.parametrize("start", START_METHODS)
@pytest.mark.parametrize("events", [100_000, 200_000, 600_000])
def test_automatic_workers_start_sooner_when_forked(
    monkeypatch: pytest.MonkeyPatch, start: str, events: int
) -> None:
    """Forked workers cost milliseconds to start: automatic scans use them for smaller inputs."""
    monkeypatch.setattr(workers, "fork_is_safe", lambda: start == "fork")
    monkeypatch.setattr(workers, "_estimate", lambda path, kind: events)
    enough = workers.AUTO_MIN_EVENTS_FORKED if start == "fork" else workers.AUTO_MIN_EVENTS
    assert workers.choose_workers(0, [str(EVENTS)], "jsonl", cores=2) == (2 if events >= enough else 1)


@pytest.mark.shared
@pytest.mark.parametrize("files", [1, 3])
def test_evtx_units_read_alike_sparse_and_dense(evtx_samples: Path, files: int) -> None:
    """EVTX files decoded as parsed (the native engine's way, big files too) equal the batches the
    other backends read: same rows, each event's fields in the same order, same values."""
    from sigma_arrow.readers.evtx import count_records

    samples = [str(p) for p in sorted(evtx_samples.rglob("*.evtx"))]
    paths = sorted(samples, key=lambda p: -(count_records(p) or 0))[:files]  # the most records
    unit = workers.Unit(tuple(workers.Part(path, "evtx") for path in paths), 1)
    options = workers.ReadOptions("evtx", 7, 50, True, None)
    rules = sa.load_rules([RULES])

    def read(backend: str) -> list[pa.RecordBatch]:
        log = ErrorLog()
        batches = workers.read_unit(unit, rules, dataclasses.replace(options, backend=backend), log, _ignore)
        return [b.to_batch() if isinstance(b, SparseBatch) else b for b in batches]

    def rows(batches: list[pa.RecordBatch]) -> list[list[tuple[str, Any]]]:
        # Each row's set event fields in column order: what a match record's event holds.
        return [
            [(k, v) for k, v in row.items() if v is not None and k not in RESERVED_COLUMNS]
            for b in batches
            for row in b.to_pylist()
        ]

    sparse, dense = rows(read("native")), rows(read("pyarrow"))
    assert len(sparse) > 50 and sparse == dense


def _ignore(source: str, rows: int) -> None:
    pass
