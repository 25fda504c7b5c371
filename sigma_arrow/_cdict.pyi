"""Type stub of the native column dictionary encoder (sigma_arrow/_cdict.c)."""

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
