"""SparseBatch: the same rows and values as the RecordBatch it came from, and the same engine answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma_arrow.engine import Engine
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.flatten import merge_batches, rows_to_batch
from sigma_arrow.loader import load_rules
from sigma_arrow.workers import coalesce

ROOT = Path(__file__).resolve().parents[1]

texts = st.one_of(st.none(), st.sampled_from(["", "a", "cmd.exe", "Ünïcode", "x\x01y"]), st.text(max_size=6))
rows_strategy = st.lists(
    st.dictionaries(st.sampled_from(["A", "B", "C", "D"]), texts, max_size=4), min_size=1, max_size=40
)


def batch_of(rows: list[dict[str, str | None]], first: int = 0) -> pa.RecordBatch:
    return rows_to_batch(rows, source="t", indices=first)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, data=st.data())
def test_round_trip_slice_and_dense_rows(rows: list[dict[str, str | None]], data: st.DataObject) -> None:
    batch = batch_of(rows)
    sparse = SparseBatch.from_batch(batch)
    assert sparse.to_batch().equals(batch)
    for name in batch.schema.names:
        assert sparse.column(name).equals(batch.column(name))
        assert sparse.null_count(name) == batch.column(name).null_count
    start = data.draw(st.integers(0, len(rows)))
    length = data.draw(st.integers(0, len(rows)))
    assert sparse.slice(start, length).to_batch().equals(batch.slice(start, length))
    wanted = np.array(data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=20)), dtype=np.int64)
    dense, places = sparse.dense_rows(wanted)
    assert dense.take(pa.array(places, type=pa.int64())).equals(batch.take(pa.array(wanted, type=pa.int64())))


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(rows_strategy, min_size=1, max_size=4))
def test_concat_equals_merge(parts: list[list[dict[str, str | None]]]) -> None:
    batches = []
    first = 0
    for rows in parts:
        batches.append(batch_of(rows, first))
        first += len(rows)
    merged = merge_batches(batches)
    for consume in (False, True):
        joined = SparseBatch.concat([SparseBatch.from_batch(b) for b in batches], consume=consume)
        assert joined.num_rows == merged.num_rows
        for name in merged.schema.names:
            assert joined.column(name).equals(merged.column(name)), name


def test_concat_refuses_a_type_clash() -> None:
    left = pa.RecordBatch.from_pydict({"A": ["x"], "__event_index": [0]})
    right = pa.RecordBatch.from_pydict({"A": [1], "__event_index": [1]})
    with pytest.raises(pa.ArrowTypeError):
        SparseBatch.concat([SparseBatch.from_batch(left), SparseBatch.from_batch(right)])
    # coalesce keeps them as they are instead
    out = list(coalesce([left, right], rows=100, sparse=True))
    assert [b.num_rows for b in out] == [1, 1]


def test_concat_gives_an_all_null_column_the_other_type() -> None:
    nulls = pa.RecordBatch.from_pydict({"A": pa.nulls(2), "__event_index": [0, 1]})
    texts = pa.RecordBatch.from_pydict({"A": ["x", None], "__event_index": [2, 3]})
    for parts in ([nulls, texts], [texts, nulls]):
        joined = SparseBatch.concat([SparseBatch.from_batch(b) for b in parts])
        assert joined.schema.field("A").type == pa.string()
        assert joined.column("A").to_pylist() == merge_batches(parts).column("A").to_pylist()


def test_coalesce_makes_big_sparse_batches() -> None:
    batches = [batch_of([{"A": "x"}, {"B": "y"}, {}], first=3 * i) for i in range(10)]
    out = list(coalesce(batches, rows=12, sparse=True))
    assert [b.num_rows for b in out] == [12, 12, 6]
    assert all(isinstance(b, SparseBatch) for b in out)
    assert out[1].column("__event_index").to_pylist() == list(range(12, 24))


ENGINE_ROWS = [
    {"Channel": "Security", "EventID": "4688", "CommandLine": "mimikatz.exe sekurlsa::logonpasswords"},
    {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": "1", "Image": r"C:\Windows\cmd.exe"},
    {"Channel": "System", "EventID": "7045", "ImagePath": "cmd /c whoami", "ServiceName": "x"},
    {"Channel": "Security", "EventID": "4624", "LogonType": "3"},
    {},
    {"Channel": "Windows PowerShell", "EventID": "400", "Data": "HostApplication=powershell -enc AAAA"},
]


def check_engine(engine: Engine, batch: pa.RecordBatch) -> None:
    sparse = SparseBatch.from_batch(batch)
    dense_rows = engine.match_rows(batch)
    sparse_rows = engine.match_rows(sparse)
    assert [list(r) for r in sparse_rows] == [list(r) for r in dense_rows]
    assert engine.matches(sparse).equals(engine.matches(batch))


def test_engine_answers_the_same_with_our_rules() -> None:
    engine = Engine(load_rules([ROOT / "rules"]))
    check_engine(engine, batch_of(ENGINE_ROWS * 50))  # type: ignore[arg-type]


@pytest.mark.shared
@pytest.mark.slow
def test_engine_answers_the_same_with_the_corpus(sigma_rule_dirs: list[Path], evtx_samples: Path) -> None:
    import orjson
    from evtx import PyEvtxParser

    from sigma_arrow.flatten import flatten_record

    engine = Engine(load_rules(sigma_rule_dirs))
    rows = [
        flatten_record(orjson.loads(record["data"]))
        for path in sorted(evtx_samples.rglob("*.evtx"))
        for record in PyEvtxParser(str(path)).records_json()
    ]
    check_engine(engine, batch_of(rows))  # type: ignore[arg-type]
    # a few rows only: narrow routes, most columns unset
    check_engine(engine, batch_of(rows[::997]))  # type: ignore[arg-type]


NARROW_KEYWORD_RULE = """
title: Keyword on a narrow route
id: 5c0b7a52-1d2e-4f4b-9a51-0c1d2e3f4a5b
status: test
logsource:
    product: windows
    service: system
detection:
    keywords:
        - 'evilservice'
        - 'dropper.exe'
    condition: keywords
level: high
"""


def test_keyword_rule_on_a_narrow_route(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(NARROW_KEYWORD_RULE, encoding="utf-8")
    engine = Engine(load_rules([tmp_path]))
    rows: list[dict[str, str | None]] = []
    for i in range(400):
        if i % 37 == 5:  # ~3 % of rows: the narrow route
            rows.append({"Channel": "System", "EventID": "7045", f"F{i % 3}": f"x EvilService {i}"})
        elif i % 37 == 9:
            rows.append({"Channel": "System", "EventID": "7036", "ImagePath": "C:\\dropper.exe"})
        elif i % 37 == 11:
            rows.append({"Channel": "System", "EventID": "7036", "ImagePath": "C:\\benign.exe"})
        else:  # the keyword outside the route never matches
            rows.append({"Channel": "Security", "EventID": "4688", f"F{i % 3}": "evilservice dropper.exe"})
    batch = batch_of(rows)
    check_engine(engine, batch)
    matched = engine.match_rows(SparseBatch.from_batch(batch))[0].tolist()
    assert matched == [i for i in range(400) if i % 37 in (5, 9)]
