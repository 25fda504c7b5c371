"""Flattening: EVTX lifting, generic dotted names, the text-form type policy, and fast path == slow path."""

from __future__ import annotations

import json
from typing import Any, cast

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.textform import text_of
from sigma_arrow import flatten as fl
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN


def evtx(system: dict[str, Any], **sections: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"}
    }
    event["System"] = system
    event.update(sections)
    return {"Event": event}


SYSTEM = {
    "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon", "Guid": "5770385F"}},
    "EventID": 1,
    "Level": 4,
    "TimeCreated": {"#attributes": {"SystemTime": "2024-01-01T00:00:00.000000Z"}},
    "EventRecordID": 77,
    "Correlation": None,
    "Execution": {"#attributes": {"ProcessID": 3544, "ThreadID": 4272}},
    "Channel": "Microsoft-Windows-Sysmon/Operational",
    "Computer": "host",
    "Security": {"#attributes": {"UserID": "S-1-5-18"}},
}

# (case name, record, expected subset of the flat event, names that must be absent)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    (
        "evtx system lifted",
        evtx(SYSTEM, EventData={"Image": "C:\\x.exe", "ProcessId": 42, "Signed": True}),
        {
            "EventID": "1",
            "Level": "4",
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Computer": "host",
            "Provider_Name": "Microsoft-Windows-Sysmon",
            "Provider_Guid": "5770385F",
            "SystemTime": "2024-01-01T00:00:00.000000Z",
            "ProcessID": "3544",
            "ThreadID": "4272",
            "UserID": "S-1-5-18",
            "EventRecordID": "77",
            "Image": "C:\\x.exe",
            "ProcessId": "42",
            "Signed": "true",
        },
        ("Event.System.EventID", "Correlation", "Provider", "Security"),
    ),
    (
        "eventid with qualifiers",
        evtx({**SYSTEM, "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7036}}, EventData=None),
        {"EventID": "7036", "Qualifiers": "16384"},
        ("Data",),
    ),
    (
        "unnamed data list joined",
        evtx(SYSTEM, EventData={"Data": {"#text": ["show advanced options", "0", "1"]}, "Binary": "61"}),
        {"Data": "show advanced options\n0\n1", "Binary": "61"},
        (),
    ),
    (
        "single unnamed data string",
        evtx(SYSTEM, EventData={"Data": "EngineVersion=2.0"}),
        {"Data": "EngineVersion=2.0"},
        (),
    ),
    (
        "xmltodict style named data",
        evtx(
            SYSTEM,
            EventData={
                "Data": [
                    {"#attributes": {"Name": "CommandLine"}, "#text": "a b"},
                    {"@Name": "Image", "#text": "c.exe"},
                ]
            },
        ),
        {"CommandLine": "a b", "Image": "c.exe"},
        ("Data",),
    ),
    (
        "eventdata attributes",
        evtx(SYSTEM, EventData={"#attributes": {"Name": "EVENT_X"}, "param1": "v"}),
        {"EventData_Name": "EVENT_X", "param1": "v"},
        (),
    ),
    (
        "userdata lifted, clash kept under its path",
        evtx(
            SYSTEM,
            UserData={
                "LogFileCleared": {
                    "#attributes": {"xmlns": "ns"},
                    "SubjectUserName": "u",
                    "Channel": "System",
                    "BackupPath": None,
                }
            },
        ),
        {
            "SubjectUserName": "u",
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "UserData.LogFileCleared.Channel": "System",
        },
        ("xmlns", "BackupPath"),  # null fields are left out (null in the batch either way)
    ),
    (
        "eventdata clash with system",
        evtx(SYSTEM, EventData={"Computer": "other", "Version": "2"}),
        {"Computer": "host", "EventData.Computer": "other", "Version": "2"},
        (),
    ),
    (
        "other sections keep a prefix",
        evtx(SYSTEM, RenderingInfo={"Message": "hello", "Level": "Information"}),
        {"RenderingInfo.Message": "hello", "RenderingInfo.Level": "Information", "Level": "4"},
        (),
    ),
    (
        "generic nested json dotted",
        {"process": {"command_line": "x y", "pid": 7, "parent": {"name": "bash"}}, "tags": ["a", "b"]},
        {
            "process.command_line": "x y",
            "process.pid": "7",
            "process.parent.name": "bash",
            "tags": '["a","b"]',
        },
        ("process",),
    ),
    (
        "scalars text form",
        {"i": 4688, "f": 1.5, "fi": 4688.0, "t": True, "n": None, "s": "", "big": 18446744073709551615},
        {
            "i": "4688",
            "f": "1.5",
            "fi": "4688",
            "t": "true",
            "s": "",
            "big": "18446744073709551615",
        },
        ("n",),
    ),
    (
        "already dotted keys and empty objects",
        {"a.b": "1", "c": {}, "d": []},
        {"a.b": "1", "c": "{}", "d": "[]"},
        (),
    ),
    (
        "a sibling of Event keeps its name",
        {**evtx(SYSTEM, EventData={"Image": "i"}), "collector": {"host": "h"}},
        {"Image": "i", "collector.host": "h", "EventID": "1"},
        (),
    ),
]


@pytest.mark.parametrize(("record", "expected", "absent"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_flatten_record(record: dict[str, Any], expected: dict[str, Any], absent: tuple[str, ...]) -> None:
    flat = fl.flatten_record(record)
    for name, value in expected.items():
        assert name in flat, name
        assert flat[name] == value, name
    for name in absent:
        assert name not in flat
    assert all(isinstance(v, str) for v in flat.values())


@pytest.mark.parametrize(("record", "expected", "absent"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ndjson_fast_path_matches_reference(
    record: dict[str, Any], expected: dict[str, Any], absent: Any
) -> None:
    batch = fl.ndjson_to_batch(orjson.dumps(record) + b"\n", source="s", first_index=5, errors=ErrorLog())
    row = batch.to_pylist()[0]
    assert row.pop(SOURCE_COLUMN) == "s"
    assert row.pop(INDEX_COLUMN) == 5
    assert row == fl.flatten_record(record)


def test_all_columns_are_strings_even_with_mixed_types() -> None:
    lines = b"\n".join(
        orjson.dumps(r)
        for r in [
            {"ProcessId": 1},
            {"ProcessId": "0x10"},
            {"ProcessId": True},
            {"ProcessId": [1, "a"]},
            {"ProcessId": None},
            {},
        ]
    )
    batch = fl.ndjson_to_batch(lines, source="s", first_index=0, errors=ErrorLog())
    assert batch.schema.field("ProcessId").type == pa.string()
    assert batch.column("ProcessId").to_pylist() == ["1", "0x10", "true", '[1,"a"]', None, None]
    assert batch.column(INDEX_COLUMN).to_pylist() == list(range(6))


def test_malformed_lines_reported_and_skipped() -> None:
    data = b'{"a": 1}\n{"a": \n\n[1, 2]\n{"a": 3}\nnot json\n'
    errors = ErrorLog()
    batch = fl.ndjson_to_batch(data, source="f.jsonl", first_index=10, errors=errors, base_offset=100)
    assert batch.column("a").to_pylist() == ["1", "3"]
    # Blank lines are not records; malformed ones keep their index, so later indices do not shift.
    assert batch.column(INDEX_COLUMN).to_pylist() == [10, 13]
    assert errors.counts["json"] == 3
    bad = [b'{"a": \n', b"[1, 2]", b"not json"]
    assert [(p.source, p.offset) for p in errors.examples] == [("f.jsonl", 100 + data.index(b)) for b in bad]
    assert "record 11" in errors.examples[0].message


def test_malformed_line_offsets_default_to_record_index() -> None:
    errors = ErrorLog()
    fl.ndjson_to_batch(b'{"a":1}\n{oops\n', source="k", first_index=0, errors=errors)
    assert [p.offset for p in errors.examples] == [1]


def _rows(n_kinds: int, n: int) -> list[dict[str, str | None]]:
    rows: list[dict[str, str | None]] = []
    for i in range(n):
        kind = i % n_kinds
        row: dict[str, str | None] = {
            "EventID": str(kind),
            f"only{kind}": f"v{i}",
            "shared": None if i % 3 else "x",
        }
        if i % 5 == 0:
            row["rare"] = "é" * (i % 4)
        rows.append(row)
    return rows


@pytest.mark.parametrize(("n_kinds", "n"), [(1, 1), (1, 50), (3, 50), (40, 400), (200, 1000)])
def test_column_building_strategies_agree(n_kinds: int, n: int) -> None:
    rows = _rows(n_kinds, n)
    names, arrays = fl._rows_to_columns(rows)
    assert names == list(dict.fromkeys(k for r in rows for k in r))
    for name, array in zip(names, arrays, strict=True):
        array.validate(full=True)
        assert array.to_pylist() == [r.get(name) for r in rows], name


def test_empty_input_gives_reserved_columns_only() -> None:
    batch = fl.ndjson_to_batch(b"\n \n", source="s", first_index=0, errors=ErrorLog())
    assert batch.num_rows == 0
    assert batch.schema.names == [SOURCE_COLUMN, INDEX_COLUMN]


def test_records_to_batch_with_explicit_indices() -> None:
    batch = fl.records_to_batch([{"a": 1}, {"b": 2}], source="t:0", first_index=[7, 9])
    assert batch.column(INDEX_COLUMN).to_pylist() == [7, 9]
    assert batch.column(SOURCE_COLUMN).to_pylist() == ["t:0", "t:0"]
    with pytest.raises(ValueError):
        fl.records_to_batch([{"a": 1}], source="s", first_index=[1, 2])


def test_reserved_names_in_events_do_not_clash() -> None:
    batch = fl.records_to_batch(
        [{"__source": "forged", "__event_index": 99, "a": 1}], source="real", first_index=0
    )
    assert batch.column(SOURCE_COLUMN).to_pylist() == ["real"]
    assert batch.column(INDEX_COLUMN).to_pylist() == [0]


def test_flatten_table_struct_columns_and_evtx_names() -> None:
    records = [evtx(SYSTEM, EventData={"Image": "a.exe", "ProcessId": 5})]
    table = pa.Table.from_pylist(json.loads(json.dumps(records)))
    flat = fl.flatten_table(table)
    assert isinstance(flat, pa.Table)
    row = flat.to_pylist()[0]
    assert row["EventID"] == 1  # Arrow inputs keep their own types
    assert row["Image"] == "a.exe"
    assert row["Provider_Name"] == "Microsoft-Windows-Sysmon"
    assert row["SystemTime"] == "2024-01-01T00:00:00.000000Z"
    generic = fl.flatten_table(pa.RecordBatch.from_pylist([{"process": {"pid": 3, "name": "x"}, "n": 1}]))
    assert isinstance(generic, pa.RecordBatch)
    assert generic.schema.names == ["process.pid", "process.name", "n"]
    plain = pa.table({"a": [1]})
    assert fl.flatten_table(plain) is plain


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
events = st.dictionaries(st.sampled_from(["a", "b", "c", "Event", "x.y"]), json_values, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(events, min_size=1, max_size=12))
def test_property_batch_equals_per_record_flattening(records: list[dict[str, Any]]) -> None:
    data = b"\n".join(orjson.dumps(r) for r in records)
    batch = fl.ndjson_to_batch(data, source="p", first_index=0, errors=ErrorLog())
    rows = batch.to_pylist()
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        expected = fl.flatten_record(record)
        got = {k: v for k, v in row.items() if k not in (SOURCE_COLUMN, INDEX_COLUMN)}
        assert {k: v for k, v in got.items() if v is not None} == {
            k: v for k, v in expected.items() if v is not None
        }


@settings(max_examples=100, deadline=None)
@given(json_scalars)
def test_scalar_text_form_is_the_ir_text_form(value: Any) -> None:
    flat = fl.flatten_record({"v": value})
    assert flat.get("v") == text_of(value)


@pytest.mark.parametrize(
    "parts",
    [
        [[{"a": "1"}], [{"b": "2"}, {"a": "3", "b": "4"}], [{"c": "5"}]],
        [[{"a": "1"}, {"a": None}], [{"a": "2"}]],
        [[{"a": "x" * 100}] * 3, [{}], [{"b": "é"}] * 2],
    ],
)
def test_merge_batches_string_fast_path(parts: list[list[dict[str, Any]]]) -> None:
    batches = [fl.records_to_batch(p, source=f"s{i}", first_index=0) for i, p in enumerate(parts)]
    merged = fl.merge_batches(batches)
    merged.validate(full=True)
    expected = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default")
    assert merged.to_pylist() == expected.select(merged.schema.names).to_pylist()


def test_merge_batches_typed_columns() -> None:
    first = pa.RecordBatch.from_pydict({"n": pa.array([1], pa.int64()), "s": ["a"]})
    second = pa.RecordBatch.from_pydict({"s": ["b"], "t": pa.array([True])})
    assert fl.merge_batches([first, second]).to_pylist() == [
        {"n": 1, "s": "a", "t": None},
        {"n": None, "s": "b", "t": True},
    ]
    clash = pa.RecordBatch.from_pydict({"n": pa.array([[1]])})
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        fl.merge_batches([first, clash])


# ---------------------------------------------------------------- fast path == slow path (exact)


def _slow_columns(records: list[dict[str, Any]]) -> dict[str, list[str | None]]:
    """The reference: ``flatten_record`` per record, columns built row by row (names in order)."""
    names, arrays = fl._rows_to_columns_grouped([fl.flatten_record(r) for r in records])
    return {name: array.to_pylist() for name, array in zip(names, arrays, strict=True)}


def _fast_columns(records: list[dict[str, Any]]) -> dict[str, list[str | None]]:
    lines = [orjson.dumps(r) for r in records]
    batch = fl.decode_lines(lines, source="s", indices=range(len(lines)), errors=ErrorLog())
    batch.validate(full=True)
    assert batch.column(INDEX_COLUMN).to_pylist() == list(range(len(records)))
    return {
        name: column.to_pylist()
        for name, column in zip(batch.schema.names, batch.columns, strict=True)
        if name not in (SOURCE_COLUMN, INDEX_COLUMN)
    }


def _at_least(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Repeat ``records`` to ``n`` rows or more, so the bulk column builder (not the small-batch one) runs."""
    return records * (-(-n // len(records)))


flat_events = st.dictionaries(
    st.sampled_from(["EventID", "Image", "ProcessId", "x.y", "__source", "n"]),
    json_scalars | st.lists(json_scalars, max_size=2),
    max_size=5,
)


@pytest.mark.parametrize("size", [1, 3000])
@settings(max_examples=25, deadline=None)
@given(records=st.lists(events | flat_events, min_size=1, max_size=12))
def test_fast_path_equals_slow_path_exactly(records: list[dict[str, Any]], size: int) -> None:
    records = _at_least(records, size)
    fast = _fast_columns(records)
    slow = _slow_columns(records)
    assert list(fast) == list(slow)  # same columns in the same order
    assert fast == slow


@pytest.mark.parametrize("size", [1, 3000])
def test_fast_path_handles_the_value_kinds(size: int) -> None:
    records = _at_least(
        [
            {"EventID": 4688, "Image": "a.exe", "f": 1.5, "g": 2.0, "b": True, "l": [1, "x"]},
            {"EventID": "4688", "n": None, "nested": {"a": {"b": 1}}, "a.b": "dup"},
            {"__source": "forged", "__event_index": 9, "Image": "b.exe"},
            {},
            evtx(SYSTEM, EventData={"Image": "c.exe", "ProcessId": 5}),
        ],
        size,
    )
    assert _fast_columns(records) == _slow_columns(records)


@pytest.mark.shared
def test_fast_path_equals_slow_path_on_evtx_samples(evtx_samples: Any) -> None:
    import evtx as evtx_parser

    records = [
        orjson.loads(cast(dict[str, Any], r)["data"])
        for path in sorted(evtx_samples.rglob("*.evtx"))[:60]
        for r in evtx_parser.PyEvtxParser(str(path)).records_json()
    ]
    flat = [fl.flatten_record(r) for r in records]
    mixed = records + flat  # nested EVTX JSON and the same events already flat, in one batch
    assert len(mixed) >= fl._SMALL_BATCH
    assert _fast_columns(mixed) == _slow_columns(mixed)
    assert _fast_columns(flat) == _slow_columns(flat)
