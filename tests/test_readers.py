"""Readers: JSON layouts and compression, Arrow IPC, EVTX (samples, corrupt, truncated), the registry."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import zstandard

from compiler.errors import InputError
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import flatten_record
from sigma_arrow.readers.registry import detect_format, expand_inputs, reader_for
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

EVENTS: list[dict[str, Any]] = [
    {"EventID": 1, "Image": "C:\\a.exe", "CommandLine": "a -x"},
    {"EventID": "4688", "NewProcessName": "C:\\b.exe", "nested": {"k": [1, 2]}},
    {"process": {"command_line": "curl x", "pid": 9}, "ok": True},
    {"EventID": 3, "DestinationIp": "10.0.0.1", "Image": "C:\\é.exe"},
    {"Event": {"System": {"EventID": 7, "Channel": "c"}, "EventData": {"ImageLoaded": "x.dll"}}},
]


def ndjson() -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in EVENTS)


def pretty() -> bytes:
    return "\n".join(json.dumps(e, indent=2) for e in EVENTS).encode() + b"\n"


def array() -> bytes:
    return json.dumps(EVENTS, indent=1).encode()


def compact_array() -> bytes:
    return json.dumps(EVENTS).encode()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
}


def read_all(
    path: str, fmt: str = "auto", batch_size: int = 2, errors: ErrorLog | None = None
) -> list[pa.RecordBatch]:
    errors = errors if errors is not None else ErrorLog()
    return list(reader_for(path, fmt).read(path, batch_size=batch_size, errors=errors))


def rows_of(batches: list[pa.RecordBatch]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.to_pylist()]


def expected_rows(path: str) -> list[dict[str, Any]]:
    return [{**flatten_record(e), SOURCE_COLUMN: path, INDEX_COLUMN: i} for i, e in enumerate(EVENTS)]


def strip_nulls(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if v is not None} for r in rows]


@pytest.mark.parametrize("compression", list(COMPRESSORS))
@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("events.jsonl", ndjson),
        ("events.json", pretty),
        ("array.json", array),
        ("flat.json", compact_array),
        ("lines.json", ndjson),
    ],
)
def test_json_layouts_and_compression(tmp_path: Path, name: str, make: Any, compression: str) -> None:
    path = tmp_path / (name + compression)
    path.write_bytes(COMPRESSORS[compression](make()))
    batches = read_all(str(path))
    assert all(b.num_rows <= 2 for b in batches)  # bounded by batch_size
    assert strip_nulls(rows_of(batches)) == strip_nulls(expected_rows(str(path)))


def test_format_sniffed_without_extension(tmp_path: Path) -> None:
    path = tmp_path / "noext"
    path.write_bytes(gzip.compress(pretty()))
    assert detect_format(str(path)) == "json"
    assert len(rows_of(read_all(str(path)))) == len(EVENTS)


@pytest.mark.parametrize(
    ("content", "good", "bad_offsets"),
    [
        (b'{"a":1}\n{"a":2,\n{"a":3}\n', ["1", "3"], [8]),
        (b'{"a":1}\n\n{"a":2}\n[3]\n', ["1", "2"], [17]),
        (b'{"a":1}\n{"a": "unterminated}\n{"a":3}', ["1", "3"], [8]),
    ],
)
def test_ndjson_malformed_lines(
    tmp_path: Path, content: bytes, good: list[str], bad_offsets: list[int]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    errors = ErrorLog()
    rows = rows_of(read_all(str(path), errors=errors))
    assert [r["a"] for r in rows] == good
    assert [(p.source, p.kind, p.offset) for p in errors.examples] == [
        (str(path), "json", o) for o in bad_offsets
    ]


def test_pretty_json_malformed_object_is_skipped(tmp_path: Path) -> None:
    text = '{\n  "a": 1\n}\n{\n  "a": ,\n}\n{\n  "a": 3\n}\n'
    path = tmp_path / "pretty.json"
    path.write_text(text)
    errors = ErrorLog()
    rows = rows_of(read_all(str(path), errors=errors))
    assert [r["a"] for r in rows] == ["1", "3"]
    assert [r[INDEX_COLUMN] for r in rows] == [0, 2]
    assert errors.counts["json"] == 1
    assert errors.examples[0].offset == text.index('{\n  "a": ,')


def test_ndjson_blocks_split_lines_correctly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sigma_arrow.readers import json as json_reader

    monkeypatch.setattr(json_reader, "BLOCK", 7)  # lines straddle every block boundary
    path = tmp_path / "e.jsonl"
    path.write_bytes(ndjson())
    assert strip_nulls(rows_of(read_all(str(path), batch_size=3))) == strip_nulls(expected_rows(str(path)))


@pytest.mark.parametrize("stream", [False, True])
def test_arrow_ipc(tmp_path: Path, stream: bool) -> None:
    table = pa.Table.from_pylist(
        [{"EventID": 1, "proc": {"name": "a", "pid": 2}}, {"EventID": 2, "proc": None}]
    )
    path = tmp_path / ("e.arrows" if stream else "e.arrow")
    with pa.OSFile(str(path), "wb") as sink:
        writer = ipc.new_stream(sink, table.schema) if stream else ipc.new_file(sink, table.schema)
        writer.write_table(table)
        writer.close()
    rows = rows_of(read_all(str(path), batch_size=1))
    assert [r["EventID"] for r in rows] == [1, 2]
    assert [r["proc.name"] for r in rows] == ["a", None]
    assert [r[INDEX_COLUMN] for r in rows] == [0, 1]
    assert {r[SOURCE_COLUMN] for r in rows} == {str(path)}
    assert detect_format(str(path)) == "arrow"


def test_expand_inputs(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in [
        "d/a.jsonl",
        "d/sub/b.evtx",
        "d/sub/c.json.gz",
        "d/notes.txt",
        "d/.hidden.jsonl",
        "top.json",
    ]:
        (tmp_path / name).write_bytes(b"{}\n")
    base = str(tmp_path)
    found = expand_inputs([f"{base}/d", f"{base}/top.json", f"{base}/*.json", "-"])
    assert found == [
        f"{base}/d/a.jsonl",
        f"{base}/d/sub/b.evtx",
        f"{base}/d/sub/c.json.gz",
        f"{base}/top.json",
        "-",
    ]
    errors = ErrorLog()
    assert expand_inputs([f"{base}/missing.evtx", f"{base}/nope*.json", f"{base}/top.json"], errors) == [
        f"{base}/top.json"
    ]
    assert errors.counts["file"] == 2
    with pytest.raises(InputError):
        expand_inputs([f"{base}/missing.evtx"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x.evtx", "evtx"),
        ("x.jsonl", "jsonl"),
        ("x.ndjson.zst", "jsonl"),
        ("x.json", "json"),
        ("x.parquet", "parquet"),
        ("x.arrow", "arrow"),
        ("x.feather", "arrow"),
        ("x.JSON.GZ", "json"),
    ],
)
def test_format_by_name(name: str, expected: str) -> None:
    assert detect_format(name) == expected


def test_unknown_format_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError):
        reader_for(str(path))
    with pytest.raises(InputError):
        reader_for(str(path), "csv")


def test_parquet_directory_is_one_input(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    (tmp_path / "ds").mkdir()
    pq.write_table(pa.table({"EventID": ["1"]}), tmp_path / "ds" / "part-0.parquet")
    pq.write_table(pa.table({"EventID": ["2"]}), tmp_path / "ds" / "part-1.parquet")
    assert expand_inputs([str(tmp_path / "ds")]) == [str(tmp_path / "ds")]
    rows = rows_of(read_all(str(tmp_path / "ds")))
    assert sorted(r["EventID"] for r in rows) == ["1", "2"]
    assert type(reader_for(str(tmp_path / "ds" / "part-0.parquet"))).__name__ == "ParquetReader"


# ---------------------------------------------------------------- EVTX (needs ../shared)


def _sample(evtx_samples: Path) -> Path:
    """A sample file with several chunks (so corruption and truncation leave good chunks around)."""
    files = sorted(evtx_samples.rglob("*.evtx"), key=lambda p: p.stat().st_size)
    return next(f for f in reversed(files) if f.read_bytes().count(b"ElfChnk\x00") >= 4)


@pytest.mark.shared
def test_evtx_reads_every_record(evtx_samples: Path) -> None:
    import evtx

    for path in sorted(evtx_samples.rglob("*.evtx"))[:25]:
        expected = [
            json.loads(cast(dict[str, Any], r)["data"]) for r in evtx.PyEvtxParser(str(path)).records_json()
        ]
        errors = ErrorLog()
        rows = rows_of(read_all(str(path), batch_size=100, errors=errors))
        assert errors.total == 0
        assert [r[INDEX_COLUMN] for r in rows] == list(range(len(expected)))
        assert strip_nulls(
            [{k: v for k, v in r.items() if not k.startswith("__")} for r in rows]
        ) == strip_nulls([flatten_record(e) for e in expected])


@pytest.mark.shared
def test_evtx_compressed_and_stdin_sniffing(evtx_samples: Path, tmp_path: Path) -> None:
    path = _sample(evtx_samples)
    packed = tmp_path / "s.evtx.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    plain = rows_of(read_all(str(path), batch_size=1000))
    assert len(rows_of(read_all(str(packed), batch_size=1000))) == len(plain)
    renamed = tmp_path / "noext"
    renamed.write_bytes(path.read_bytes())
    assert detect_format(str(renamed)) == "evtx"


@pytest.mark.shared
def test_evtx_corrupt_chunk_reported_and_rest_read(evtx_samples: Path, tmp_path: Path) -> None:
    path = _sample(evtx_samples)
    data = bytearray(path.read_bytes())
    good = len(rows_of(read_all(str(path), batch_size=1000)))
    start = 0x1000 + 0x10000  # the second chunk: damage its string/template area
    for offset in range(start + 600, start + 3000, 7):
        data[offset] ^= 0xFF
    corrupt = tmp_path / "corrupt.evtx"
    corrupt.write_bytes(bytes(data))
    errors = ErrorLog()
    rows = rows_of(read_all(str(corrupt), batch_size=1000, errors=errors))
    assert errors.total >= 1
    problem = errors.examples[0]
    assert problem.source == str(corrupt) and problem.kind.startswith("evtx") and problem.offset is not None
    assert 0 < len(rows) < good  # the other chunks are still read


@pytest.mark.shared
def test_evtx_truncated_reported(evtx_samples: Path, tmp_path: Path) -> None:
    path = _sample(evtx_samples)
    data = path.read_bytes()
    cut = 0x1000 + 2 * 0x10000 + 20000
    truncated = tmp_path / "truncated.evtx"
    truncated.write_bytes(data[:cut])
    errors = ErrorLog()
    rows = rows_of(read_all(str(truncated), batch_size=1000, errors=errors))
    assert rows  # the complete chunks are read
    assert errors.counts["evtx-file"] == 1
    assert errors.examples[0].offset == 0x1000 + 2 * 0x10000


def test_not_an_evtx_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.evtx"
    path.write_bytes(b"hello" * 100)
    errors = ErrorLog()
    assert read_all(str(path), errors=errors) == []
    assert errors.counts["evtx-file"] == 1
    assert os.path.exists(path)


@pytest.mark.parametrize("layout", [ndjson, pretty, array])
def test_byte_order_mark_and_crlf(tmp_path: Path, layout: Any) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + layout().replace(b"\n", b"\r\n"))
    errors = ErrorLog()
    assert strip_nulls(rows_of(read_all(str(path), errors=errors))) == strip_nulls(expected_rows(str(path)))
    assert errors.total == 0


@pytest.mark.parametrize("name", ["big.jsonl", pytest.param("big.evtx", marks=pytest.mark.shared)])
def test_parallel_decoding_gives_the_same_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, request: Any
) -> None:
    from sigma_arrow.readers import parallel
    from sigma_arrow.readers.evtx import EvtxReader
    from sigma_arrow.readers.json import JsonReader

    if name.endswith(".evtx"):
        samples = request.getfixturevalue("evtx_samples")
        source = _sample(samples)
        path = tmp_path / name
        path.write_bytes(source.read_bytes())
        serial_reader: Any = EvtxReader(workers=1)
        parallel_reader: Any = EvtxReader(workers=2)
    else:
        path = tmp_path / name
        lines = ndjson().splitlines(keepends=True)
        path.write_bytes(b"".join(lines * 40) + b"{broken\n" + b"".join(lines * 3))
        serial_reader, parallel_reader = JsonReader("ndjson", workers=1), JsonReader("ndjson", workers=2)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    assert parallel.worth_it(str(path), 2)
    serial_errors, parallel_errors = ErrorLog(), ErrorLog()
    serial = list(serial_reader.read(str(path), batch_size=37, errors=serial_errors))
    in_pool = list(parallel_reader.read(str(path), batch_size=37, errors=parallel_errors))
    assert [b.num_rows for b in in_pool] == [b.num_rows for b in serial]
    assert rows_of(in_pool) == rows_of(serial)
    assert parallel_errors.examples == serial_errors.examples


def test_decoding_falls_back_in_process_when_the_pool_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigma_arrow.readers import parallel
    from sigma_arrow.readers.json import JsonReader

    def no_pool(workers: int) -> Any:
        raise OSError("no processes here")

    monkeypatch.setattr(parallel, "_get_pool", no_pool)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    path = tmp_path / "e.jsonl"
    path.write_bytes(ndjson())
    rows = rows_of(list(JsonReader("ndjson", workers=2).read(str(path), batch_size=2, errors=ErrorLog())))
    assert strip_nulls(rows) == strip_nulls(expected_rows(str(path)))


@pytest.mark.parametrize(("load", "expected"), [(0.2, 2), (5.0, 1)])
def test_automatic_pool_size_follows_idle_cores(
    monkeypatch: pytest.MonkeyPatch, load: float, expected: int
) -> None:
    from sigma_arrow.readers import parallel

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.delenv("SIGMA_ARROW_DECODE_WORKERS", raising=False)
    monkeypatch.setattr(parallel, "_default_workers", 1)
    parallel.configure()
    assert parallel.decode_workers() == expected
    monkeypatch.setenv("SIGMA_ARROW_DECODE_WORKERS", "3")
    assert parallel.decode_workers() == 3


@pytest.mark.parametrize(
    ("data", "messages", "numbers"),
    [
        (b"first line\nsecond\n", ["first line", "second"], [0, 1]),
        (b"a\r\n\r\n  \nb", ["a", "b"], [0, 3]),  # blank lines skipped but counted; CRLF; no final newline
        (b"caf\xc3\xa9 \xff\n", ["café \ufffd"], [0]),  # invalid UTF-8 replaced, not fatal
        (b"", [], []),
    ],
)
def test_lines_reader(tmp_path: Path, data: bytes, messages: list[str], numbers: list[int]) -> None:
    path = tmp_path / "device.log"
    path.write_bytes(data)
    assert detect_format(str(path)) == "lines"
    batches = read_all(str(path))
    rows = rows_of(batches)
    assert [r["message"] for r in rows] == messages
    assert [r[INDEX_COLUMN] for r in rows] == numbers
    assert all(r[SOURCE_COLUMN] == str(path) for r in rows)


def test_lines_extensions_holding_json_are_json(tmp_path: Path) -> None:
    (tmp_path / "events.log").write_bytes(b'{"EventID": 1}\n')
    (tmp_path / "device.raw").write_bytes(b"%SYS-5-CONFIG_I: Configured\n")
    (tmp_path / "README.txt").write_bytes(b"not a log\n")
    assert detect_format(str(tmp_path / "events.log")) == "json"
    assert detect_format(str(tmp_path / "device.raw")) == "lines"
    assert detect_format(str(tmp_path / "README.txt")) == "lines"  # when named explicitly
    found = [os.path.basename(p) for p in expand_inputs([str(tmp_path)])]
    assert found == ["device.raw", "events.log"]  # a directory skips .txt files


def test_lines_reader_batches(tmp_path: Path) -> None:
    path = tmp_path / "big.log.gz"
    path.write_bytes(gzip.compress(b"".join(b"line %d\n" % i for i in range(25))))
    batches = read_all(str(path), batch_size=10)
    assert [b.num_rows for b in batches] == [10, 10, 5]
    assert rows_of(batches)[-1] == {"message": "line 24", SOURCE_COLUMN: str(path), INDEX_COLUMN: 24}
