"""Type stub of the native column dictionary encoder (sigma_arrow/_cdict.c)."""

from collections.abc import Sequence
from typing import Any

#: Anything with the buffer protocol (bytes, pyarrow.Buffer, numpy arrays).
Buffer = Any

def encode(
    offsets: Buffer,
    data: Buffer,
    validity: Buffer | None,
    offset: int,
    length: int,
    n_set: int,
    wide: bool,
    /,
) -> tuple[bytes | None, bytes, bytes, bytes]:
    """Set rows (None: all), their distinct-value codes, and the distinct values' offsets and data."""

def ascii_lower(data: Buffer, /) -> bytes | None:
    """Lowercase an ASCII buffer; None when it holds a non-ASCII byte."""

def group_order(codes: Buffer, n_groups: int, /) -> bytes:
    """Positions of int64 ``codes`` (each in [0, n_groups)) sorted by code, stably, as int64 bytes."""

def dict_rows(
    validity: Buffer, indices: Buffer, offset: int, length: int, n_set: int, /
) -> tuple[bytes, bytes]:
    """Int32 rows holding a value of an int32-indexed dictionary column, and their codes."""

def unify(
    parts: Sequence[tuple[Buffer, Buffer, int, int, Buffer, int, int]], /
) -> tuple[bytes, bytes, bytes] | None:
    """Merge dictionary string columns: one dictionary (int32 offsets, data) and the remapped codes."""

def decode_chunk(
    chunk: Buffer, num_rows: int, max_def: int, codec: int, /
) -> tuple[bytes | None, bytes, bytes, bytes] | None:
    """Decode a flat dictionary string column chunk (codec 0 none, 1 SNAPPY, 2 ZSTD)."""

def set_zstd(decompress: int, is_error: int, /) -> None:
    """Give ``decode_chunk`` libzstd's ZSTD_decompress and ZSTD_isError (addresses; 0 to forget them)."""
