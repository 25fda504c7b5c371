"""Small EVTX files decoded together give exactly the batches of reading them one by one."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import merge_batches
from sigma_arrow.readers.evtx import EvtxReader


def _by_name(batch: pa.RecordBatch) -> dict[str, list[object]]:
    return {name: batch.column(name).to_pylist() for name in batch.schema.names}


def _problems(errors: ErrorLog) -> list[tuple[str, int | None, str, str]]:
    return [(p.source, p.offset, p.kind, p.message) for p in errors.examples]


@pytest.mark.shared
@pytest.mark.parametrize("batch_size", [50, 65_536])
def test_read_small_files_equals_reading_each_file(
    evtx_samples: Path, tmp_path: Path, batch_size: int
) -> None:
    files = sorted(str(p) for p in evtx_samples.rglob("*.evtx"))[:12]
    garbage = tmp_path / "garbage.evtx"
    garbage.write_bytes(b"not an evtx file")
    truncated = tmp_path / "truncated.evtx"
    truncated.write_bytes(Path(files[0]).read_bytes()[:5000])
    paths = [*files[:4], str(garbage), *files[4:8], str(truncated), *files[8:]]
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
