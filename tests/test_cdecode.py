"""The native decoder (sigma_arrow._cdecode) against the Python path: same batch, or a refusal.

Every comparison decodes the same documents twice through ``flatten.decode_lines``: once with the
native decoder switched off (``SIGMA_ARROW_PURE_PYTHON_DECODE=1``), once with it on, and requires
the same schema, column order, values and nulls (and the same reported problems).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigma_arrow import flatten as fl
from sigma_arrow.errorlog import ErrorLog

native = pytest.mark.skipif(fl._cdecode is None, reason="sigma_arrow._cdecode is not built")

Doc = bytes | str


def python_batch(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> tuple[pa.RecordBatch, ErrorLog]:
    errors = ErrorLog()
    with monkeypatch.context() as patch:
        patch.setenv(fl.PURE_PYTHON_ENV, "1")
        assert not fl.native_decode_enabled()
        batch = fl.decode_lines(docs, source="src", indices=range(10, 10 + len(docs)), errors=errors)
    return batch, errors


def native_batch(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> tuple[pa.RecordBatch, ErrorLog]:
    errors = ErrorLog()
    with monkeypatch.context() as patch:
        patch.delenv(fl.PURE_PYTHON_ENV, raising=False)
        assert fl.native_decode_enabled()
        batch = fl.decode_lines(docs, source="src", indices=range(10, 10 + len(docs)), errors=errors)
    return batch, errors


def native_sparse_batch(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> tuple[pa.RecordBatch, ErrorLog]:
    """``decode_lines_sparse`` (the native engine's input form), made dense again to compare."""
    errors = ErrorLog()
    with monkeypatch.context() as patch:
        patch.delenv(fl.PURE_PYTHON_ENV, raising=False)
        batch = fl.decode_lines_sparse(docs, source="src", indices=range(10, 10 + len(docs)), errors=errors)
    return batch.to_batch(), errors


def ndjson_stretch_batch(docs: list[Doc]) -> tuple[pa.RecordBatch, ErrorLog] | None:
    """The documents as NDJSON lines through ``decode_ndjson_stretch`` (None: a document spans lines)."""
    lines = [doc.encode("utf-8", "surrogatepass") if isinstance(doc, str) else doc for doc in docs]
    if any(b"\n" in line or not line.strip() for line in lines):
        return None
    errors = ErrorLog()
    data = b"\n".join(lines) + b"\n"
    batch, end, count = fl.decode_ndjson_stretch(
        data, 0, len(lines), source="src", first_index=10, offset=0, errors=errors
    )
    assert (end, count) == (len(data), len(lines))
    return batch.to_batch(), errors


def assert_same(expected: pa.RecordBatch, actual: pa.RecordBatch) -> None:
    assert actual.schema.names == expected.schema.names
    assert actual.schema == expected.schema
    for name in expected.schema.names:
        assert actual.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert actual.equals(expected)


def check(docs: list[Doc], monkeypatch: pytest.MonkeyPatch, *, must_accept: bool) -> None:
    """Native == Python; ``must_accept``: the native decoder must not refuse these documents."""
    refused = fl._cdecode.decode(docs) is None
    if must_accept:
        assert not refused, fl._cdecode.last_refusal()
    expected, expected_errors = python_batch(docs, monkeypatch)
    actual, actual_errors = native_batch(docs, monkeypatch)
    assert_same(expected, actual)
    assert actual_errors.examples == expected_errors.examples
    # The sparse forms (what scans and Kafka jobs hand the native engine) hold the same batch.
    sparse, sparse_errors = native_sparse_batch(docs, monkeypatch)
    assert_same(expected, sparse)
    assert sparse_errors.examples == expected_errors.examples
    stretch = ndjson_stretch_batch(docs)
    if stretch is not None:  # problems there name byte offsets, not indices: compare the messages
        assert_same(expected, stretch[0])
        assert [p.message for p in stretch[1].examples] == [p.message for p in expected_errors.examples]


def evtx(system: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"}
    }
    event["System"] = system if system is not None else dict(SYSTEM)
    event.update(sections)
    return {"Event": event}


SYSTEM: dict[str, Any] = {
    "Provider": {
        "#attributes": {"Name": "Microsoft-Windows-Sysmon", "Guid": "5770385F", "EventSourceName": None}
    },
    "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7036},
    "Version": 2,
    "Level": 4,
    "Task": 11,
    "Keywords": "0x8000000000000000",
    "TimeCreated": {"#attributes": {"SystemTime": "2024-01-01T00:00:00.000000Z"}},
    "EventRecordID": 77,
    "Correlation": None,
    "Execution": {"#attributes": {"ProcessID": 3544, "ThreadID": 4272}},
    "Channel": "Microsoft-Windows-Sysmon/Operational",
    "Computer": "host",
    "Security": {"#attributes": {"UserID": "S-1-5-18"}},
}

# (case, documents as JSON values): documents the native decoder must take, with the Python result.
ACCEPTED: list[tuple[str, list[Any]]] = [
    ("flat strings", [{"a": "x", "b": "y"}, {"b": "z", "c": ""}]),
    ("scalars", [{"i": 1, "n": -7, "t": True, "f": False, "z": 0, "s": "0"}]),
    (
        "floats",
        [{"a": x, "b": [x], "c": {"d": x}} for x in (1e16, 0.1, -0.0, 1.5e-7, 1e-5, 2.5e300, 4688.0, 1e22)],
    ),
    ("float edge values", [{"a": x} for x in (5e-324, 1.7976931348623157e308, 123456789.125, -1e-300, 0.0)]),
    ("big ints", [{"a": 18446744073709551615, "b": -9223372036854775808, "c": [18446744073709551615]}]),
    ("null fields", [{"a": None, "b": 1}, {"a": "x", "b": None}]),
    ("empty documents and objects", [{}, {"a": {}}, {"a": {"b": {}}}, {"a": []}]),
    ("nested arrays", [{"a": [[1, [2, {"x": None, "y": [True, 1.5]}]], []], "b": [{"k": "v"}]}]),
    ("nested objects", [{"process": {"command_line": "x", "parent": {"pid": 1}}, "host": {"name": "h"}}]),
    ("keys with dots", [{"a.b": 1, "a": {"b": 2}}, {"a": {"b": 3}, "a.b": 4}, {"x.y": "z"}]),
    ("reserved names", [{"__source": "x", "__event_index": 5, "a": 1}, {"__source": {"x": 1}, "b": 2}]),
    (
        "escapes",
        [
            {"s": 'line\nbreak\ttab "quoted" back\\slash /slash \u0000 \u001f \u007f'},
            {"k\n": ["\u0001", "\b\f\r", "é", "😀", "\u2028"]},
        ],
    ),
    ("unicode", [{"ключ": "значение", "emoji": "😀🙂", "cjk": "漢字", "mixed": ["ü", {"ß": "ẞ"}]}]),
    ("evtx basic", [evtx(EventData={"Image": "C:\\x.exe", "ProcessId": 42, "Signed": True})]),
    (
        "evtx EventData null / string / list",
        [evtx(EventData=None), evtx(EventData="raw"), evtx(EventData=[1, 2])],
    ),
    (
        "evtx unnamed Data",
        [
            evtx(EventData={"Data": "one"}),
            evtx(EventData={"Data": ["a", "b", None, 3]}),
            evtx(EventData={"Data": {"#text": "t"}}),
            evtx(EventData={"Data": {"#text": ["l1", None, "l2"]}}),
            evtx(EventData={"Data": [{"#text": "x"}, "y", {"#attributes": {}}, {}]}),
            evtx(EventData={"Data": True}),
        ],
    ),
    (
        "evtx named Data",
        [
            evtx(
                EventData={
                    "Data": [
                        {"#attributes": {"Name": "TargetUserName"}, "#text": "bob"},
                        {"#attributes": {"Name": "LogonType"}, "#text": 3},
                        {"@Name": "Other", "#text": "o"},
                        {"#attributes": {"Name": None}, "@Name": "Fallback", "#text": "f"},
                        {"#attributes": {"Name": 5}, "#text": "number name"},
                        {"#attributes": {"Name": "Empty"}},
                        {"#attributes": {"Name": "Obj"}, "extra": {"k": 1}},
                        {"#attributes": {"Name": "Computer"}, "#text": "clash"},
                        {"#attributes": {"Other": "x"}, "#text": "unnamed"},
                    ]
                }
            )
        ],
    ),
    (
        "evtx EventData attributes and clashes",
        [
            evtx(
                EventData={
                    "#attributes": {"Name": "Section", "N": None, "X": 1.5},
                    "ProcessID": 1,
                    "Channel": "dup",
                    "Nested": {"#text": "inner"},
                    "AttrOnly": {"#attributes": {"a": 1}},
                    "Obj": {"a": [1, 2]},
                    "Flag": False,
                    "Ratio": 0.25,
                    "Whole": 3.0,
                    "Nothing": None,
                }
            )
        ],
    ),
    (
        "evtx UserData",
        [
            evtx(
                UserData={
                    "LogFileCleared": {"#attributes": {"xmlns": "ns"}, "SubjectUserName": "u", "Channel": "c"}
                }
            ),
            evtx(UserData={"#attributes": {"x": 1}, "Flat": "value", "Empty": None, "Text": {"#text": "t"}}),
            evtx(UserData="text"),
            evtx(UserData=[1, {"a": None}]),
            evtx(UserData=None),
        ],
    ),
    (
        "evtx other sections",
        [
            evtx(
                RenderingInfo={
                    "#attributes": {"Culture": "en"},
                    "Message": "m",
                    "Level": {"#text": "Info"},
                    "N": None,
                },
                ProcessingErrorData={"ErrorCode": 15005, "DataItemName": "x"},
                Extra="loose",
                More=[1, "two"],
                Empty=None,
            )
        ],
    ),
    (
        "evtx System variants",
        [
            evtx(
                {
                    "Provider": {"#attributes": {"Name": "P"}},
                    "EventID": 4688.0,
                    "Flag": True,
                    "List": [1, "a"],
                    "Ratio": 1.25,
                    "Element": {"#attributes": {"A": "a"}, "child": "c"},
                    "OnlyAttrs": {"#attributes": {"B": [1]}},
                    "TextNull": {"#text": None},
                    "TextList": {"#text": ["a", 1, None]},
                    "TimeCreated": {"#attributes": {"SystemTime": "t"}, "extra": 1},
                    "Empty": {},
                    "Nothing": None,
                },
                EventData={"EventID": "clash", "Flag": "clash too"},
            )
        ],
    ),
    ("evtx with siblings", [{"Event": {"System": {"EventID": 1}}, "collector": {"host": "h"}, "tag": "t"}]),
    ("Event that is not evtx", [{"Event": {"NoSystem": 1}}, {"Event": "string"}, {"Event": {"System": "x"}}]),
    ("deep nesting", [{"a": {"b": {"c": {"d": {"e": {"f": {"g": [[[[{"h": 1}]]]]}}}}}}}]),
]


def serialise(values: list[Any], style: int) -> list[Doc]:
    """The documents as bytes / str, compact / spaced / ASCII-escaped (every style parses the same)."""
    if style == 0:
        return [orjson.dumps(v) for v in values]
    if style == 1:
        return [json.dumps(v, ensure_ascii=True, indent=1) for v in values]
    return [json.dumps(v, ensure_ascii=False, separators=(" , ", " : ")).encode() for v in values]


@native
@pytest.mark.parametrize("style", [0, 1, 2])
@pytest.mark.parametrize(("case", "values"), ACCEPTED, ids=[c for c, _ in ACCEPTED])
def test_native_equals_python(
    case: str, values: list[Any], style: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    check(serialise(values, style), monkeypatch, must_accept=True)


@native
def test_raw_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spellings only raw JSON has: exponents, -0, escaped slashes, surrogate pairs, whitespace."""
    docs: list[Doc] = [
        b'{"a": 1E2, "b": 1e-7, "c": -0, "d": -0.0, "e": 0.5e1, "f": 12345678901234567890e-10}',
        b'{"s": "\\/\\u00e9\\ud83d\\ude00\\u0041", "\\u006b": [1.0, 1e+2, -1E-5]}',
        b' \t\r\n{"x":1}\r\n',
        '{"str input": "é"}',
        b'{"a":[ ],"b":{ },"c":[ 1 , 2 ]}',
    ]
    check(docs, monkeypatch, must_accept=True)


@native
def test_sparse_columns_in_a_big_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows than the Python path's small-batch threshold, many event kinds (sparse columns)."""
    values = [
        {f"k{i % 7}": i, "common": f"v{i}", f"n{i % 3}": {"x": i % 5 or None}} if i % 11 else {}
        for i in range(3000)
    ]
    check(serialise(values, 0), monkeypatch, must_accept=True)


@native
def test_mixed_bytes_and_str(monkeypatch: pytest.MonkeyPatch) -> None:
    check([b'{"a":1}', '{"a":"2","b":[3]}', b'{"b":null}'], monkeypatch, must_accept=True)


# Documents the native decoder must hand back to Python (which reports the bad ones).
REFUSED: list[tuple[str, list[Doc]]] = [
    ("invalid JSON", [b'{"a":1}', b'{"a":', b'{"b":2}']),
    ("not an object", [b"[1, 2]", b'"text"', b"3"]),
    ("blank document", [b"", b"  "]),
    ("trailing garbage", [b'{"a":1} x', b'{"a":1}{"b":2}']),
    ("duplicate key", [b'{"a":1,"b":2,"a":3}']),
    (
        "duplicate key in a big object",
        [("{" + ",".join(f'"k{i}":{i}' for i in range(30)) + ',"k3":0}').encode()],
    ),
    ("integer beyond 64 bits", [b'{"a":18446744073709551616}', b'{"a":-9223372036854775809}']),
    ("infinite number", [b'{"a":1e400}']),
    ("lone surrogate", [b'{"a":"\\ud800"}', b'{"a":"\\udc00x"}']),
    ("invalid UTF-8", [b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xc0\x80"}']),
    ("control character", [b'{"a":"x\x01y"}']),
    ("BOM", [b'\xef\xbb\xbf{"a":1}']),
    ("bad literals", [b'{"a":NaN}', b'{"a":tru}', b'{"a":01}', b'{"a":1.}', b'{"a":[1,]}']),
    ("deep nesting", [("{" + '"a":[' * 100 + "]" * 100 + "}").encode()]),
    (
        "Data name that is not text",
        [orjson.dumps(evtx(EventData={"Data": [{"#attributes": {"Name": True}}]}))],
    ),
]


@native
@pytest.mark.parametrize(("case", "docs"), REFUSED, ids=[c for c, _ in REFUSED])
def test_refused_blocks_fall_back_to_python(
    case: str, docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fl._cdecode.decode(docs) is None
    assert fl._cdecode.last_refusal()
    check(docs, monkeypatch, must_accept=False)


@native
def test_refusal_reason_is_cleared() -> None:
    assert fl._cdecode.decode([b"[]"]) is None
    assert "document 0" in fl._cdecode.last_refusal()
    assert fl._cdecode.decode([b"{}"]) is not None
    assert fl._cdecode.last_refusal() == ""


@native
def test_concurrent_threads() -> None:
    """The decoder runs without the GIL (taking it back for float conversions): threads agree."""
    docs: list[Doc] = [
        orjson.dumps({"f": i + 0.5, "big": 1e300 * (i + 1), "s": "x" * (i % 50), "n": {"a": [i * 0.1]}})
        for i in range(3000)
    ]
    expected = fl._cdecode.decode(docs)
    assert expected is not None
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fl._cdecode.decode, [docs] * 12))
    assert all(result == expected for result in results)


def test_forced_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGMA_ARROW_PURE_PYTHON_DECODE=1 (or no extension at all) decodes in Python, same batch."""
    docs: list[Doc] = [orjson.dumps(evtx(EventData={"Image": "x"})), b'{"a":{"b":1.5}}', b"{bad"]
    batch, errors = python_batch(docs, monkeypatch)
    assert batch.column("Image").to_pylist() == ["x", None]
    assert batch.column("a.b").to_pylist() == [None, "1.5"]
    assert batch.column("__event_index").to_pylist() == [10, 11]
    assert errors.total == 1
    monkeypatch.setattr(fl, "_cdecode", None)
    monkeypatch.delenv(fl.PURE_PYTHON_ENV, raising=False)
    assert not fl.native_decode_enabled()
    again = fl.decode_lines(docs, source="src", indices=range(10, 13), errors=ErrorLog())
    assert_same(batch, again)


# ---------------------------------------------------------------- property: random documents

KEYS = st.sampled_from(
    ["a", "b", "a.b", "Event", "System", "EventData", "UserData", "Data", "#text", "#attributes", "Name",
     "@Name", "Provider", "EventID", "Channel", "TimeCreated", "__source", "é", "k\n"]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(KEYS | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=20,
)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=6)
EVTX_LIKE = st.builds(
    lambda system, sections: {"Event": {"System": system, **sections}},
    st.dictionaries(KEYS, VALUES, max_size=5),
    st.dictionaries(KEYS, VALUES, max_size=4),
)


@native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(OBJECTS | EVTX_LIKE, min_size=1, max_size=6), style=st.integers(0, 2))
def test_property_native_refuses_or_equals_python(
    values: list[Any], style: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    check(serialise(values, style), monkeypatch, must_accept=False)


# ---------------------------------------------------------------- the shared corpora


def split_documents(text: str) -> list[str]:
    """The objects of a file holding one or several JSON documents, as their own text."""
    decoder = json.JSONDecoder()
    docs, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return docs
        _, end = decoder.raw_decode(text, position)
        docs.append(text[position:end])
        position = end


@native
@pytest.mark.shared
def test_regression_data_json(regression_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted(regression_data.rglob("*.json"))
    assert files
    for path in files:
        docs: list[Doc] = list(split_documents(path.read_text(encoding="utf-8")))
        check(docs, monkeypatch, must_accept=True)


@native
@pytest.mark.shared
def test_evtx_attack_samples(evtx_samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evtx as evtx_package

    files = sorted(evtx_samples.rglob("*.evtx"))
    assert files
    records = 0
    for path in files:
        docs: list[Doc] = [r["data"] for r in evtx_package.PyEvtxParser(str(path)).records_json()]
        if docs:
            check(docs, monkeypatch, must_accept=True)
            records += len(docs)
    assert records > 1000
