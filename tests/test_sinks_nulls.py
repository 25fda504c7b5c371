"""Null values in match records: every sink writes them, CSV and the columnar sinks as JSON Lines does.

JSON Lines is the reference (its bytes are pinned by test_cencode.py): a record's null value is
``null`` there. CSV has no null, so a null value is an empty cell and a null tag an empty item of the
``;``-joined tags (``["a", null, "b"]`` is ``a;;b``); Parquet and Arrow keep nulls (``rule_id``,
non-nullable in the schema, gets ``""``). Each case is a match batch with nulls somewhere; each
output is read back and compared, row by row, with the JSON Lines records of the same batch.
Also: the loader never lets a null tag, title or level into a rule (pySigma rejects the rule).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import sigma_arrow as sa
from sigma_arrow.cli import cli
from sigma_arrow.loader import load_rules
from sigma_arrow.schema import MATCH_FIELDS, match_schema
from sigma_arrow.sinks import open_sink
from sigma_arrow.sinks import text as text_sinks

MATCH_NAMES = [f.name for f in MATCH_FIELDS]
FORMATS = ["jsonl", "json", "csv", "parquet", "arrow"]


def match_batch(rows: int = 3, event: pa.Array | bool | None = True, **columns: list[Any]) -> pa.RecordBatch:
    """A match batch of ``rows`` rows; ``columns`` replace the default match field values.

    ``event``: True for a default event struct, None for none, else the struct array.
    """
    values: dict[str, list[Any]] = {
        "rule_id": [f"rule-{i}" for i in range(rows)],
        "rule_title": [f"Title {i}" for i in range(rows)],
        "rule_level": ["high"] * rows,
        "rule_tags": [["attack.execution", "attack.t1059"]] * rows,
        "source": ["C:\\logs\\a.evtx"] * rows,
        "event_index": list(range(rows)),
        "timestamp": ["2024-01-01T00:00:00Z"] * rows,
    }
    values.update(columns)
    arrays = [pa.array(values[f.name], f.type) for f in MATCH_FIELDS]
    if event is True:
        event = pa.array([{"Image": f"p{i}.exe", "CommandLine": None} for i in range(rows)])
    if event is None or isinstance(event, bool):
        return pa.RecordBatch.from_arrays(arrays, schema=match_schema(None))
    return pa.RecordBatch.from_arrays([*arrays, event], schema=match_schema(event.type))


NESTED = pa.struct(
    [
        ("Image", pa.string()),
        ("Hashes", pa.list_(pa.string())),
        ("Process", pa.struct([("Pid", pa.int64()), ("Name", pa.string())])),
        ("Port", pa.int32()),
        ("Score", pa.float64()),
        ("Elevated", pa.bool_()),
        ("When", pa.timestamp("us", tz="UTC")),
        ("Raw", pa.binary()),
    ]
)

CASES: list[tuple[str, pa.RecordBatch]] = [
    ("null tag between tags", match_batch(rule_tags=[["attack.execution", None, "attack.t1059"]] * 3)),
    ("null tags only", match_batch(rule_tags=[[None], [None, None], [None, "attack.t1059"]])),
    ("null and empty tag lists", match_batch(rule_tags=[None, [], ["attack.t1059"]])),
    ("null first and last tag", match_batch(rule_tags=[[None, "attack.t1"], ["attack.t1", None], [None]])),
    ("null title", match_batch(rule_title=[None, "", "Title"])),
    ("null level", match_batch(rule_level=[None, "low", None])),
    (
        "null title, level and tags",
        match_batch(rule_title=[None] * 3, rule_level=[None] * 3, rule_tags=[None] * 3),
    ),
    (
        "null source, index, timestamp",
        match_batch(
            source=[None, "a.evtx", None], event_index=[None, 1, None], timestamp=[None, None, "2024"]
        ),
    ),
    ("null rule_id", match_batch(rule_id=[None, "rule-1", None])),
    ("null event rows", match_batch(event=pa.array([None, {"Image": "a.exe"}, {}]))),
    ("event of null fields", match_batch(event=pa.array([{"Image": None, "User": None}] * 3))),
    (
        "event null fields, nested nulls",
        match_batch(
            event=pa.array(
                [
                    {"Image": None, "Hashes": [None, "MD5=1"], "Process": {"Pid": None, "Name": "x"}},
                    {"Image": "b.exe", "Hashes": None, "Process": None, "Port": 443, "Score": None},
                    {
                        "Hashes": [],
                        "Elevated": False,
                        "Score": 0.5,
                        "When": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
                        "Raw": b"\x00\xff",
                    },
                ],
                type=NESTED,
            )
        ),
    ),
    (
        "carriage returns, newlines, separators",
        match_batch(
            rule_title=["a\rb", "c\r\nd", "e\nf"],
            rule_tags=[["x\ry", None], ["a;b", "c,d"], ['q"r']],
            source=["\r", "s", None],
            event=pa.array([{"CommandLine": "a\rb"}, {"CommandLine": None}, {"CommandLine": "\r\n"}]),
        ),
    ),
    ("no event", match_batch(event=None, rule_tags=[[None], None, ["attack.t1", None]])),
    ("no rows", match_batch(rows=0, rule_tags=[])),
]

#: Cases where a null tag stood next to others: the CSV cell, written out (the rest is derived).
TAG_CELLS = [
    (["attack.execution", None, "attack.t1059"], "attack.execution;;attack.t1059"),
    ([None, "attack.t1"], ";attack.t1"),
    (["attack.t1", None], "attack.t1;"),
    ([None, None], ";"),
    ([None], ""),
    ([], ""),
    (None, ""),
]


# ---------------------------------------------------------------- reading outputs back


def jsonl_records(batches: list[pa.RecordBatch], path: Path) -> list[dict[str, Any]]:
    """The reference: what the JSON Lines sink writes for ``batches``, parsed."""
    sink = open_sink(str(path), "jsonl")
    for batch in batches:
        sink.write(batch)
    sink.close()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write(batches: list[pa.RecordBatch], path: Path, fmt: str, include_event: bool = True) -> None:
    sink = open_sink(str(path), fmt, include_event=include_event)
    for batch in batches:
        sink.write(batch)
    sink.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_columnar(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    with pa.OSFile(str(path), "rb") as source:
        return ipc.open_file(source).read_all().to_pylist()


def csv_text(name: str, value: Any) -> str:
    """What a CSV cell holds for a JSON Lines value (CSV has no null)."""
    if value is None:
        return ""
    if name == "rule_tags":
        return ";".join("" if tag is None else tag for tag in value)
    return str(value)


def expected_csv(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {name: csv_text(name, record[name]) for name in MATCH_NAMES}
    row["event"] = record.get("event")
    return row


def parsed_csv(row: dict[str, str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {name: row[name] for name in MATCH_NAMES}
    event = row.get("event", "")
    parsed["event"] = json.loads(event) if event else None
    return parsed


def expected_columnar(record: dict[str, Any]) -> dict[str, Any]:
    row = {name: record[name] for name in MATCH_NAMES}
    row["rule_id"] = row["rule_id"] or ""  # non-nullable in the schema
    row["event"] = record.get("event")
    return row


def parsed_columnar(row: dict[str, Any]) -> dict[str, Any]:
    parsed = dict(row)
    parsed["event"] = None if row.get("event") is None else json.loads(row["event"])
    return parsed


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("name", "batch"), CASES, ids=[name for name, _ in CASES])
def test_sink_writes_nulls_as_jsonl_does(
    tmp_path: Path, name: str, batch: pa.RecordBatch, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for encoder in ("native", "python"):  # both encoders (the event JSON column comes from them)
        monkeypatch.setenv(text_sinks.PURE_PYTHON_ENV, "1" if encoder == "python" else "0")
        # The batch, then a slice of it (Arrow offsets), then the batch again: one output.
        batches = [batch, batch.slice(1), batch]
        reference = jsonl_records(batches, tmp_path / f"{encoder}-reference.jsonl")
        assert len(reference) == 3 * batch.num_rows - min(1, batch.num_rows)
        path = tmp_path / f"{encoder}.{fmt}"
        write(batches, path, fmt, include_event="event" in batch.schema.names)
        if fmt == "jsonl":
            assert [json.loads(line) for line in path.read_text().splitlines()] == reference
        elif fmt == "json":
            assert json.loads(path.read_text()) == reference
        elif fmt == "csv":
            rows = read_csv(path)
            assert [parsed_csv(row) for row in rows] == [expected_csv(r) for r in reference]
            columns = MATCH_NAMES + (["event"] if "event" in batch.schema.names else [])
            assert (list(rows[0]) if rows else columns) == columns
        else:
            rows = read_columnar(path, fmt)
            assert [parsed_columnar(row) for row in rows] == [expected_columnar(r) for r in reference]


@pytest.mark.parametrize(("tags", "cell"), TAG_CELLS)
def test_csv_tag_cell(tmp_path: Path, tags: list[str | None] | None, cell: str) -> None:
    path = tmp_path / "tags.csv"
    write([match_batch(rows=1, rule_tags=[tags])], path, "csv")
    assert read_csv(path)[0]["rule_tags"] == cell


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_batches_with_and_without_event_in_one_output(tmp_path: Path, fmt: str) -> None:
    """A batch without ``event`` after one with it: its events are empty, like a null event."""
    batches = [match_batch(rows=2), match_batch(rows=2, event=None, rule_tags=[[None], None])]
    reference = jsonl_records(batches, tmp_path / "reference.jsonl")
    path = tmp_path / f"mixed.{fmt}"
    write(batches, path, fmt)
    if fmt == "csv":
        assert [parsed_csv(row) for row in read_csv(path)] == [expected_csv(r) for r in reference]
    else:
        rows = read_columnar(path, fmt)
        assert [parsed_columnar(row) for row in rows] == [expected_columnar(r) for r in reference]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_event_already_json_text_is_kept(tmp_path: Path, fmt: str) -> None:
    """Match records read back from Parquet (``event`` as JSON text) can be written again."""
    first = tmp_path / "first.parquet"
    write([match_batch(event=pa.array([{"Image": "a.exe", "User": None}, None, {}]))], first, "parquet")
    table = pq.read_table(first)
    events = table.column("event").to_pylist()
    path = tmp_path / f"again.{fmt}"
    write(table.to_batches(), path, fmt)
    if fmt == "csv":
        assert [row["event"] for row in read_csv(path)] == ["" if e is None else e for e in events]
    else:
        assert [row["event"] for row in read_columnar(path, fmt)] == events


# ---------------------------------------------------------------- end to end

RULE = """\
title: {title}
id: {rule_id}
status: test
level: high
{tags}
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        CommandLine|contains: whoami
    condition: selection
"""
EVENT = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "CommandLine": "cmd /c whoami"}


def write_rule(directory: Path, rule_id: str, tags: str, title: str = "Whoami") -> Path:
    path = directory / f"{rule_id}.yml"
    path.write_text(RULE.format(title=title, rule_id=rule_id, tags=tags), encoding="utf-8")
    return path


# Rule YAML -> what the loader makes of it: the tags, or the error naming why the rule is rejected.
LOADER_CASES = [
    ("tags:\n    - attack.execution\n    -\n    - attack.t1059", "tags must be a list of strings"),
    ("tags:\n    - attack.execution\n    - ~", "tags must be a list of strings"),
    ("tags: [attack.execution, null]", "tags must be a list of strings"),
    ('tags: [attack.execution, ""]', "namespace"),
    ("tags: ~", ()),
    ("tags: []", ()),
    ("tags: [attack.execution, attack.t1059]", ("attack.execution", "attack.t1059")),
]


@pytest.mark.parametrize(("tags", "expected"), LOADER_CASES)
def test_loader_never_keeps_a_null_tag(tmp_path: Path, tags: str, expected: tuple[str, ...] | str) -> None:
    path = write_rule(tmp_path, "11111111-2222-3333-4444-555555555555", tags)
    ruleset = load_rules([path], logsource_map="windows", cache=False)
    if isinstance(expected, str):
        assert not ruleset.rules
        assert len(ruleset.errors) == 1 and expected in str(ruleset.errors[0])
        assert str(path) in str(ruleset.errors[0])
    else:
        assert not ruleset.errors
        (rule,) = ruleset.rules
        assert rule.meta.tags == expected
        assert all(isinstance(value, str) for value in (rule.meta.title, rule.meta.level))


def test_cli_csv_with_a_rule_whose_tag_is_null(tmp_path: Path) -> None:
    """The rule with a null tag is reported and skipped; the others are written to the CSV."""
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, "11111111-0000-0000-0000-000000000001", "tags:\n    - attack.execution\n    -")
    write_rule(rules, "11111111-0000-0000-0000-000000000002", "tags: [attack.execution, attack.t1059]")
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(EVENT) + "\n", encoding="utf-8")
    out = tmp_path / "matches.csv"
    result = CliRunner().invoke(
        cli, ["scan", "-r", str(rules), str(events), "-o", str(out)], catch_exceptions=False
    )
    assert result.exit_code != 2, result.stderr
    assert "skipped rules: 1" in result.stderr
    rows = read_csv(out)
    assert [(row["rule_id"], row["rule_tags"]) for row in rows] == [
        ("11111111-0000-0000-0000-000000000002", "attack.execution;attack.t1059")
    ]


def test_scan_rules_with_null_metadata_to_every_sink(tmp_path: Path) -> None:
    """Rules built in Python (not by the loader) may hold a null tag, title or level: no sink fails."""
    path = write_rule(tmp_path, "11111111-2222-3333-4444-555555555555", "tags: [attack.execution]")
    ruleset = load_rules([path], cache=False)
    (rule,) = ruleset.rules
    nulls: Any = {"tags": ("attack.execution", None, "attack.t1059"), "title": None, "level": None}
    ruleset.rules[0] = dataclasses.replace(rule, meta=dataclasses.replace(rule.meta, **nulls))
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(EVENT) + "\n", encoding="utf-8")
    batches = list(sa.scan([str(events)], ruleset, workers=1))
    reference = jsonl_records(batches, tmp_path / "reference.jsonl")
    assert [r["rule_tags"] for r in reference] == [["attack.execution", None, "attack.t1059"]]
    for fmt in FORMATS:
        write(batches, tmp_path / f"matches.{fmt}", fmt)
    rows = read_csv(tmp_path / "matches.csv")
    assert [parsed_csv(row) for row in rows] == [expected_csv(r) for r in reference]
    assert rows[0]["rule_tags"] == "attack.execution;;attack.t1059"
    for fmt in ("parquet", "arrow"):
        rows_back = read_columnar(tmp_path / f"matches.{fmt}", fmt)
        assert [parsed_columnar(row) for row in rows_back] == [expected_columnar(r) for r in reference]
