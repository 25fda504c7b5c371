"""Opening inputs: files, stdin (``-``) and gzip/bz2/xz/zstd compression (by extension or magic)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, cast

#: Compression extensions and the magic bytes that identify them.
COMPRESSIONS: dict[str, tuple[str, bytes]] = {
    ".gz": ("gzip", b"\x1f\x8b"),
    ".bz2": ("bz2", b"BZh"),
    ".xz": ("xz", b"\xfd7zXZ\x00"),
    ".zst": ("zstd", b"\x28\xb5\x2f\xfd"),
}
STDIN = "-"


def compression_of(path: str, head: bytes = b"") -> str | None:
    """Return the compression of an input, from its extension or else its first bytes."""
    lowered = path.lower()
    for extension, (name, _magic) in COMPRESSIONS.items():
        if lowered.endswith(extension):
            return name
    for name, magic in COMPRESSIONS.values():
        if head.startswith(magic):
            return name
    return None


def strip_compression(path: str) -> str:
    """Return the path without its compression extension (``a.jsonl.gz`` → ``a.jsonl``)."""
    lowered = path.lower()
    for extension in COMPRESSIONS:
        if lowered.endswith(extension):
            return path[: -len(extension)]
    return path


def _raw(path: str) -> IO[bytes]:
    if path == STDIN:
        return cast(IO[bytes], sys.stdin.buffer)
    return open(path, "rb")


def _decompressing(raw: IO[bytes], compression: str) -> IO[bytes]:
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    if compression == "bz2":
        return cast(IO[bytes], bz2.BZ2File(raw))
    if compression == "xz":
        return cast(IO[bytes], lzma.LZMAFile(raw))
    import zstandard

    return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))


class _Peekable:
    """A binary stream whose first bytes can be looked at without consuming them."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buffer = b""

    def peek(self, size: int) -> bytes:
        while len(self.buffer) < size:
            more = self.stream.read(size - len(self.buffer))
            if not more:
                break
            self.buffer += more
        return self.buffer[:size]

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self.buffer + self.stream.read()
            self.buffer = b""
            return data
        if self.buffer:
            data = self.buffer[:size]
            self.buffer = self.buffer[size:]
            if len(data) < size:
                data += self.stream.read(size - len(data))
            return data
        return self.stream.read(size)

    def close(self) -> None:
        self.stream.close()


_stdin: tuple[Any, _Peekable] | None = None


def _stdin_stream() -> _Peekable:
    """One peekable wrapper per stdin: sniffing the format must not consume what the reader needs."""
    global _stdin
    raw = sys.stdin.buffer
    if _stdin is None or _stdin[0] is not raw:
        _stdin = (raw, _Peekable(cast(IO[bytes], raw)))
    return _stdin[1]


@contextmanager
def open_input(path: str) -> Iterator[Any]:
    """Open an input for reading bytes, decompressing it when needed; yields a peekable stream."""
    raw = _raw(path)
    try:
        stream = _stdin_stream() if path == STDIN else _Peekable(raw)
        compression = compression_of(path, stream.peek(8))
        if compression is not None:
            stream = _Peekable(_decompressing(cast(IO[bytes], stream), compression))
        yield stream
    finally:
        if path != STDIN:
            raw.close()


def head_bytes(path: str, size: int = 16) -> bytes:
    """Return the first (decompressed) bytes of an input, for format sniffing; empty when unreadable."""
    try:
        with open_input(path) as stream:
            return bytes(stream.peek(size))
    except (OSError, EOFError, ValueError, lzma.LZMAError):
        return b""


@contextmanager
def local_file(path: str) -> Iterator[str]:
    """Yield a real, seekable file path with the input's (decompressed) bytes; a temp copy when needed.

    Parsers that want a path (EVTX) get compressed files and stdin through this.
    """
    if path != STDIN and compression_of(path, _file_head(path)) is None:
        yield path
        return
    fd, temp = tempfile.mkstemp(prefix="sigma-arrow-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open_input(path) as stream:
            shutil.copyfileobj(cast(IO[bytes], stream), out, 1 << 20)
        yield temp
    finally:
        os.unlink(temp)


def _file_head(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(8)
    except OSError:
        return b""
