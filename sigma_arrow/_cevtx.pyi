"""Type stub of the native EVTX parser (sigma_arrow/_cevtx.c)."""

from typing import Any

def records_json(data: Any, /) -> list[str] | None:
    """Every record's JSON text of a whole .evtx file (a bytes-like object); None: refused."""

def records_json_fd(fd: int, size: int, first: int = 0, count: int = -1, /) -> list[str] | None:
    """``records_json`` of chunks ``first`` .. ``first + count - 1`` (-1: all) of the open file ``fd``.

    ``size``: the file's size in bytes. The file is read a chunk at a time (a reused buffer).
    """

def last_refusal() -> str:
    """Why the last call returned None ('' when it did not)."""

def crc32(data: bytes, start: int = 0, /) -> int:
    """Return zlib.crc32(data, start) as the parser computes it."""

def crc32_kind() -> str:
    """Return which CRC32 the parser uses: 'pclmul' (carry-less multiplication) or 'zlib'."""

def last_counts() -> tuple[int, int]:
    """Return (rendered, replayed): how the last call's records were written (tree, or replayed)."""
