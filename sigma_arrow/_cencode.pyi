"""Type stub of the native JSON Lines encoder (sigma_arrow/_cencode.c)."""

from typing import Any, overload

@overload
def encode(
    rows: int,
    fields: list[tuple[bytes, int, int, Any, Any, Any, Any]],
    skip_nulls: bool,
    take: Any = None,
    source_rows: int = -1,
    /,
) -> bytes:
    """One JSON object per row (and a newline after each) from Arrow column buffers."""

@overload
def encode(
    rows: int,
    fields: list[tuple[bytes, int, int, Any, Any, Any, Any]],
    skip_nulls: bool,
    take: Any,
    source_rows: int,
    fd: int,
    /,
) -> int:
    """Write the same lines to the file descriptor ``fd``; return the number of bytes written."""
