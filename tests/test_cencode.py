"""The native JSON Lines encoder (sigma_arrow._cencode) against the Python path: the same bytes.

Every comparison encodes one match batch three ways: ``encode_jsonl`` (native when built),
``encode_jsonl_python`` (what ``SIGMA_ARROW_PURE_PYTHON_ENCODE=1`` selects) and the plain definition
(``dumps`` of each ``records`` row, the event without its null fields), and requires equal bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_arrow import workers
from sigma_arrow.engine import Engine
from sigma_arrow.engine.core import event_struct
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.kafka.output import MatchSet
from sigma_arrow.loader import load_rules
from sigma_arrow.ruleset import RuleSet
from sigma_arrow.scanning import scan_chunks
from sigma_arrow.schema import INDEX_COLUMN, MATCH_FIELDS, SOURCE_COLUMN, match_schema
from sigma_arrow.sinks import text
from sigma_arrow.sinks.base import compact_event, dumps, event_json_column, records

native = pytest.mark.skipif(text._cencode is None, reason="sigma_arrow._cencode is not built")


def definition(batch: pa.RecordBatch) -> bytes:
    """What a JSON Lines match record is: one ``dumps`` per ``records`` row."""
    return b"".join(dumps(row) + b"\n" for row in records(batch))


def written(encode: Callable[[int], int]) -> bytes:
    """What an encoder given a file descriptor writes there (it must return that many bytes)."""
    with tempfile.TemporaryFile() as handle:
        count = encode(handle.fileno())
        handle.seek(0)
        data = handle.read()
    assert count == len(data)
    return data


def assert_same_bytes(batch: pa.RecordBatch) -> bytes:
    expected = definition(batch)
    assert text.encode_jsonl_python(batch) == expected
    assert text.encode_jsonl(batch) == expected
    assert written(lambda fd: text.encode_jsonl(batch, fd=fd)) == expected
    if text._cencode is not None:
        fields = text.native_fields(batch)
        assert fields is not None, "the native encoder should take this batch"
        assert text._cencode.encode(batch.num_rows, fields, False) == expected
    return expected


def match_batch(events: pa.Array | None, rows: int | None = None) -> pa.RecordBatch:
    """A match record batch around ``events`` (a struct array), or without ``event``."""
    count = len(events) if events is not None else (rows or 0)
    ids = [f"rule-{i % 3}" for i in range(count)]
    arrays: list[pa.Array] = [
        pa.array(ids, pa.string()),
        pa.array([f'Title "{i % 3}" \\ \u00e9' if i % 4 else None for i in range(count)], pa.string()),
        pa.array(["high" if i % 2 else "low" for i in range(count)], pa.string()),
        pa.array([["attack.t1", None, "a\nb"] if i % 3 else [] for i in range(count)], pa.list_(pa.string())),
        pa.array(["C:\\logs\\x.evtx" if i % 5 else None for i in range(count)], pa.string()),
        pa.array([i * 1_000_003 if i % 7 else None for i in range(count)], pa.int64()),
        pa.array(["2024-01-01T00:00:00Z" if i % 2 else None for i in range(count)], pa.string()),
    ]
    if events is None:
        return pa.RecordBatch.from_arrays(arrays, schema=match_schema(None))
    return pa.RecordBatch.from_arrays([*arrays, events], schema=match_schema(events.type))


# ---------------------------------------------------------------- fixed cases


NASTY = [
    "",
    "plain",
    'quote " and backslash \\ and slash /',
    "controls \x00\x01\x07\x08\t\n\x0b\x0c\r\x0e\x1b\x1f end",
    "del \x7f and non-ascii é ü ß 漢字 😀 \u2028 \u2029 \ufeff",
    "C:\\Windows\\System32\\cmd.exe /c \"echo\" 'x'",
    "\\u0041 is not unescaped",
]

CASES: list[tuple[str, pa.Array]] = [
    ("strings", pa.array([{"a": s, "b": None, "c": s[::-1]} for s in NASTY])),
    ("all null field", pa.array([{"a": None, "b": "x"}, {"a": None, "b": None}])),
    ("empty struct", pa.array([{}, {}, {}], type=pa.struct([]))),
    (
        "ints and bools",
        pa.array(
            [{"i": -(2**63), "u": 2**64 - 1, "b": True}, {"i": 2**63 - 1, "u": 0, "b": False}, {"i": None}],
            type=pa.struct([("i", pa.int64()), ("u", pa.uint64()), ("b", pa.bool_())]),
        ),
    ),
    (
        "small ints",
        pa.array(
            [{"a": -128, "b": 65535}, {"a": None, "b": 7}],
            type=pa.struct([("a", pa.int8()), ("b", pa.uint16())]),
        ),
    ),
    (
        "floats",
        pa.array(
            [{"f": 0.1}, {"f": 1e300}, {"f": float("nan")}, {"f": float("inf")}, {"f": -0.0}, {"f": 3.0}, {}],
            type=pa.struct([("f", pa.float64())]),
        ),
    ),
    (
        "nested values",
        pa.array(
            [
                {"l": [1, None, 3], "s": {"x": "y", "z": None}, "ls": ["a", None]},
                {"l": [], "s": None, "ls": None},
                {"l": None, "s": {"x": None, "z": 2}, "ls": []},
            ],
            type=pa.struct(
                [
                    ("l", pa.list_(pa.int64())),
                    ("s", pa.struct([("x", pa.string()), ("z", pa.int64())])),
                    ("ls", pa.list_(pa.string())),
                ]
            ),
        ),
    ),
    (
        "other types",
        pa.array(
            [
                {
                    "t": dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
                    "d": Decimal("1.50"),
                    "bin": b"\x00ab\xff",
                    "ls": "large",
                    "day": dt.date(2024, 1, 2),
                },
                {"t": None, "d": None, "bin": None, "ls": None, "day": None},
            ],
            type=pa.struct(
                [
                    ("t", pa.timestamp("us")),
                    ("d", pa.decimal128(5, 2)),
                    ("bin", pa.binary()),
                    ("ls", pa.large_string()),
                    ("day", pa.date32()),
                ]
            ),
        ),
    ),
    (
        "dictionary and view",
        pa.StructArray.from_arrays(
            [
                pa.array(["x", None, "x", "y\n"]).dictionary_encode(),
                pa.array(["v", "w\\", None, "long string value beyond twelve bytes"], pa.string_view()),
                pa.nulls(4, pa.null()),
            ],
            names=["dict", "view", "nothing"],
        ),
    ),
    (
        "null events",
        pa.StructArray.from_arrays(
            [pa.array(["a", "b", None]), pa.array([1, None, 3])],
            names=["s", "n"],
            mask=pa.array([False, True, False]),
        ),
    ),
    ("odd names", pa.array([{'q"uote': "1", "back\\slash": "2", "ctl\x01": "3", "": "4", "é": "5"}])),
]


@native
@pytest.mark.parametrize(("name", "events"), CASES, ids=[name for name, _ in CASES])
def test_fixed_cases(name: str, events: pa.Array) -> None:
    assert_same_bytes(match_batch(events))


@native
@pytest.mark.parametrize(("name", "events"), CASES, ids=[name for name, _ in CASES])
def test_sliced_batches(name: str, events: pa.Array) -> None:
    """Arrays with an offset (a sliced batch) read the right rows."""
    batch = match_batch(events)
    for start in range(batch.num_rows):
        assert_same_bytes(batch.slice(start, 2))


@native
@pytest.mark.parametrize("rows", [0, 1, 5])
def test_without_event(rows: int) -> None:
    assert_same_bytes(match_batch(None, rows))


@native
def test_empty_batch() -> None:
    events = pa.array([], type=pa.struct([("a", pa.string())]))
    assert assert_same_bytes(match_batch(events)) == b""


@native
@pytest.mark.parametrize(
    "batch",
    [
        # duplicate names: a dict keeps one of them (left to the Python path)
        pa.RecordBatch.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["x", "x"]),
        pa.RecordBatch.from_arrays(
            [pa.StructArray.from_arrays([pa.array(["a"]), pa.array([None], pa.string())], names=["k", "k"])],
            names=["event"],
        ),
    ],
    ids=["top-level", "event"],
)
def test_layouts_left_to_python(batch: pa.RecordBatch) -> None:
    assert text.native_fields(batch) is None
    assert text.encode_jsonl(batch) == text.encode_jsonl_python(batch)


@native
@pytest.mark.parametrize("env", ["1", "0", ""])
def test_switch(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(text.PURE_PYTHON_ENV, env)
    assert text.native_encode_enabled() == (env != "1")
    assert_same_bytes(match_batch(CASES[0][1]))


@native
def test_sink_writes_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = match_batch(CASES[0][1])
    outputs = []
    for env in ("1", "0"):
        monkeypatch.setenv(text.PURE_PYTHON_ENV, env)
        path = tmp_path / f"out-{env}.jsonl"
        sink = text.JsonLinesSink(str(path))
        sink.write(batch)
        sink.write(batch.slice(1, 3))
        sink.close()
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1] == definition(batch) + definition(batch.slice(1, 3))


@native
@pytest.mark.parametrize(("name", "events"), CASES, ids=[name for name, _ in CASES])
def test_event_json_column(name: str, events: pa.Array, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSV/Parquet/Arrow sinks' ``event`` text column: the same strings native or not."""
    batch = match_batch(events)
    for sliced in (batch, batch.slice(1)):
        columns = []
        for env in ("1", "0"):
            monkeypatch.setenv(text.PURE_PYTHON_ENV, env)
            columns.append(event_json_column(sliced))
        assert columns[0].equals(columns[1])
        expected = [
            None if e is None else dumps(compact_event(e)).decode() for e in sliced["event"].to_pylist()
        ]
        assert columns[1].to_pylist() == expected


@native
def test_json_array_sink_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON array sink (which writes the JSON Lines as its items) writes what it always wrote."""
    batches = [match_batch(events) for _, events in CASES[:3]]
    outputs = []
    for env in ("1", "0"):
        monkeypatch.setenv(text.PURE_PYTHON_ENV, env)
        path = tmp_path / f"out-{env}.json"
        sink = text.JsonArraySink(str(path))
        for batch in batches:
            sink.write(batch)
            sink.write(batch.slice(0, 0))
        sink.close()
        outputs.append(path.read_bytes())
    items = [row for batch in batches for row in records(batch)]
    assert outputs[0] == outputs[1] == b"[" + b",".join(b"\n" + dumps(row) for row in items) + b"\n]\n"


@native
def test_threads_encode_at_once() -> None:
    """The encoder releases the GIL while it writes: calls from several threads stay independent."""
    batches = [match_batch(events) for _, events in CASES] * 4
    expected = [definition(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(text.encode_jsonl, batches)) == expected


BAD_OFFSETS = [
    ("offsets past the data", [0, 5], b"abc"),
    ("decreasing offsets", [3, 1], b"abc"),
    ("negative offset", [-1, 2], b"abc"),
]


@native
@pytest.mark.parametrize(("name", "offsets", "data"), BAD_OFFSETS, ids=[c[0] for c in BAD_OFFSETS])
def test_malformed_buffers_raise(name: str, offsets: list[int], data: bytes) -> None:
    offsets_buffer = pa.array(offsets, pa.int32()).buffers()[1]
    with pytest.raises(ValueError, match="out of bounds"):
        text._cencode.encode(1, [(b'"a":', 0, 0, None, offsets_buffer, data, None)], False)
    with pytest.raises(ValueError, match="malformed"):  # too few offsets for the rows
        text._cencode.encode(5, [(b'"a":', 0, 0, None, offsets_buffer, data, None)], False)


def raw_buffer(draw: st.DrawFn, width: int) -> bytes | None:
    values = draw(st.one_of(st.none(), st.lists(st.integers(-3, 40), max_size=10)))
    if values is None:
        return None
    return b"".join(v.to_bytes(width, "little", signed=True) for v in values)


@st.composite
def raw_fields(draw: st.DrawFn, depth: int = 0) -> tuple[bytes, int, int, Any, Any, Any, Any]:
    """Column descriptions with arbitrary buffers (valid or not)."""
    kind = draw(st.integers(0, 6 if depth == 0 else 5))
    width = 8 if kind in (1, 3) else 4
    validity = draw(st.one_of(st.none(), st.binary(max_size=3)))
    offsets = raw_buffer(draw, width)
    data = draw(st.binary(max_size=20))
    extra: Any = None
    if kind == 4:
        extra = (
            draw(st.integers(0, 3)),
            draw(st.one_of(st.none(), st.binary(max_size=2))),
            raw_buffer(draw, 4),
            data,
        )
    elif kind == 6:
        extra = draw(st.lists(raw_fields(depth + 1), max_size=3))
        if draw(st.booleans()):
            validity, offsets, data = None, raw_buffer(draw, 8), draw(st.integers(0, 12))
    elif kind in (0, 1, 2, 3) and draw(st.booleans()):
        extra = raw_buffer(draw, 8)  # sparse rows
    return (b'"k":', kind, draw(st.integers(0, 3)), validity, offsets, data, extra)


@native
@settings(max_examples=300, deadline=None)
@given(rows=st.integers(0, 12), fields=st.lists(raw_fields(), max_size=3), skip=st.booleans())
def test_arbitrary_buffers_never_crash(rows: int, fields: list[Any], skip: bool) -> None:
    """Whatever the buffers hold, the encoder returns bytes or raises ValueError (never reads past them)."""
    with contextlib.suppress(ValueError):
        text._cencode.encode(rows, fields, skip)


# ---------------------------------------------------------------- generated batches

TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "\x7f", "\u2028", "/"]),
    ),
    max_size=12,
)
SCALARS: dict[str, tuple[pa.DataType, Any]] = {
    "string": (pa.string(), TEXT),
    "large_string": (pa.large_string(), TEXT),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "float64": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "bool": (pa.bool_(), st.booleans()),
    "list<string>": (pa.list_(pa.string()), st.lists(st.one_of(st.none(), TEXT), max_size=3)),
    "list<int64>": (pa.list_(pa.int64()), st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=3)),
    "struct": (
        pa.struct([("x", pa.string()), ("y", pa.int64())]),
        st.fixed_dictionaries(
            {"x": st.one_of(st.none(), TEXT), "y": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))}
        ),
    ),
}


@st.composite
def event_arrays(draw: st.DrawFn) -> pa.Array:
    rows = draw(st.integers(0, 6))
    kinds = draw(st.lists(st.sampled_from(sorted(SCALARS)), max_size=6))
    children, names = [], []
    for position, kind in enumerate(kinds):
        arrow_type, values = SCALARS[kind]
        null_share = draw(st.sampled_from([0.0, 0.5, 1.0]))
        column = [None if draw(st.floats(0, 1)) < null_share else draw(values) for _ in range(rows)]
        children.append(pa.array(column, type=arrow_type))
        names.append(draw(st.one_of(TEXT, st.just(f"f{position}"))) + f"#{position}")
    mask = pa.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), pa.bool_())
    if not children:
        return pa.array([{}] * rows, type=pa.struct([]))
    with_nulls = draw(st.booleans())
    return pa.StructArray.from_arrays(children, names=names, mask=mask if with_nulls else None)


@native
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_arrays(), start=st.integers(0, 3))
def test_generated_batches(events: pa.Array, start: int) -> None:
    batch = match_batch(events)
    assert_same_bytes(batch)
    assert_same_bytes(batch.slice(min(start, batch.num_rows)))


@native
@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.one_of(st.none(), TEXT), max_size=8))
def test_generated_top_level_strings(values: list[str | None]) -> None:
    """Top-level nulls are written as null (only event fields are left out)."""
    fields = [pa.field(f.name, f.type) for f in MATCH_FIELDS]
    arrays = [
        pa.array(values, pa.string()) if f.type == pa.string() else pa.array([None] * len(values), f.type)
        for f in fields
    ]
    assert_same_bytes(pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)))


# ---------------------------------------------------------------- events encoded where they are


def assert_split_same(records: pa.RecordBatch, events: pa.RecordBatch, rows: list[int]) -> None:
    """``encode_jsonl_events`` == ``encode_jsonl`` of the records with the event struct built."""
    event = event_struct(events, pa.array(rows, type=pa.int64()))
    whole = records.append_column(pa.field("event", event.type), event)
    expected = text.encode_jsonl_python(whole)
    assert text.encode_jsonl_events(records, events, rows) == expected
    assert text.encode_jsonl(whole) == expected
    sparse = SparseBatch.from_batch(events)  # what the scan workers hand the engine
    assert text.encode_jsonl_events(records, sparse, rows) == expected
    assert written(lambda fd: text.encode_jsonl_events(records, sparse, rows, fd=fd)) == expected
    objects = [dumps(compact_event(e)) for e in event.to_pylist()]
    assert event_json_column(whole).to_pylist() == [o.decode() for o in objects]
    assert text.encode_event_objects(events, rows) == objects
    assert text.encode_event_objects(sparse, rows) == objects


@st.composite
def event_batches(draw: st.DrawFn) -> tuple[pa.RecordBatch, list[int]]:
    """An evaluated batch (with the reserved columns) and the sorted rows of its match records."""
    events = draw(event_arrays())
    count = len(events)
    columns = events.flatten() if events.type.num_fields else []
    names = [field.name for field in events.type]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["file"] * count), pa.array(range(count), pa.int64()), *columns],
        names=[SOURCE_COLUMN, INDEX_COLUMN, *names],
    )
    rows = sorted(draw(st.lists(st.integers(0, count - 1), max_size=10))) if count else []
    return batch, rows


@native
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=event_batches())
def test_generated_events_encoded_where_they_are(case: tuple[pa.RecordBatch, list[int]]) -> None:
    events, rows = case
    assert_split_same(match_batch(None, len(rows)), events, rows)


def kafka_payloads(events: pa.RecordBatch, rows: list[int], monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The Kafka job's message values for matches of ``rows``, native and Python (must agree)."""
    count = len(rows)
    records = pa.RecordBatch.from_arrays(
        [
            pa.array([f"rule-{i % 2}" for i in range(count)]),
            pa.array(["title"] * count),
            pa.array(["high"] * count),
            pa.array([["t"]] * count, pa.list_(pa.string())),
            pa.array(["topic:0"] * count),
            pa.array(range(count), pa.int64()),
            pa.array([None] * count, pa.string()),
        ],
        schema=match_schema(None),
    )
    matches = MatchSet(records, np.array(rows, dtype=np.int64), np.zeros(count, np.int64), events)
    outputs = []
    for env in ("1", "0"):
        monkeypatch.setenv(text.PURE_PYTHON_ENV, env)
        outputs.append(matches.payloads())
    assert outputs[0] == outputs[1]
    return outputs[1]


@native
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=event_batches())
def test_generated_kafka_payloads(
    case: tuple[pa.RecordBatch, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    events, rows = case
    assert len(kafka_payloads(events, rows, monkeypatch)) == len(rows)


@native
@pytest.mark.parametrize(("name", "events"), CASES, ids=[name for name, _ in CASES])
def test_fixed_events_encoded_where_they_are(name: str, events: pa.Array) -> None:
    columns = events.flatten() if events.type.num_fields else []
    # Arrow has no take kernel for string_view (the reference builds the struct by take)
    columns = [c.cast(pa.large_string()) if pa.types.is_string_view(c.type) else c for c in columns]
    batch = pa.RecordBatch.from_arrays(columns, names=[f.name for f in events.type]) if columns else None
    if batch is None:
        batch = pa.RecordBatch.from_arrays([pa.array(range(len(events)))], names=[INDEX_COLUMN])
    count = batch.num_rows
    for rows in ([], list(range(count)), [count - 1] * 3, [0, 0, count - 1, count - 1]):
        assert_split_same(match_batch(None, len(rows)), batch, rows)


@pytest.mark.parametrize("repeat", [1, 3])
def test_big_output_written_in_pieces(repeat: int) -> None:
    """Past the encoder's flush size, events repeated across a flush are written again, whole."""
    count = 3_000
    events = pa.RecordBatch.from_arrays(
        [
            pa.array([f"C:\\Windows\\{i}\\" + "x" * (3_000 + i % 97) for i in range(count)]),
            pa.array([f'cmd "{i}"\t' * 40 if i % 3 else None for i in range(count)]),
        ],
        names=["Image", "CommandLine"],
    )
    rows = [row for row in range(count) for _ in range(repeat)]
    records = match_batch(None, len(rows))
    expected = text.encode_jsonl_events(records, events, rows)
    assert len(expected) > 2 * (4 << 20)  # several flushes
    assert written(lambda fd: text.encode_jsonl_events(records, events, rows, fd=fd)) == expected


def test_write_failure_raises() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    try:
        with pytest.raises(OSError):
            text.encode_jsonl(match_batch(None, 3), fd=read_end)  # a pipe's read end takes no writes
    finally:
        os.close(read_end)


# ---------------------------------------------------------------- real matches


@pytest.fixture(scope="module")
def corpus(sigma_rule_dirs: list[Path]) -> tuple[RuleSet, Engine]:
    """The SigmaHQ rules and an engine over them (built once for the module)."""
    rules = load_rules(sigma_rule_dirs)
    return rules, Engine(rules)


@pytest.mark.shared
@native
def test_attack_samples(evtx_samples: Path, corpus: tuple[RuleSet, Engine]) -> None:
    """Every match batch of the SigmaHQ rules over the EVTX attack samples encodes identically."""
    rules, engine = corpus
    matches = 0
    for batch, _ in scan_chunks([os.fspath(evtx_samples)], rules, engine=engine, workers=1):
        assert_same_bytes(batch)
        matches += batch.num_rows
    assert matches > 1000


@pytest.mark.shared
@native
def test_attack_samples_split_path(evtx_samples: Path, corpus: tuple[RuleSet, Engine]) -> None:
    """The scan workers' path (``matches_and_events`` + ``encode_jsonl_events``) on real engine
    batches writes what ``encode_jsonl(matches)`` writes, and returns the same records."""
    rules, engine = corpus
    paths = [os.fspath(p) for p in sorted(evtx_samples.rglob("*.evtx"))]
    options = workers.ReadOptions("auto", 65_536, workers.ENGINE_BATCH_ROWS, True, None)
    matches = 0
    for unit in workers.plan_units(paths, "auto", options.engine_rows, options.batch_size):
        for batch in workers.read_unit(unit, rules, options, ErrorLog(), lambda source, rows: None):
            whole = engine.matches(batch)
            records, events, rows = engine.matches_and_events(batch)
            assert records.equals(whole.drop_columns(["event"]))
            assert text.encode_jsonl_events(records, events, rows) == text.encode_jsonl_python(whole)
            objects = text.encode_event_objects(events, rows)
            assert objects == [dumps(compact_event(e)) for e in whole.column("event").to_pylist()]
            matches += whole.num_rows
    assert matches > 1000
