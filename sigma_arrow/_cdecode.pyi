"""Type stub of the native JSON decoder (sigma_arrow/_cdecode.c)."""

from collections.abc import Sequence

def decode(documents: Sequence[bytes | str], /) -> list[tuple[str, bytes, bytes, bytes | None, int]] | None:
    """Flatten a block of JSON documents into Arrow string column buffers; None: refused."""

def last_refusal() -> str:
    """Why the last ``decode`` call returned None ('' when it did not)."""

def decode_sparse(documents: Sequence[bytes | str], /) -> list[tuple[str, bytes | None, bytes, bytes]] | None:
    """As ``decode``, each column as (name, int32 rows holding a value or None for all, offsets, data)."""

def decode_ndjson(
    data: bytes | bytearray | memoryview, start: int, max_lines: int, /
) -> tuple[list[tuple[str, bytes | None, bytes, bytes]] | None, int, int]:
    """``decode_sparse`` of up to ``max_lines`` non-blank lines of ``data[start:]``: (columns, end, lines)."""

def count_lines(data: bytes | bytearray | memoryview, start: int, max_lines: int, /) -> tuple[int, int]:
    """Where ``decode_ndjson(data, start, max_lines)`` would stop, and how many lines it would take."""

def decode_spans(
    data: bytes | bytearray | memoryview, lengths: bytes | bytearray | memoryview, /
) -> list[tuple[str, bytes | None, bytes, bytes]] | None:
    """``decode_sparse`` of documents laid end to end in ``data`` (int64 ``lengths``); None: refused."""

class Chunk:
    """Read-only bytes a ``Builder`` filled (buffer protocol), handed over without a copy."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

class Builder:
    """Decode documents a few at a time into one sparse block, copying their values as it goes."""

    @property
    def rows(self) -> int:
        """Rows added so far."""

    def add(self, documents: Sequence[bytes | str], /) -> bool:
        """Parse and flatten more documents as the next rows; False: refused, none of them added."""

    def finish(self) -> list[tuple[str, Chunk | None, Chunk, Chunk]]:
        """Return the rows added so far as ``decode_sparse`` gives them; the builder is empty again."""
