"""CPU microseconds per record of EVTX parsing alone: the native parser (sigma_arrow._cevtx) vs Rust.

    python bench/evtx_parse_bench.py                      # the shared samples (../shared)
    python bench/evtx_parse_bench.py DIR_OR_FILE ... --repeat 5

Both give every record's JSON text as a list of str: Rust as ``[r["data"] for r in
evtx.PyEvtxParser(path, number_of_threads=1).records_json()]`` (what the reader does), native from
the file's descriptor (``records_json_fd``, as the reader calls it) and from bytes already in memory.
A big file made of all the samples' chunks (``big_file``) shows the per-call 64-chunk reading of big
files. ``time.process_time``, best of ``--repeat`` rounds; the figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import evtx  # noqa: E402

from sigma_arrow import _cevtx  # noqa: E402

SHARED = ROOT.parent / "shared"
DEFAULT = [SHARED / "data" / "evtx-attack-samples", SHARED / "sigma" / "regression_data"]
FILE_HEADER = 0x1000
CHUNK = 0x10000


def evtx_files(inputs: list[Path]) -> list[Path]:
    """The .evtx files of ``inputs`` (directories searched recursively)."""
    files: list[Path] = []
    for item in inputs:
        files.extend(sorted(item.rglob("*.evtx")) if item.is_dir() else [item])
    return files


def big_file(files: list[Path], path: Path) -> int:
    """Write one EVTX file holding every used chunk of ``files``; return its chunk count."""
    chunks: list[bytes] = []
    header = b""
    for file in files:
        data = file.read_bytes()
        if not data.startswith(b"ElfFile\x00"):
            continue
        header = header or data[:FILE_HEADER]
        for start in range(FILE_HEADER, len(data) - CHUNK + 1, CHUNK):
            if data[start : start + 8] == b"ElfChnk\x00":
                chunks.append(data[start : start + CHUNK])
    head = bytearray(header)
    struct.pack_into("<QQH", head, 0x08, 0, len(chunks) - 1, 0)
    struct.pack_into("<H", head, 0x2A, len(chunks) & 0xFFFF)
    struct.pack_into("<I", head, 0x78, 0)
    struct.pack_into("<I", head, 0x7C, zlib.crc32(bytes(head[:120])))
    with path.open("wb") as out:
        out.write(head)
        for chunk in chunks:
            out.write(chunk)
    return len(chunks)


def rust(path: Path) -> int:
    return len([r["data"] for r in evtx.PyEvtxParser(str(path), number_of_threads=1).records_json()])


def native_fd(path: Path, per_call: int = -1) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if per_call < 0:
            records = _cevtx.records_json_fd(fd, size)
            assert records is not None, _cevtx.last_refusal()
            return len(records)
        total = 0
        for first in range(0, -(-(size - FILE_HEADER) // CHUNK), per_call):
            records = _cevtx.records_json_fd(fd, size, first, per_call)
            assert records is not None, _cevtx.last_refusal()
            total += len(records)
        return total
    finally:
        os.close(fd)


def best(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    """The least CPU seconds of ``repeat`` runs, and the records one run gives."""
    least = float("inf")
    records = 0
    for _ in range(repeat):
        started = time.process_time()
        records = run()
        least = min(least, time.process_time() - started)
    return least, records


def report(name: str, seconds: float, records: int) -> None:
    print(f"  {name:34s} {seconds * 1e6 / max(records, 1):6.2f} CPU-µs/record  ({records:,} records)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = evtx_files(args.inputs)
    blobs = [path.read_bytes() for path in files]
    taken = [path for path, blob in zip(files, blobs, strict=True) if _cevtx.records_json(blob) is not None]
    print(f"{len(files)} files, {len(files) - len(taken)} declined by the native parser (not timed)")
    report("rust records_json", *best(lambda: sum(map(rust, taken)), args.repeat))
    report("native records_json_fd", *best(lambda: sum(map(native_fd, taken)), args.repeat))
    in_memory = [blob for blob in blobs if _cevtx.records_json(blob) is not None]
    report(
        "native records_json (bytes in memory)",
        *best(lambda: sum(len(_cevtx.records_json(blob) or ()) for blob in in_memory), args.repeat),
    )
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.evtx"
        chunks = big_file(taken, big)
        print(f"one big file of {chunks} chunks ({big.stat().st_size / 1e6:.1f} MB)")
        report("rust records_json", *best(lambda: rust(big), args.repeat))
        report("native records_json_fd, whole", *best(lambda: native_fd(big), args.repeat))
        report("native records_json_fd, 64 chunks/call", *best(lambda: native_fd(big, 64), args.repeat))


if __name__ == "__main__":
    main()
