"""Sparse Parquet scans: the native chunk decoder and ``ParquetReader(sparse=True)`` give what Arrow gives.

``_cdict.decode_chunk`` is checked column chunk by column chunk against pyarrow's own dictionary read,
over a table of writer settings (it must decline, returning None, every layout it does not handle);
the reader's SparseBatches against the dictionary reader's RecordBatches over a table of archive
shapes; and the engine's match records against a plain scan's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sigma_arrow.engine import Engine
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.loader import load_rules
from sigma_arrow.readers import parquet
from sigma_arrow.readers.parquet import ParquetReader, resolve
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN
from sigma_arrow.sinks.text import encode_jsonl
from sigma_arrow.workers import coalesce

pytestmark = pytest.mark.skipif(parquet._cdict is None, reason="native extension not built")

ROOT = Path(__file__).resolve().parents[1]


def column_values(rows: int, seed: int) -> dict[str, list[str | None]]:
    """Columns of every kind of sparseness: dense, sparse, runs, unique values, all null, unicode, empty."""
    rng = np.random.default_rng(seed)
    pick = rng.random(rows)
    return {
        "Dense": [f"v{i % 7}" for i in range(rows)],
        "Sparse": [f"s{i % 3}" if p < 0.05 else None for i, p in enumerate(pick)],
        "Half": [("ÜnïcodeCase", "", "x" * 90)[i % 3] if p < 0.5 else None for i, p in enumerate(pick)],
        "Unique": [f"value-{i}" if i % 4 else None for i in range(rows)],
        "Runs": [None if (i // 100) % 2 else "run" for i in range(rows)],
        "Empty": [None] * rows,
    }


def write(path: Path, rows: int = 3000, *, required: bool = False, **options: Any) -> None:
    values = column_values(rows, seed=rows)
    fields = [pa.field(name, pa.string(), nullable=True) for name in values]
    if required:
        fields.append(pa.field("Required", pa.string(), nullable=False))
        values["Required"] = [f"r{i % 11}" for i in range(rows)]
    pq.write_table(pa.table(values, schema=pa.schema(fields)), path, **options)


# (name, writer options, whether the chunks of string columns with values are decoded natively)
WRITERS: list[tuple[str, dict[str, Any], bool]] = [
    ("snappy", {}, True),
    ("uncompressed", {"compression": "none"}, True),
    ("small pages", {"data_page_size": 512, "row_group_size": 1000}, True),
    ("required column", {"required": True}, True),
    ("one row groups", {"row_group_size": 1}, True),
    ("zstd", {"compression": "zstd"}, parquet._zstd_ready()),
    ("gzip", {"compression": "gzip"}, False),
    ("data page v2", {"data_page_version": "2.0"}, False),
    ("no dictionary", {"use_dictionary": False}, True),
    ("plain fallback pages", {"dictionary_pagesize_limit": 256, "data_page_size": 2048}, True),
]


@pytest.mark.parametrize(("name", "options", "native"), WRITERS, ids=[w[0] for w in WRITERS])
def test_decode_chunk_matches_arrow(tmp_path: Path, name: str, options: dict[str, Any], native: bool) -> None:
    path = tmp_path / "t.parquet"
    write(path, rows=300 if name == "one row groups" else 3000, **options)
    metadata = pq.ParquetFile(path).metadata
    names = pq.ParquetFile(path).schema_arrow.names
    arrow = pq.ParquetFile(path, read_dictionary=names)
    decoded = declined = 0
    with open(path, "rb") as handle:
        for group in range(min(metadata.num_row_groups, 20)):
            row_group = metadata.row_group(group)
            table = arrow.read_row_group(group)
            for i in range(row_group.num_columns):
                chunk = row_group.column(i)
                start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
                data = os.pread(handle.fileno(), chunk.total_compressed_size, start)
                codec = parquet._NATIVE_CODECS.get(chunk.compression, 9)  # 9: a codec it does not know
                found = parquet._cdict.decode_chunk(
                    data, row_group.num_rows, metadata.schema.column(i).max_definition_level, codec
                )
                if found is None:
                    declined += 1
                    continue
                decoded += 1
                rows, codes, offsets, values = found
                dictionary = pa.Array.from_buffers(
                    pa.string(), len(offsets) // 4 - 1, [None, pa.py_buffer(offsets), pa.py_buffer(values)]
                )
                expected = table.column(i).combine_chunks()
                valid = np.flatnonzero(expected.is_valid().to_numpy(zero_copy_only=False))
                got_rows = np.arange(row_group.num_rows) if rows is None else np.frombuffer(rows, np.int32)
                assert got_rows.tolist() == valid.tolist(), (name, chunk.path_in_schema)
                assert dictionary.equals(expected.dictionary), (name, chunk.path_in_schema)
                got_codes = np.frombuffer(codes, np.int32)
                assert got_codes.tolist() == expected.indices.to_numpy(zero_copy_only=False)[valid].tolist()
    if native:
        assert decoded > 0 and (declined == 0 or name == "one row groups"), (decoded, declined)
    else:
        assert decoded == 0, name


def test_decode_chunk_declines_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    # A dictionary page limit this small makes the writer fall back to plain pages in the chunk.
    write(path, rows=5000, dictionary_pagesize_limit=256)
    metadata = pq.ParquetFile(path).metadata
    chunk = metadata.row_group(0).column(3)  # Unique
    with open(path, "rb") as handle:
        data = os.pread(handle.fileno(), chunk.total_compressed_size, chunk.dictionary_page_offset)
    found = parquet._cdict.decode_chunk(data, 5000, 1, True)
    assert found is not None and len(found[1]) // 4 == 3750  # the chunk itself decodes
    for broken in (data[:10], data[: len(data) // 2], b"", bytes(64), data[:1] + bytes(40) + data[41:]):
        assert parquet._cdict.decode_chunk(broken, 5000, 1, True) is None
    assert parquet._cdict.decode_chunk(data, 4999, 1, True) is None  # rows disagree with the pages


# ---------------------------------------------------------------- the reader


def dense(batches: list[Any]) -> pa.Table:
    """Batches (RecordBatches or SparseBatches) as one table of decoded strings."""
    out = []
    for batch in batches:
        record = (
            batch.to_batch() if isinstance(batch, SparseBatch) else SparseBatch.from_batch(batch).to_batch()
        )
        out.append(pa.Table.from_batches([record]))
    return pa.concat_tables(out, promote_options="permissive")


def read(path: Path, *, sparse: bool, batch_size: int, **options: Any) -> list[Any]:
    errors = ErrorLog()
    reader = ParquetReader(dictionary=True, sparse=sparse, **options)
    batches = list(reader.read(str(path), batch_size=batch_size, errors=errors))
    assert errors.total == 0, errors.examples
    return batches


def hive(tmp_path: Path) -> Path:
    for host in ("a", "b"):
        folder = tmp_path / "archive" / f"host={host}"
        folder.mkdir(parents=True)
        write(folder / "part.parquet", rows=700, row_group_size=300)
    return tmp_path / "archive"


def own_reserved(tmp_path: Path) -> Path:
    path = tmp_path / "converted.parquet"
    table = pa.table(
        {
            "EventID": ["1", "4688", None, "1"] * 50,
            SOURCE_COLUMN: ["a.evtx", None, "b.evtx", "a.evtx"] * 50,
            INDEX_COLUMN: pa.array([7, 8, None, 9] * 50, pa.int64()),
        }
    )
    pq.write_table(table, path, row_group_size=64)
    return path


def nested(tmp_path: Path) -> Path:
    path = tmp_path / "nested.parquet"
    event = {"System": {"EventID": "1", "Channel": "Security"}, "EventData": {"Image": "a.exe"}}
    other = {"System": {"EventID": "2", "Channel": None}, "EventData": {"Image": None}}
    pq.write_table(
        pa.table({"Event": [event, other] * 50, "Extra": ["x", None] * 50}), path, row_group_size=40
    )
    return path


def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.parquet"
    values = column_values(2000, seed=5)
    table = pa.table(values).append_column("Number", pa.array(range(2000), pa.int64()))
    pq.write_table(table, path, row_group_size=500, compression={"Dense": "zstd", "Sparse": "snappy"})
    return path


def flat(tmp_path: Path, **options: Any) -> Path:
    path = tmp_path / "flat.parquet"
    write(path, **options)
    return path


# (name, archive maker, batch size): one big group; small groups merged by the reader; groups bigger
# than the batch (read by Arrow); hive keys; the file's own reserved columns; nested columns; columns
# of other types and codecs; plain fallback pages.
ARCHIVES: list[tuple[str, Any, int]] = [
    ("one group", lambda p: flat(p), 4096),
    ("small groups merged", lambda p: flat(p, row_group_size=256), 4096),
    ("groups over the batch", lambda p: flat(p, row_group_size=1000), 300),
    ("many groups", lambda p: flat(p, row_group_size=1000), 1000),
    ("hive partitions", hive, 4096),
    ("own source and index", own_reserved, 1000),
    ("nested", nested, 1000),
    ("mixed types and codecs", mixed, 1000),
    ("plain fallback pages", lambda p: flat(p, dictionary_pagesize_limit=256), 4096),
]


@pytest.mark.parametrize(("name", "make", "batch_size"), ARCHIVES, ids=[a[0] for a in ARCHIVES])
def test_sparse_reader_equals_dictionary_reader(
    tmp_path: Path, name: str, make: Any, batch_size: int
) -> None:
    path = make(tmp_path)
    expected = read(path, sparse=False, batch_size=batch_size)
    got = read(path, sparse=True, batch_size=batch_size)
    assert [b.num_rows for b in got] == [b.num_rows for b in expected], name
    got_table, expected_table = dense(got), dense(expected)
    assert got_table.schema == expected_table.schema
    assert got_table.equals(expected_table), name
    for batch, reference in zip(got, expected, strict=True):
        if isinstance(batch, SparseBatch):
            for field in batch.schema:  # the same (dictionary) types as the dictionary reader's
                assert field.type == reference.schema.field(field.name).type


def test_sparse_reader_gives_sparse_batches_for_flat_strings(tmp_path: Path) -> None:
    batches = read(flat(tmp_path, row_group_size=1000), sparse=True, batch_size=1000)
    assert len(batches) == 3 and all(isinstance(b, SparseBatch) for b in batches)
    rows, values = batches[1].sparse_column("Sparse")
    assert rows is not None and len(rows) == len(values) < 200
    assert batches[1].column(INDEX_COLUMN).to_pylist() == list(range(1000, 2000))


# ---------------------------------------------------------------- engine answers


def scan_jsonl(path: Path, engine: Engine, *, sparse: bool, dictionary: bool, batch_size: int) -> bytes:
    filesystem, files = resolve(str(path))
    reader = ParquetReader(dictionary=dictionary, sparse=sparse)
    batches = reader.read_files(
        filesystem, [(f, None) for f in files], batch_size=batch_size, errors=ErrorLog()
    )
    out = b""
    for batch in coalesce(batches, batch_size, sparse=True):
        out += encode_jsonl(engine.matches(batch))
    return out


@pytest.mark.parametrize(("group_rows", "batch_size"), [(64, 256), (500, 1000), (1000, 1000), (700, 300)])
def test_engine_matches_equal_plain_scan(tmp_path: Path, group_rows: int, batch_size: int) -> None:
    from test_parquet_dictionary import write_archive

    path = tmp_path / "events.parquet"
    write_archive(path, 2000, group_rows)
    engine = Engine(load_rules([ROOT / "rules"]))
    plain = scan_jsonl(path, engine, sparse=False, dictionary=False, batch_size=batch_size)
    native = scan_jsonl(path, engine, sparse=True, dictionary=True, batch_size=batch_size)
    assert plain.count(b"\n") > 100
    assert native == plain


def test_sparse_reader_through_another_filesystem(tmp_path: Path) -> None:
    """Filesystems other than the local one (object stores) read a row group's chunks in one request."""
    import pyarrow.fs as pafs

    flat(tmp_path, row_group_size=1000)
    subtree = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    expected = read(tmp_path / "flat.parquet", sparse=False, batch_size=1000)
    errors = ErrorLog()
    reader = ParquetReader(dictionary=True, sparse=True, filesystem=subtree)
    got = list(reader.read("flat.parquet", batch_size=1000, errors=errors))
    assert errors.total == 0, errors.examples
    assert all(isinstance(b, SparseBatch) for b in got)
    assert dense(got).drop_columns([SOURCE_COLUMN]).equals(dense(expected).drop_columns([SOURCE_COLUMN]))


def test_corrupt_chunks_are_reported_as_arrow_reports_them(tmp_path: Path) -> None:
    path = flat(tmp_path, row_group_size=1000)
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(3)  # Unique, in the second group
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset + chunk.total_compressed_size // 2
    data[start : start + 64] = bytes(range(64))
    path.write_bytes(bytes(data))
    outcomes = []
    for sparse in (False, True):
        errors = ErrorLog()
        reader = ParquetReader(dictionary=True, sparse=sparse)
        rows = sum(b.num_rows for b in reader.read(str(path), batch_size=1000, errors=errors))
        outcomes.append((rows, errors.total))
    assert outcomes[1] == outcomes[0]
    assert outcomes[0][1] == 1  # the bad group is reported, not raised


@pytest.mark.shared
@pytest.mark.slow
def test_corpus_matches_equal_plain_scan(
    tmp_path: Path, sigma_rule_dirs: list[Path], evtx_samples: Path
) -> None:
    """The EVTX attack samples as Parquet: the whole corpus's matches from a sparse scan and a plain one."""
    from test_parquet_dictionary import write_samples_parquet

    path = write_samples_parquet(tmp_path, evtx_samples)
    engine = Engine(load_rules(sigma_rule_dirs))
    plain = scan_jsonl(path, engine, sparse=False, dictionary=False, batch_size=8192)
    native = scan_jsonl(path, engine, sparse=True, dictionary=True, batch_size=8192)
    assert plain.count(b"\n") > 1000
    assert native == plain


def _some_chunks(tmp_path: Path) -> list[tuple[bytes, int, int]]:
    path = tmp_path / "fuzz.parquet"
    write(
        path, rows=600, required=True, row_group_size=600, data_page_size=256, dictionary_pagesize_limit=512
    )
    metadata = pq.ParquetFile(path).metadata
    row_group = metadata.row_group(0)
    found = []
    with open(path, "rb") as handle:
        for i in range(row_group.num_columns):
            chunk = row_group.column(i)
            data = os.pread(handle.fileno(), chunk.total_compressed_size, chunk.dictionary_page_offset)
            found.append((data, row_group.num_rows, metadata.schema.column(i).max_definition_level))
    return found


def test_decode_chunk_survives_damaged_bytes(tmp_path: Path) -> None:
    """Random damage to real chunks: None, or buffers that hold together; never a crash."""
    rng = np.random.default_rng(7)
    for data, rows, max_def in _some_chunks(tmp_path):
        for _ in range(150):
            damaged = bytearray(data)
            for position in rng.integers(0, len(damaged), size=int(rng.integers(1, 6))):
                damaged[position] = int(rng.integers(0, 256))
            cut = len(damaged) if rng.random() < 0.7 else int(rng.integers(0, len(damaged)))
            found = parquet._cdict.decode_chunk(bytes(damaged[:cut]), rows, max_def, True)
            if found is None:
                continue
            set_rows, codes, offsets, values = found
            n_codes = len(codes) // 4
            assert (rows if set_rows is None else len(set_rows) // 4) == n_codes
            entries = len(offsets) // 4 - 1
            assert all(0 <= c < entries for c in np.frombuffer(codes, np.int32))
            ends = np.frombuffer(offsets, np.int32)
            assert ends[0] == 0 and ends[-1] == len(values) and bool(np.all(np.diff(ends) >= 0))
