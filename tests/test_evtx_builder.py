"""The native incremental decoder (``_cdecode.Builder``) and the EVTX small-files path built on it.

A Builder fed documents a few at a time must give exactly what ``decode_sparse`` gives for all of
them at once; a refused ``add`` must leave the rows before it as they were. The string scanner is
checked at every length and position of a special character (the 8/16-byte scans and their tails),
the native decoder against the Python path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sigma_arrow import flatten as fl
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import merge_batches
from sigma_arrow.readers import evtx as evtx_reader
from sigma_arrow.readers.evtx import EvtxReader

native = pytest.mark.skipif(fl._cdecode is None, reason="sigma_arrow._cdecode is not built")
cdecode: Any = fl._cdecode
Doc = bytes | str


def _plain(columns: Sequence[tuple[str, Any, Any, Any]]) -> list[tuple[str, bytes | None, bytes, bytes]]:
    """Columns with every buffer as bytes (the Builder hands over bytes-like Chunks)."""
    return [(n, None if r is None else bytes(r), bytes(o), bytes(d)) for n, r, o, d in columns]


def _built(chunks: Sequence[Sequence[Doc]]) -> list[tuple[str, bytes | None, bytes, bytes]]:
    builder = cdecode.Builder()
    for chunk in chunks:
        assert builder.add(chunk), cdecode.last_refusal()
    assert builder.rows == sum(len(chunk) for chunk in chunks)
    columns = _plain(builder.finish())
    assert builder.rows == 0
    return columns


def _evtx(event_id: int, **data: Any) -> str:
    return json.dumps(
        {
            "Event": {
                "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
                "System": {
                    "Provider": {"#attributes": {"Name": "Microsoft-Windows-Sysmon"}},
                    "EventID": event_id,
                    "Channel": "Microsoft-Windows-Sysmon/Operational",
                    "TimeCreated": {"#attributes": {"SystemTime": "2024-01-01T00:00:00Z"}},
                },
                "EventData": data,
            }
        }
    )


# (case, documents): every split of these into chunks builds what one decode_sparse call gives.
DOCUMENTS: list[tuple[str, list[Doc]]] = [
    ("flat", ['{"a": "x", "b": 1}', '{"b": 2, "c": ""}', '{"a": "y"}']),
    ("columns appear late", ['{"a": "1"}'] * 5 + ['{"z": "late", "a": "2"}']),
    ("every row sets every column", ['{"a": "1", "b": "2"}'] * 7),
    ("reserved names left out", ['{"__source": "s", "x": 1}', '{"__event_index": 3, "x": 2}']),
    (
        "evtx",
        [
            _evtx(1, Image="C:\\\\Windows\\\\cmd.exe", CommandLine='cmd /c "echo"'),
            _evtx(4688, NewProcessName="x"),
        ]
        * 3,
    ),
    (
        "escapes and non-ASCII",
        ['{"k": "caf\\u00e9 \\ud83d\\ude00 tab\\t"}', '{"k": "é", "ü": "ß"}', b'{"b": "bytes"}'],
    ),
    ("empty objects", ["{}", '{"a": {}}', "{}"]),
]


@native
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
@pytest.mark.parametrize(("case", "docs"), DOCUMENTS, ids=[case for case, _ in DOCUMENTS])
def test_builder_equals_one_decode(case: str, docs: list[Doc], chunk_size: int) -> None:
    chunks = [docs[i : i + chunk_size] for i in range(0, len(docs), chunk_size)]
    assert _built(chunks) == _plain(cdecode.decode_sparse(docs))


# (case, documents before, refused documents, documents after): the refused add leaves no trace.
REFUSALS: list[tuple[str, list[Doc], list[Doc], list[Doc]]] = [
    ("duplicate key", ['{"a": "1"}'], ['{"new": "x", "a": "2"}', '{"a": 1, "a": 2}'], ['{"b": "3"}']),
    ("lone surrogate", ['{"a": "1"}', '{"b": "2"}'], ['{"b": "ok"}', '{"s": "\\ud800"}'], ['{"a": "3"}']),
    ("not an object", [], ['{"a": "1"}', "[1, 2]"], ['{"a": "2"}']),
    ("bad JSON first", ['{"x": "1"}'], ['{"x": '], ['{"x": "2"}', '{"y": "3"}']),
    ("huge integer", ['{"n": 1}'], ['{"m": "new"}', '{"n": 123456789012345678901234567890}'], ['{"n": 2}']),
]


@native
@pytest.mark.parametrize(("case", "before", "refused", "after"), REFUSALS, ids=[c for c, *_ in REFUSALS])
def test_refused_add_leaves_the_rows_before(
    case: str, before: list[Doc], refused: list[Doc], after: list[Doc]
) -> None:
    builder = cdecode.Builder()
    if before:
        assert builder.add(before)
    assert not builder.add(refused)
    assert cdecode.last_refusal()
    assert builder.rows == len(before)
    assert builder.add(after)
    assert cdecode.last_refusal() == ""
    assert _plain(builder.finish()) == _plain(cdecode.decode_sparse(before + after))


@native
def test_sparse_builder_batch_equals_decode_lines_sparse() -> None:
    docs = [doc for _, group in DOCUMENTS for doc in group]
    builder = fl.sparse_builder()
    assert builder is not None
    for start in range(0, len(docs), 4):
        assert builder.add(docs[start : start + 4])
    indices = list(range(100, 100 + len(docs)))
    built = builder.finish(source="src", indices=indices).to_batch()
    expected = fl.decode_lines_sparse(docs, source="src", indices=indices, errors=ErrorLog()).to_batch()
    assert built.equals(expected)
    assert builder.rows == 0


def test_no_builder_when_pure_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fl.PURE_PYTHON_ENV, "1")
    assert fl.sparse_builder() is None


# ---------------------------------------------------------------- the string scanner at every boundary

SPECIALS = ['"', "\\", "\n", "\u00e9", "\u20ac", "\U0001f600", "\u0001", "/"]


def _strings() -> Iterator[str]:
    for length in range(0, 41):
        yield "x" * length
        for special in SPECIALS:
            for at in {0, length // 2, max(0, length - 1), length}:
                yield "a" * at + special + "b" * max(0, length - at)


@native
@pytest.mark.parametrize("style", ["compact", "ascii"])
def test_strings_at_every_length_and_position(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = list(_strings())
    ensure_ascii = style == "ascii"
    # as values, as keys (a key and a value per document), and as names that only differ at the end
    docs: list[Doc] = [json.dumps({"v": text, text: "k"}, ensure_ascii=ensure_ascii) for text in texts]
    docs += [json.dumps({"n" * n + "1": 1, "n" * n + "2": 2}) for n in range(0, 40)]
    assert cdecode.decode(docs) is not None, cdecode.last_refusal()
    with monkeypatch.context() as patch:
        patch.setenv(fl.PURE_PYTHON_ENV, "1")
        expected = fl.decode_lines(docs, source="s", indices=range(len(docs)), errors=ErrorLog())
    actual = fl.decode_lines(docs, source="s", indices=range(len(docs)), errors=ErrorLog())
    assert actual.equals(expected)
    assert _built([docs[i : i + 7] for i in range(0, len(docs), 7)]) == _plain(cdecode.decode_sparse(docs))


@native
@pytest.mark.parametrize(
    "key_pairs",
    [[("k" * n + "a", "k" * n + "a")] for n in range(0, 20)] + [[(f"key{i}", f"key{i}") for i in range(14)]],
)
def test_duplicate_keys_of_every_length_are_refused(key_pairs: list[tuple[str, str]]) -> None:
    members = ", ".join(f'"{first}": 1, "{second}": 2' for first, second in key_pairs)
    assert cdecode.decode_sparse(["{" + members + "}"]) is None
    assert "duplicate key" in cdecode.last_refusal()


# ---------------------------------------------------------------- EVTX small files through the builder


def _by_name(batch: pa.RecordBatch) -> dict[str, list[object]]:
    return {name: batch.column(name).to_pylist() for name in batch.schema.names}


def _problems(errors: ErrorLog) -> list[tuple[str, int | None, str, str]]:
    return [(p.source, p.offset, p.kind, p.message) for p in errors.examples]


@native
@pytest.mark.shared
@pytest.mark.parametrize("batch_size", [50, 65_536])
def test_sparse_small_files_equal_dense_ones(evtx_samples: Path, tmp_path: Path, batch_size: int) -> None:
    from test_evtx_small_files import mixed_small_files

    paths = mixed_small_files(evtx_samples, tmp_path)
    reader = EvtxReader()
    dense_errors, sparse_errors = ErrorLog(), ErrorLog()
    dense = list(reader.read_small_files(paths, batch_size=batch_size, errors=dense_errors))
    sparse = list(reader.read_small_files(paths, batch_size=batch_size, errors=sparse_errors, sparse=True))
    assert [counts for _, counts in sparse] == [counts for _, counts in dense]
    assert all(rows > 0 for _, counts in sparse for _, rows in counts)  # no file without records
    for (got, _), (expected, _) in zip(sparse, dense, strict=True):
        assert got.to_batch().equals(expected)
    assert _problems(sparse_errors) == _problems(dense_errors)
    assert len(_problems(sparse_errors)) == 2


@native
def test_refused_block_is_decoded_the_python_way() -> None:
    """A file whose records the builder refuses: the rows before go out, then that file's, reported."""
    files: dict[str, list[str]] = {
        "a.evtx": [_evtx(1, Image="a"), _evtx(1, Image="b")],
        "bad.evtx": [
            _evtx(4688, NewProcessName="x"),
            '{"Event": {"System": {"EventID": 1}, "x": 1, "x": 2}}',
        ],
        "broken.evtx": [_evtx(7, ImageLoaded="y"), '{"Event": '],
        "c.evtx": [_evtx(11, TargetFilename="z")],
    }

    def blocks_of(path: str) -> Iterator[tuple[list[str], Sequence[int]]]:
        yield files[path], range(len(files[path]))

    builder = fl.sparse_builder()
    assert builder is not None
    errors = ErrorLog()
    blocks = list(evtx_reader._built_blocks(builder, blocks_of, list(files), 1000, errors))
    assert [counts for _, counts in blocks] == [
        [("a.evtx", 2)],
        [("bad.evtx", 2)],
        [("broken.evtx", 2)],
        [("c.evtx", 1)],
    ]
    expected_errors = ErrorLog()
    expected = [
        fl.decode_lines(docs, source=path, indices=range(len(docs)), errors=expected_errors)
        for path, docs in files.items()
    ]
    assert _by_name(merge_batches([b.to_batch() for b, _ in blocks])) == _by_name(merge_batches(expected))
    assert _problems(errors) == _problems(expected_errors)
    assert [p.source for p in errors.examples] == ["broken.evtx"]


def _big_evtx(samples: Path, target: Path, min_bytes: int) -> Path:
    """One EVTX file of at least ``min_bytes``: the samples' chunks under one header (chunks stand alone)."""
    import struct
    import zlib

    header = b""
    chunks: list[bytes] = []
    size = 0x1000
    for path in sorted(samples.rglob("*.evtx")):
        data = path.read_bytes()
        if not data.startswith(b"ElfFile\x00"):
            continue
        header = header or data[:0x1000]
        for offset in range(0x1000, len(data) - 0xFFFF, 0x10000):
            if data.startswith(b"ElfChnk\x00", offset):
                chunks.append(data[offset : offset + 0x10000])
                size += 0x10000
        if size >= min_bytes:
            break
    head = bytearray(header)
    struct.pack_into("<H", head, 0x2A, len(chunks))
    struct.pack_into("<I", head, 0x7C, zlib.crc32(bytes(head[:120])))
    target.write_bytes(bytes(head) + b"".join(chunks))
    return target


@native
@pytest.mark.shared
@pytest.mark.parametrize("sparse", [False, True])
def test_a_big_file_among_small_ones_is_streamed(evtx_samples: Path, tmp_path: Path, sparse: bool) -> None:
    big = _big_evtx(evtx_samples, tmp_path / "big.evtx", evtx_reader._SMALL_FILE + 1)
    small = sorted(str(p) for p in evtx_samples.rglob("*.evtx"))[:3]
    paths = [small[0], str(big), *small[1:]]
    reader = EvtxReader()
    assert not reader.small(str(big))
    one_by_one_errors, together_errors = ErrorLog(), ErrorLog()
    one_by_one = [b for path in paths for b in reader.read(path, batch_size=500, errors=one_by_one_errors)]
    blocks = list(reader.read_small_files(paths, batch_size=500, errors=together_errors, sparse=sparse))
    batches = [b.to_batch() if sparse else b for b, _ in blocks]
    assert _by_name(merge_batches(batches)) == _by_name(merge_batches(one_by_one))
    assert _problems(together_errors) == _problems(one_by_one_errors)
    records = sum(b.num_rows for b in one_by_one)
    assert records > 2_000 and len(blocks) >= records // 1_000  # blocks of ~500 records, not one file
    assert all(500 <= b.num_rows < 1_000 for b in batches[:-1])
