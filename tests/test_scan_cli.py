"""``sigma-arrow scan`` and ``sigma_arrow.scan``: matches, output formats, bad input, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import sigma_arrow as sa
from sigma_arrow.cli import cli
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.scanning import ScanStats

PROJECT = Path(__file__).resolve().parents[1]
RULES = PROJECT / "rules"
EVENTS = PROJECT / "examples" / "events.jsonl"

ENCODED = "3e43a0f9-a616-4a01-a1f7-cb75e315b3bf"
CERTUTIL = "f5e71281-5a2e-4823-ac3d-c120b01ebc82"
RUNDLL32 = "9f25a61e-6de6-456f-bf5e-1f6eea064062"
KEYWORDS = "da1cf647-133e-4c1e-902b-99b0d51becd6"
WHOAMI = "3f2c4506-a50d-4e7b-a56d-dafd453f8322"
LEVEL = {ENCODED: "high", CERTUTIL: "high", RUNDLL32: "medium", KEYWORDS: "critical", WHOAMI: "low"}

# Which example event (line number, 0-based) each example rule must flag: the events were written so.
EXPECTED = {
    (1, ENCODED),  # powershell -enc, flat Sysmon
    (2, ENCODED),  # pwsh -EncodedCommand, nested EVTX JSON
    (4, CERTUTIL),  # certutil -urlcache http://
    (5, CERTUTIL),  # Security 4688 (NewProcessName) with /urlcache: windash + logsource rename
    (7, RUNDLL32),  # rundll32 to a public address (DestinationIp not in the private ranges)
    (10, KEYWORDS),  # sekurlsa:: in the command line
    (11, KEYWORDS),  # procdump* -ma lsass
    (12, WHOAMI),
    (13, WHOAMI),  # Security 4688 again
    (15, WHOAMI),  # nested EVTX JSON
}


def run(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, ["scan", *args], input=input, catch_exceptions=False)


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def pairs(records: list[dict[str, Any]]) -> set[tuple[int, str]]:
    return {(r["event_index"], r["rule_id"]) for r in records}


def test_example_rules_on_example_events() -> None:
    result = run("-r", str(RULES), str(EVENTS))
    assert result.exit_code == 0, result.stderr
    records = jsonl(result.stdout)
    assert pairs(records) == EXPECTED
    for record in records:
        assert record["source"] == str(EVENTS)
        assert record["rule_level"] == LEVEL[record["rule_id"]]
        assert record["timestamp"]
        assert record["event"] and None not in record["event"].values()
    assert "events read" in result.stderr and "20" in result.stderr


@pytest.mark.parametrize(
    ("min_level", "levels"),
    [("high", {"high", "critical"}), ("critical", {"critical"}), ("informational", set(LEVEL.values()))],
)
def test_min_level(min_level: str, levels: set[str]) -> None:
    result = run("-r", str(RULES), "--min-level", min_level, "--no-event", str(EVENTS))
    assert result.exit_code == 0
    records = jsonl(result.stdout)
    assert {r["rule_level"] for r in records} == levels
    assert pairs(records) == {p for p in EXPECTED if LEVEL[p[1]] in levels}
    assert all("event" not in r for r in records)


@pytest.mark.parametrize(
    ("name", "extra"), [("m.parquet", []), ("m.csv", []), ("m.out", ["--output-format", "json"])]
)
def test_output_files(tmp_path: Path, name: str, extra: list[str]) -> None:
    out = tmp_path / name
    result = run("-r", str(RULES), str(EVENTS), "-o", str(out), *extra)
    assert result.exit_code == 0
    assert result.stdout == ""
    if name.endswith(".parquet"):
        rows = pq.read_table(out).to_pylist()
    elif name.endswith(".csv"):
        import csv

        rows = [{**r, "event_index": int(r["event_index"])} for r in csv.DictReader(out.open())]
    else:
        rows = json.loads(out.read_text())
    assert pairs(rows) == EXPECTED


def test_stdin_input() -> None:
    result = run("-r", str(RULES), "--no-event", "-", input=EVENTS.read_bytes())
    assert result.exit_code == 0
    records = jsonl(result.stdout)
    assert pairs(records) == EXPECTED
    assert {r["source"] for r in records} == {"-"}


def _corrupt_evtx(tmp_path: Path, evtx_samples: Path | None) -> tuple[Path, bool]:
    """A damaged EVTX file: a truncated real sample when ../shared exists, else a fake header."""
    path = tmp_path / "broken.evtx"
    if evtx_samples is not None:
        sample = max(evtx_samples.rglob("*.evtx"), key=lambda p: p.read_bytes().count(b"ElfChnk\x00"))
        path.write_bytes(sample.read_bytes()[: 0x1000 + 0x10000 + 5000])
        return path, True
    path.write_bytes(b"ElfFile\x00" + b"\x00" * 100)
    return path, False


@pytest.mark.parametrize("use_samples", [False, pytest.param(True, marks=pytest.mark.shared)])
def test_malformed_inputs_are_reported_and_scan_goes_on(
    tmp_path: Path, use_samples: bool, request: Any
) -> None:
    samples = request.getfixturevalue("evtx_samples") if use_samples else None
    lines = EVENTS.read_bytes().splitlines(keepends=True)
    broken_line = b'{"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Image": \n'
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_bytes(b"".join(lines[:3]) + broken_line + b"".join(lines[3:]))
    evtx_path, real = _corrupt_evtx(tmp_path, samples)
    errors_file = tmp_path / "errors.jsonl"
    missing = tmp_path / "missing.evtx"
    result = run(
        "-r",
        str(RULES),
        "--no-event",
        "--errors",
        str(errors_file),
        str(evtx_path),
        str(missing),
        str(bad_jsonl),
    )
    assert result.exit_code == 1
    # The good lines were still scanned: indices after the broken line are shifted by one record.
    assert pairs(jsonl(result.stdout)) == {(i + 1 if i >= 3 else i, rule) for i, rule in EXPECTED}
    problems = [json.loads(line) for line in errors_file.read_text().splitlines()]
    by_source = {p["source"]: p for p in problems}
    assert by_source[str(bad_jsonl)]["kind"] == "json"
    assert by_source[str(bad_jsonl)]["offset"] == len(b"".join(lines[:3]))
    assert by_source[str(missing)]["kind"] == "file"
    assert by_source[str(evtx_path)]["kind"].startswith("evtx")
    if real:
        assert by_source[str(evtx_path)]["offset"] == 0x1000 + 0x10000
    assert str(bad_jsonl) in result.stderr and "input problems" in result.stderr


def test_no_rule_loaded_is_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "rules"
    broken.mkdir()
    (broken / "bad.yml").write_text("title: x\ndetection: [\n")
    result = run("-r", str(broken), str(EVENTS))
    assert result.exit_code == 2
    assert "no rule could be loaded" in result.stderr
    assert run("-r", str(tmp_path / "nope"), str(EVENTS)).exit_code == 2


@pytest.mark.parametrize(
    "args",
    [["--format", "xml"], ["--min-level", "severe"], ["--batch-size", "0"], ["--engine", "nope"], []],
    ids=["format", "level", "batch", "engine", "no-input"],
)
def test_usage_errors_are_exit_2(args: list[str]) -> None:
    inputs = [] if not args else [str(EVENTS)]
    result = CliRunner().invoke(cli, ["scan", "-r", str(RULES), *args, *inputs])
    assert result.exit_code == 2


def test_skipped_rules_summarised(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "broken.yml").write_text(
        "title: broken\nlogsource: {product: windows}\ndetection: {condition: nothing}\n"
    )
    result = run("-r", str(rules), "--no-event", "--profile", str(EVENTS))
    assert result.exit_code == 0
    assert pairs(jsonl(result.stdout)) == EXPECTED
    assert "rules check" in result.stderr
    assert "profile" in result.stderr and "engine" in result.stderr


def test_python_scan_api(tmp_path: Path) -> None:
    rules = sa.load_rules([RULES])
    stats = ScanStats()
    errors = ErrorLog()
    copy = tmp_path / "copy.jsonl.gz"
    import gzip

    copy.write_bytes(gzip.compress(EVENTS.read_bytes()))
    batches = list(sa.scan([str(EVENTS), str(copy)], rules, batch_size=4, stats=stats, errors=errors))
    records = [r for b in batches for r in b.to_pylist()]
    assert {(r["event_index"], r["rule_id"]) for r in records if r["source"] == str(copy)} == EXPECTED
    assert stats.events == 40 and stats.per_input == {str(EVENTS): 20, str(copy): 20}
    assert stats.matches == 2 * len(EXPECTED)
    assert sum(stats.by_level.values()) == stats.matches
    assert errors.total == 0 and not stats.skipped
    assert stats.as_dict()["events"] == 40
    # Stopping early is fine (the background reader is shut down).
    first = next(iter(sa.scan(str(EVENTS), rules, batch_size=2)))
    assert first.num_rows >= 1


def test_small_inputs_are_evaluated_together(tmp_path: Path) -> None:
    lines = EVENTS.read_bytes().splitlines(keepends=True)
    for i, line in enumerate(lines):
        (tmp_path / f"e{i:02d}.jsonl").write_bytes(line)
    stats = ScanStats()
    records = [
        r for b in sa.scan([str(tmp_path)], sa.load_rules([RULES]), stats=stats) for r in b.to_pylist()
    ]
    assert stats.batches == 1  # 20 one-event files, one engine call
    expected = {(str(tmp_path / f"e{i:02d}.jsonl"), 0, rule) for i, rule in EXPECTED}
    assert {(r["source"], r["event_index"], r["rule_id"]) for r in records} == expected
    assert [r["source"] for r in records] == sorted(r["source"] for r in records)  # input order kept
