"""Type stub of the native JSON decoder (sigma_arrow/_cdecode.c)."""

from collections.abc import Sequence

def decode(documents: Sequence[bytes | str], /) -> list[tuple[str, bytes, bytes, bytes | None, int]] | None:
    """Flatten a block of JSON documents into Arrow string column buffers; None: refused."""

def last_refusal() -> str:
    """Why the last ``decode`` call returned None ('' when it did not)."""
