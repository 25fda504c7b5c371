"""NDJSON decoded straight into SparseBatches (scan workers, native engine) equals the line-by-line path.

``read_ndjson_range(..., sparse=True)`` reads big blocks and lets the native decoder split the lines
in the read buffer; it must give the very batches (rows, columns in the same order, indices,
sources) and the very problem reports of the dense path, wherever the reads cut the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sigma_arrow import flatten
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers import json as json_reader

pytestmark = pytest.mark.skipif(not flatten.native_decode_enabled(), reason="native decoder not built")


def event(n: int) -> bytes:
    fields = {"EventID": str(n % 7), "Image": f"C:\\\\Windows\\\\p{n}.exe", "n": n}
    if n % 3 == 0:
        fields["CommandLine"] = f"cmd /c echo {n}"
    if n % 5 == 0:
        fields = {"Other": "x", **fields}  # a new column first: column order depends on batch cuts
    return orjson.dumps(fields)


LINES = [event(n) for n in range(40)]

CASES: dict[str, bytes] = {
    "plain": b"\n".join(LINES) + b"\n",
    "no final newline": b"\n".join(LINES),
    "byte order mark": b"\xef\xbb\xbf" + b"\n".join(LINES) + b"\n",
    "blank and whitespace lines": b"\n\n".join(LINES[:10]) + b"\n \t\n\r\n" + b"\n".join(LINES[10:]) + b"\n",
    "CRLF": b"\r\n".join(LINES) + b"\r\n",
    "bad lines": b"\n".join([*LINES[:7], b"{broken", *LINES[7:20], b"[1, 2]", b"not json", *LINES[20:]])
    + b"\n",
    "unicode and escapes": b"\n".join([*LINES[:5], b'{"a":"\\u00e9t\\u00e9 \\"q\\""}', *LINES[5:]]) + b"\n",
}


Read = tuple[list[Any], list[str]]


def read(
    path: Path, start: int, end: int, first: int, size: int, *, sparse: bool
) -> tuple[list[Any], list[str]]:
    """The range's non-empty batches (made dense) and its problem reports."""
    errors = ErrorLog()
    batches = json_reader.read_ndjson_range(
        str(path), start, end, first, batch_size=size, errors=errors, sparse=sparse
    )
    found = [batch for batch in batches if batch.num_rows]
    assert all(isinstance(batch, SparseBatch) == sparse for batch in found)
    dense = [batch.to_batch() if isinstance(batch, SparseBatch) else batch for batch in found]
    return dense, [f"{p.offset}: {p.message}" for p in errors.examples]


def use_reads(monkeypatch: pytest.MonkeyPatch, how: str, block: int) -> None:
    """Read the file by memory-mapped windows or by plain reads, ``block`` bytes at a time."""
    monkeypatch.setattr(json_reader, "SPARSE_BLOCK", block)
    monkeypatch.setattr(json_reader, "MAP_WINDOW", block)
    if how == "read":
        monkeypatch.setattr(json_reader, "_mappable", lambda handle, end: False)


READS = ["mapped", "read"]


@pytest.mark.parametrize("how", READS)
@pytest.mark.parametrize("block", [7, 64, 1000, 1 << 26], ids=lambda b: f"block{b}")
@pytest.mark.parametrize("batch_size", [1, 3, 16, 1000])
@pytest.mark.parametrize("case", list(CASES))
def test_sparse_ranges_equal_the_line_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, batch_size: int, block: int, how: str
) -> None:
    use_reads(monkeypatch, how, block)
    path = tmp_path / "events.jsonl"
    data = CASES[case]
    path.write_bytes(data)
    expected, expected_problems = read(path, 0, len(data), 0, batch_size, sparse=False)
    actual, actual_problems = read(path, 0, len(data), 0, batch_size, sparse=True)
    assert [batch.num_rows for batch in actual] == [batch.num_rows for batch in expected]
    for want, got in zip(expected, actual, strict=True):
        assert got.schema.names == want.schema.names  # same column order: byte-identical records
        assert got.equals(want)
    assert actual_problems == expected_problems


BIG = b"".join(event(n) + (b"\n\n" if n % 97 == 0 else b"\n") for n in range(3000))  # ~30 pages


@pytest.mark.parametrize("how", READS)
@pytest.mark.parametrize("case", ["plain", "bad lines", "blank and whitespace lines", "many pages"])
def test_sparse_range_in_the_middle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, how: str
) -> None:
    """A range that starts on a later line keeps the record indices and byte offsets of the file."""
    use_reads(monkeypatch, how, 100)
    path = tmp_path / "events.jsonl"
    data = BIG if case == "many pages" else CASES[case]
    path.write_bytes(data)
    start = data.index(b"\n", len(data) // 3) + 1
    first = sum(1 for line in data[:start].split(b"\n") if line.strip())
    expected, expected_problems = read(path, start, len(data), first, 5, sparse=False)
    actual, actual_problems = read(path, start, len(data), first, 5, sparse=True)
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        assert got.equals(want)
    assert actual_problems == expected_problems
    assert actual[0].column("__event_index")[0].as_py() == first


@pytest.mark.parametrize("window", [4096, 10_000, 1 << 20])
@pytest.mark.parametrize("batch_size", [7, 500, 5000])
def test_mapped_windows_across_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int, batch_size: int
) -> None:
    """Windows that start at page boundaries inside a line, and batches longer than a window."""
    monkeypatch.setattr(json_reader, "MAP_WINDOW", window)
    path = tmp_path / "big.jsonl"
    data = BIG[:5000] + b"{broken\n" + BIG[5000:]
    cut = data.index(b"\n", 5000) + 1  # "{broken" is a line of its own
    data = data[:cut] + b"{broken\n" + data[cut:]
    path.write_bytes(data)
    with path.open("rb") as handle:
        assert json_reader._mappable(handle, len(data))
    start = data.index(b"\n", 9000) + 1
    first = sum(1 for line in data[:start].split(b"\n") if line.strip())
    for begin, index in ((0, 0), (start, first)):
        expected, expected_problems = read(path, begin, len(data), index, batch_size, sparse=False)
        actual, actual_problems = read(path, begin, len(data), index, batch_size, sparse=True)
        assert [b.num_rows for b in actual] == [b.num_rows for b in expected]
        for want, got in zip(expected, actual, strict=True):
            assert got.equals(want)
        assert actual_problems == expected_problems
