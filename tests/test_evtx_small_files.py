"""Small EVTX files decoded together give exactly the batches of reading them one by one."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import merge_batches
from sigma_arrow.readers.evtx import EvtxReader


def _by_name(batch: pa.RecordBatch) -> dict[str, list[object]]:
    return {name: batch.column(name).to_pylist() for name in batch.schema.names}


def mixed_small_files(evtx_samples: Path, tmp_path: Path) -> list[str]:
    """12 attack samples with a non-EVTX file and a truncated one among them."""
    files = sorted(str(p) for p in evtx_samples.rglob("*.evtx"))[:12]
    garbage = tmp_path / "garbage.evtx"
    garbage.write_bytes(b"not an evtx file")
    truncated = tmp_path / "truncated.evtx"
    truncated.write_bytes(Path(files[0]).read_bytes()[:5000])
    return [*files[:4], str(garbage), *files[4:8], str(truncated), *files[8:]]


def _problems(errors: ErrorLog) -> list[tuple[str, int | None, str, str]]:
    return [(p.source, p.offset, p.kind, p.message) for p in errors.examples]


@pytest.mark.shared
@pytest.mark.parametrize("batch_size", [50, 65_536])
def test_read_small_files_equals_reading_each_file(
    evtx_samples: Path, tmp_path: Path, batch_size: int
) -> None:
    paths = mixed_small_files(evtx_samples, tmp_path)
    reader = EvtxReader()
    assert all(reader.small(path) for path in paths)

    one_by_one_errors = ErrorLog()
    one_by_one = [
        batch
        for path in paths
        for batch in reader.read(path, batch_size=batch_size, errors=one_by_one_errors)
    ]
    together_errors = ErrorLog()
    blocks = list(reader.read_small_files(paths, batch_size=batch_size, errors=together_errors))

    expected = _by_name(merge_batches(one_by_one))
    got = _by_name(merge_batches([batch for batch, _ in blocks]))
    assert got == expected
    assert _problems(together_errors) == _problems(one_by_one_errors)
    assert len(_problems(together_errors)) == 2  # the garbage file and the truncated one
    counts: dict[str, int] = {}
    for _, block_counts in blocks:
        for source, rows in block_counts:
            counts[source] = counts.get(source, 0) + rows
    assert counts == {path: expected["__source"].count(path) for path in set(expected["__source"])}
    if batch_size == 50:
        assert len(blocks) > 1 and all(batch.num_rows >= 50 for batch, _ in blocks[:-1])


def _damaged_files(evtx_samples: Path, tmp_path: Path) -> dict[str, Path]:
    """Files the small-files fast path hands to the careful one; all but the gzip one have problems."""
    source = min(
        (p for p in evtx_samples.rglob("*.evtx") if p.read_bytes().count(b"ElfChnk\x00") >= 3),
        key=lambda p: p.stat().st_size,
    )
    data = source.read_bytes()
    damaged = bytearray(data)
    start = 0x1000 + 0x10000  # the second chunk: damage its string/template area
    for offset in range(start + 600, start + 3000, 7):
        damaged[offset] ^= 0xFF
    files = {
        "corrupt chunk": (tmp_path / "corrupt.evtx", bytes(damaged)),
        "gzip content, .evtx name": (tmp_path / "packed.evtx", gzip.compress(data)),
        "ends inside a chunk": (tmp_path / "cut.evtx", data[: 0x1000 + 0x10000 + 20000]),
        "ends at a chunk boundary": (tmp_path / "short.evtx", data[: 0x1000 + 0x10000]),
        "empty": (tmp_path / "empty.evtx", b""),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {name: path for name, (path, _) in files.items()}


@pytest.mark.shared
def test_damaged_small_files_are_reported_as_read_reports_them(evtx_samples: Path, tmp_path: Path) -> None:
    good = sorted(str(p) for p in evtx_samples.rglob("*.evtx"))[:3]
    damaged = _damaged_files(evtx_samples, tmp_path)
    paths = [good[0], *(str(p) for p in damaged.values()), *good[1:]]
    reader = EvtxReader()
    one_by_one_errors = ErrorLog()
    one_by_one = [
        batch for path in paths for batch in reader.read(path, batch_size=64, errors=one_by_one_errors)
    ]
    together_errors = ErrorLog()
    blocks = list(reader.read_small_files(paths, batch_size=64, errors=together_errors))

    assert _by_name(merge_batches([batch for batch, _ in blocks])) == _by_name(merge_batches(one_by_one))
    problems = _problems(together_errors)
    assert problems == _problems(one_by_one_errors)
    reported = {source for source, *_ in problems}
    for name, path in damaged.items():
        assert (str(path) in reported) == (name != "gzip content, .evtx name"), name
    sources = merge_batches(one_by_one).column("__source").to_pylist()
    assert str(damaged["gzip content, .evtx name"]) in sources  # read through a decompressed copy
    assert str(damaged["corrupt chunk"]) in sources  # its sound chunks are still read
