"""Mutation fuzzing of the native EVTX parser against the Rust one (run by hand, not in CI).

    python tests/fuzz_cevtx.py [--iterations 5000] [--seed 1] [files or dirs ...]

Each iteration damages one real .evtx file (bit flips, zeroed or random runs, truncation, a chunk
copied over another; most with the CRC32s repaired so the damage reaches the BinXML parser) and
checks that the native parser either declines or gives exactly the Rust parser's records. Build the
extension with ``-fsanitize=address,undefined`` first to catch out-of-bounds reads (see the README
section on the native EVTX parser).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_cevtx import CHUNK, FILE_HEADER, _cevtx, disagreement, fix_checksums, from_file

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "evtx-attack-samples"


def mutate(rng: random.Random, original: bytes) -> tuple[str, bytes]:
    """One damaged copy of ``original`` and the name of the damage."""
    data = bytearray(original)
    chunks = max(1, (len(data) - FILE_HEADER) // CHUNK)
    used = min(chunks, 3)
    start_of_chunks = FILE_HEADER + rng.randrange(used) * CHUNK
    kind = rng.choice(["flip", "zero-run", "random-run", "truncate", "copy-chunk", "table"])
    if kind == "truncate":
        return kind, bytes(data[: rng.randrange(len(data))])
    if kind == "flip":
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(start_of_chunks, min(len(data), start_of_chunks + CHUNK))] ^= (
                1 << rng.randrange(8)
            )
    elif kind in ("zero-run", "random-run"):
        start = rng.randrange(start_of_chunks, min(len(data), start_of_chunks + CHUNK))
        end = min(len(data), start + rng.randrange(1, 48))
        data[start:end] = bytes(end - start) if kind == "zero-run" else rng.randbytes(end - start)
    elif kind == "copy-chunk" and chunks > 1:
        target = FILE_HEADER + rng.randrange(chunks) * CHUNK
        data[target : target + CHUNK] = data[start_of_chunks : start_of_chunks + CHUNK]
    else:  # a string/template table entry pointed somewhere else
        kind = "table"
        slot = start_of_chunks + 0x80 + 4 * rng.randrange(96)
        if slot + 4 <= len(data):
            data[slot : slot + 4] = rng.randrange(0, 0x10000).to_bytes(4, "little")
    if rng.random() < 0.85:
        fix_checksums(data)
        kind += "+crc"
    return kind, bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", default=[str(DEFAULT)])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    files: list[Path] = []
    for item in map(Path, args.inputs):
        files.extend(sorted(item.rglob("*.evtx")) if item.is_dir() else [item])
    blobs = [path.read_bytes() for path in files if path.stat().st_size < (2 << 20)]
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    failures = 0
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="cevtx-fuzz-"))
    for _ in range(args.iterations):
        kind, data = mutate(rng, rng.choice(blobs))
        from_bytes = _cevtx.records_json(data)
        read = from_bytes is not None
        outcomes[f"{kind}:{'read' if read else 'declined'}"] += 1
        why = disagreement(data) if read else None
        if from_file(data, scratch) != from_bytes:
            why = "reading by descriptor disagrees with reading bytes"
        if why:
            failures += 1
            name = Path(f"/tmp/cevtx-fuzz-failure-{failures}.evtx")
            name.write_bytes(data)
            print(f"FAILURE ({kind}) saved as {name}: {why}")
    print(f"{args.iterations} mutations in {time.monotonic() - started:.1f}s, {failures} failures")
    for key, count in sorted(outcomes.items()):
        print(f"  {key:28s} {count}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
