"""The EVTX reader gives the same blocks and problem reports with the native parser as without it.

``SIGMA_ARROW_PURE_PYTHON_EVTX=1`` switches the native parser off (the Rust parser reads everything):
each case is read both ways, small files whole, big ones (4 MB or more) 64 chunks per native call,
sound and damaged, and the blocks (as decoded columns, with their cuts) and problems must be equal.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers import evtx as evtx_reader
from sigma_arrow.readers.evtx import EvtxReader

pytest.importorskip("sigma_arrow._cevtx")

FILE_HEADER = 0x1000
CHUNK = 0x10000


def big_file(samples: Path, path: Path, chunks: int) -> Path:
    """An EVTX file of the samples' first ``chunks`` used chunks (one after another)."""
    found: list[bytes] = []
    header = b""
    for file in sorted(samples.rglob("*.evtx")):
        data = file.read_bytes()
        header = header or data[:FILE_HEADER]
        found.extend(
            data[start : start + CHUNK]
            for start in range(FILE_HEADER, len(data) - CHUNK + 1, CHUNK)
            if data[start : start + 8] == b"ElfChnk\x00"
        )
        if len(found) >= chunks:
            break
    head = bytearray(header)
    struct.pack_into("<H", head, 0x2A, chunks)
    struct.pack_into("<I", head, 0x7C, zlib.crc32(bytes(head[:120])))
    path.write_bytes(bytes(head) + b"".join(found[:chunks]))
    return path


def damage_chunk(path: Path, chunk: int) -> Path:
    """Flip bytes in a chunk's records (its checksums then disagree: the native parser declines)."""
    data = bytearray(path.read_bytes())
    start = FILE_HEADER + chunk * CHUNK
    for offset in range(start + 700, start + 3000, 11):
        data[offset] ^= 0x5A
    damaged = path.with_name(f"damaged-{chunk}-{path.name}")
    damaged.write_bytes(bytes(data))
    return damaged


def read_all(
    paths: list[str], batch_size: int, sparse: bool
) -> tuple[list[tuple[dict[str, list[Any]], list[tuple[str, int]]]], list[tuple[Any, ...]]]:
    """Every block (as columns) with its counts, and the problems reported."""
    errors = ErrorLog()
    blocks = []
    for batch, counts in EvtxReader().read_small_files(
        paths, batch_size=batch_size, errors=errors, sparse=sparse
    ):
        dense = batch.to_batch() if isinstance(batch, SparseBatch) else batch
        columns = {name: dense.column(name).to_pylist() for name in sorted(dense.schema.names)}
        blocks.append((columns, list(counts)))
    problems = [(p.source, p.offset, p.kind, p.message) for p in errors.examples]
    return blocks, problems


CASES = [
    # (name, batch_size, sparse)
    ("small files", 500, False),
    ("small files", 37, True),
    ("big file", 1000, True),
    ("big file", 999, False),
    ("big file, chunk 70 damaged", 1000, True),
    ("big file, chunk 3 damaged", 250, False),
]


@pytest.mark.shared
@pytest.mark.parametrize(("case", "batch_size", "sparse"), CASES)
def test_native_and_rust_paths_give_the_same_blocks(
    evtx_samples: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    batch_size: int,
    sparse: bool,
) -> None:
    if case == "small files":
        paths = [str(p) for p in sorted(evtx_samples.rglob("*.evtx"))[::9]]
    else:
        big = big_file(evtx_samples, tmp_path / "big.evtx", 140)  # 9 MB: three native calls
        if "damaged" in case:
            big = damage_chunk(big, int(case.split("chunk ")[1].split()[0]))
        paths = [str(big)]
        assert EvtxReader().small(paths[0], any_size=True) and not EvtxReader().small(paths[0])
    native = read_all(paths, batch_size, sparse)
    monkeypatch.setenv(evtx_reader.PURE_PYTHON_ENV, "1")
    assert not evtx_reader.native_evtx_enabled()
    rust = read_all(paths, batch_size, sparse)
    assert native[1] == rust[1]
    assert [counts for _, counts in native[0]] == [counts for _, counts in rust[0]]
    assert native[0] == rust[0]
    if "damaged" in case:
        assert native[1], "the damaged chunk is reported"


def read_one_by_one(paths: list[str], batch_size: int) -> tuple[list[dict[str, list[Any]]], list[Any]]:
    """``EvtxReader.read`` of each path: its batches (as columns) and the problems reported."""
    errors = ErrorLog()
    batches = [
        {name: batch.column(name).to_pylist() for name in sorted(batch.schema.names)}
        for path in paths
        for batch in EvtxReader(workers=1).read(path, batch_size=batch_size, errors=errors)
    ]
    return batches, [(p.source, p.offset, p.kind, p.message) for p in errors.examples]


@pytest.mark.shared
@pytest.mark.parametrize("batch_size", [64, 1000])
def test_read_gives_the_same_batches_with_the_native_parser(
    evtx_samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    samples = sorted(evtx_samples.rglob("*.evtx"))
    big = big_file(evtx_samples, tmp_path / "big.evtx", 70)
    packed = tmp_path / "packed.evtx.gz"
    packed.write_bytes(gzip.compress(samples[5].read_bytes()))
    garbage = tmp_path / "garbage.evtx"
    garbage.write_bytes(b"not an evtx file")
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(big.read_bytes()[: FILE_HEADER + 3 * CHUNK + 999])
    paths = [
        *(str(p) for p in samples[:4]),
        str(big),
        str(damage_chunk(big, 66)),
        str(packed),
        str(garbage),
        str(cut),
    ]
    native = read_one_by_one(paths, batch_size)
    monkeypatch.setenv(evtx_reader.PURE_PYTHON_ENV, "1")
    rust = read_one_by_one(paths, batch_size)
    assert native[1] == rust[1]
    assert len(native[1]) >= 3  # the damaged chunk, the garbage file, the cut file
    assert native[0] == rust[0]
