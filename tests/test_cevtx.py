"""The native EVTX parser (sigma_arrow._cevtx) gives the Rust parser's JSON record for record, or declines.

The ``evtx`` package (pyevtx-rs) is the oracle: for every file the native parser takes, each record's
JSON must parse (with ``object_pairs_hook=list``: key order and duplicates count) to the same value as
the Rust parser's, and the Rust parser must read that file without a problem. Damaged inputs
(truncations, seeded byte flips, with and without repaired checksums) must never crash it: it either
declines (None) or gives exactly the Rust parser's records.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import evtx
import pytest

_cevtx = pytest.importorskip("sigma_arrow._cevtx")

FILE_HEADER = 0x1000
CHUNK = 0x10000


def rust_records(data: bytes) -> tuple[list[str], list[str]]:
    """The Rust parser's records' JSON of ``data`` and the problems it raised on the way."""
    records: list[str] = []
    problems: list[str] = []
    try:
        iterator = evtx.PyEvtxParser(io.BytesIO(data), number_of_threads=1).records_json()
    except (OSError, RuntimeError, ValueError) as exc:
        return records, [str(exc)]
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            break
        except (OSError, RuntimeError, ValueError) as exc:
            problems.append(str(exc))
            continue
        records.append(record["data"])
    return records, problems


def parsed(texts: list[str]) -> list[Any]:
    """Records' JSON parsed with key order and duplicate keys kept."""
    return [json.loads(text, object_pairs_hook=list) for text in texts]


def from_file(data: bytes, directory: Path) -> list[str] | None:
    """``records_json_fd`` of ``data`` written to a file (read by descriptor, a chunk at a time)."""
    path = directory / "case.evtx"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return _cevtx.records_json_fd(fd, len(data))
    finally:
        os.close(fd)


def disagreement(data: bytes) -> str | None:
    """Why the native parser's answer for ``data`` is wrong (None: it declined or agrees)."""
    ours = _cevtx.records_json(data)
    if ours is None:
        return None
    theirs, problems = rust_records(data)
    if problems:
        return f"took a file the Rust parser reports problems on: {problems[0]}"
    if len(ours) != len(theirs):
        return f"{len(ours)} records, the Rust parser gives {len(theirs)}"
    for index, (mine, rust) in enumerate(zip(ours, theirs, strict=True)):
        if mine != rust and parsed([mine]) != parsed([rust]):
            return f"record {index} differs:\n  native {mine[:400]}\n  rust   {rust[:400]}"
    return None


def corpus(root: Path) -> list[Path]:
    return sorted(root.rglob("*.evtx"))


@pytest.mark.shared
@pytest.mark.parametrize("fixture", ["evtx_samples", "regression_data"])
def test_native_records_equal_the_rust_parsers(fixture: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(fixture)
    files = corpus(root)
    assert files
    declined: Counter[str] = Counter()
    wrong: list[str] = []
    byte_identical = records = 0
    for path in files:
        data = path.read_bytes()
        ours = _cevtx.records_json(data)
        if ours is None:
            declined[_cevtx.last_refusal()] += 1
            continue
        theirs, problems = rust_records(data)
        assert not problems, f"{path}: the native parser took a file the Rust parser stumbles on"
        records += len(theirs)
        if ours == theirs:
            byte_identical += len(ours)
        elif len(ours) != len(theirs) or parsed(ours) != parsed(theirs):
            wrong.append(str(path))
    print(
        f"\n{fixture}: {len(files)} files, {records} records, {byte_identical} byte-identical, "
        f"{sum(declined.values())} files declined {dict(declined)}"
    )
    assert not wrong, f"native JSON differs from the Rust parser's in {wrong[:5]}"
    assert not declined, f"declined files: {dict(declined)}"


@pytest.mark.shared
def test_reading_from_a_file_descriptor_equals_reading_bytes(evtx_samples: Path) -> None:
    for path in corpus(evtx_samples)[:40]:
        fd = os.open(path, os.O_RDONLY)
        try:
            from_fd = _cevtx.records_json_fd(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        assert from_fd == _cevtx.records_json(path.read_bytes())


def _with_unused_chunks(evtx_samples: Path) -> tuple[bytes, int]:
    """An attack sample whose file has unused (all-zero) chunks after its last one, and its chunk count."""
    for path in corpus(evtx_samples):
        data = path.read_bytes()
        count = struct.unpack_from("<H", data, 0x2A)[0]
        if len(data) > FILE_HEADER + (count + 1) * CHUNK:
            return data, count
    pytest.skip("no sample with unused chunks")


@pytest.mark.shared
@pytest.mark.parametrize(
    ("case", "declined"),
    [("holes", False), ("zeros written", False), ("a byte in a hole", True), ("a chunk in a hole", False)],
)
def test_unused_chunks_read_as_holes_or_zeros(
    evtx_samples: Path, tmp_path: Path, case: str, declined: bool
) -> None:
    data, count = _with_unused_chunks(evtx_samples)
    used = FILE_HEADER + count * CHUNK
    path = tmp_path / "sparse.evtx"
    with path.open("wb") as out:
        out.write(data[:used] if case != "zeros written" else data)
        out.truncate(len(data))  # the unused chunks: a hole where the file system has them
        if case == "a byte in a hole":
            out.seek(used + CHUNK + 1000)
            out.write(b"\x01")
        elif case == "a chunk in a hole":
            out.seek(used + CHUNK)
            out.write(data[FILE_HEADER : FILE_HEADER + CHUNK])
    expected = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        from_fd = _cevtx.records_json_fd(fd, len(expected))
    finally:
        os.close(fd)
    assert from_fd == _cevtx.records_json(expected)
    assert (from_fd is None) is declined
    if from_fd is not None:
        assert disagreement(expected) is None


def _some_files(evtx_samples: Path, count: int) -> list[bytes]:
    """``count`` attack samples of different kinds (spread over the sorted list)."""
    files = corpus(evtx_samples)
    step = max(1, len(files) // count)
    return [files[i].read_bytes() for i in range(0, len(files), step)][:count]


def fix_checksums(data: bytearray) -> None:
    """Recompute the file header's and every chunk's CRC32s, as a careful forger would."""
    struct.pack_into("<I", data, 124, zlib.crc32(bytes(data[:120])))
    for start in range(FILE_HEADER, len(data) - CHUNK + 1, CHUNK):
        chunk = data[start : start + CHUNK]
        if chunk[:8] != b"ElfChnk\x00":
            continue
        free = min(struct.unpack_from("<I", chunk, 0x30)[0], CHUNK)
        struct.pack_into(
            "<I", data, start + 0x34, zlib.crc32(bytes(chunk[0x200:free])) if free > 0x200 else 0
        )
        chunk = data[start : start + CHUNK]
        struct.pack_into("<I", data, start + 124, zlib.crc32(bytes(chunk[:120]) + bytes(chunk[128:0x200])))


DAMAGES = ["truncate", "flip", "flip-and-fix-checksums", "zero-run-and-fix-checksums"]


@pytest.mark.shared
@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_files_are_declined_or_read_exactly(evtx_samples: Path, tmp_path: Path, damage: str) -> None:
    rng = random.Random(f"cevtx-{damage}")
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    for original in _some_files(evtx_samples, 8):
        for _ in range(25):
            data = bytearray(original)
            if damage == "truncate":
                data = data[: rng.randrange(0, len(data))]
            elif damage == "zero-run-and-fix-checksums":
                start = rng.randrange(FILE_HEADER, len(data))
                end = min(len(data), start + rng.randrange(1, 64))
                data[start:end] = bytes(end - start)
                fix_checksums(data)
            else:
                # most flips where the records are: the first chunks
                end = min(len(data), FILE_HEADER + 2 * CHUNK)
                for _ in range(rng.randrange(1, 4)):
                    data[rng.randrange(0, end)] ^= 1 << rng.randrange(8)
                if damage.endswith("fix-checksums"):
                    fix_checksums(data)
            blob = bytes(data)
            from_bytes = _cevtx.records_json(blob)
            outcomes["declined" if from_bytes is None else "read"] += 1
            if from_file(blob, tmp_path) != from_bytes:
                problems.append("reading by descriptor disagrees with reading bytes")
            why = disagreement(blob)
            if why:
                problems.append(why)
    print(f"\n{damage}: {dict(outcomes)}")
    assert not problems, problems[:3]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad file magic"),
        (b"ElfFile\x00", "bad file magic"),
        (b"ElfFile\x00" + bytes(FILE_HEADER - 8), "file header checksum mismatch"),
        (b"NotEvtx!" + bytes(FILE_HEADER + CHUNK - 8), "bad file magic"),
        (bytes(FILE_HEADER + CHUNK), "bad file magic"),
    ],
)
def test_not_evtx_is_declined(data: bytes, reason: str) -> None:
    assert _cevtx.records_json(data) is None
    assert _cevtx.last_refusal() == reason


def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError):
        _cevtx.records_json("not bytes")
    with pytest.raises(ValueError):
        _cevtx.records_json_fd(0, -1)


@pytest.mark.parametrize(
    "length", [0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 511, 512, 4095, 65024, 65536]
)
@pytest.mark.parametrize("start", [0, 0xFFFFFFFF, 0x12345678])
def test_crc32_is_zlibs(length: int, start: int) -> None:
    data = random.Random(length).randbytes(length + 3)
    for offset in range(3):  # unaligned starts too
        chunk = data[offset : offset + length]
        assert _cevtx.crc32(chunk, start) == zlib.crc32(chunk, start)
    assert _cevtx.crc32_kind() in ("pclmul", "zlib")
