"""Sinks: every output format round-trips match records; event structs that differ per batch stay valid."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from compiler.errors import InputError
from sigma_arrow.schema import MATCH_FIELDS, match_schema
from sigma_arrow.sinks import format_for_path, open_sink


def match_batch(
    events: list[dict[str, Any] | None], first: int = 0, with_event: bool = True
) -> pa.RecordBatch:
    n = len(events)
    arrays: list[pa.Array] = [
        pa.array([f"id-{i % 2}" for i in range(n)], pa.string()),
        pa.array([f"Rule {i % 2}" for i in range(n)], pa.string()),
        pa.array(["high", "low"][:n] + ["medium"] * max(0, n - 2), pa.string()),
        pa.array([["attack.t1", "attack.execution"]] * n, pa.list_(pa.string())),
        pa.array(["f.evtx"] * n, pa.string()),
        pa.array(range(first, first + n), pa.int64()),
        pa.array(["2024-01-01T00:00:00Z"] * n, pa.string()),
    ]
    event_type = None
    if with_event:
        event = pa.array(events)
        arrays.append(event)
        event_type = event.type
    return pa.RecordBatch.from_arrays(arrays, schema=match_schema(event_type))


BATCHES = [
    match_batch([{"Image": "a.exe", "CommandLine": None}, {"Image": "b.exe", "CommandLine": "b -x"}]),
    match_batch([{"DestinationIp": "1.2.3.4", "Port": 443}], first=7),  # a different event struct
    match_batch([], first=9),
]
EXPECTED_EVENTS = [
    {"Image": "a.exe"},
    {"Image": "b.exe", "CommandLine": "b -x"},
    {"DestinationIp": "1.2.3.4", "Port": 443},
]
MATCH_NAMES = [f.name for f in MATCH_FIELDS]


def read_back(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if fmt == "json":
        return list(json.loads(path.read_text()))
    if fmt == "csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows:
            row["rule_tags"] = row["rule_tags"].split(";") if row["rule_tags"] else []
            row["event_index"] = int(row["event_index"])
            if "event" in row:
                row["event"] = json.loads(row["event"])
        return rows
    if fmt == "parquet":
        table = pq.read_table(path)
    else:
        with pa.OSFile(str(path), "rb") as source:
            table = (
                ipc.open_file(source).read_all()
                if path.suffix == ".arrow"
                else ipc.open_stream(source).read_all()
            )
    rows = table.to_pylist()
    for row in rows:
        if row.get("event") is not None:
            row["event"] = json.loads(row["event"])
    return rows


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("m.jsonl", "jsonl"),
        ("m.json", "json"),
        ("m.csv", "csv"),
        ("m.parquet", "parquet"),
        ("m.arrow", "arrow"),
        ("m.arrows", "arrow"),
    ],
)
def test_round_trip(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / "out" / name
    assert format_for_path(str(path)) == fmt
    sink = open_sink(str(path))
    for batch in BATCHES:
        sink.write(batch)
    sink.close()
    rows = read_back(path, fmt)
    assert [r["event"] for r in rows] == EXPECTED_EVENTS
    assert [r["event_index"] for r in rows] == [0, 1, 7]
    assert rows[0]["rule_tags"] == ["attack.t1", "attack.execution"]
    assert list(rows[0])[: len(MATCH_NAMES)] == MATCH_NAMES


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "arrow"])
@pytest.mark.parametrize("include_event", [True, False])
def test_empty_output_is_valid(tmp_path: Path, fmt: str, include_event: bool) -> None:
    path = tmp_path / f"empty.{fmt}"
    sink = open_sink(str(path), fmt, include_event=include_event)
    sink.close()
    assert read_back(path, fmt) == []
    if fmt == "parquet":
        assert ("event" in pq.read_schema(path).names) == include_event


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_without_event(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"m.{fmt}"
    sink = open_sink(str(path), fmt, include_event=False)
    sink.write(match_batch([{}, {}], with_event=False))
    sink.close()
    rows = read_back(path, fmt)
    assert len(rows) == 2
    assert all("event" not in r for r in rows)


def test_stdout_default_is_jsonl(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    sink = open_sink(None)
    sink.write(BATCHES[1])
    sink.close()
    out = capsysbinary.readouterr().out.decode()
    assert json.loads(out)["event"] == {"DestinationIp": "1.2.3.4", "Port": 443}


def test_columnar_needs_a_file_and_known_format() -> None:
    with pytest.raises(InputError):
        open_sink(None, "parquet")
    with pytest.raises(InputError):
        open_sink("x.out", "xml")
