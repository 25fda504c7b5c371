"""Type stub of the native multi-literal scanner (sigma_arrow/_cscan.c)."""

from collections.abc import Sequence
from typing import Any

from typing_extensions import Buffer

class Automaton:
    """Aho-Corasick automaton over (body, flags, literal numbers) patterns; flags 1 start-, 2 end-anchored.

    ``fold``: ASCII letters match case-insensitively (the patterns must hold no uppercase ASCII).
    """

    n_states: int
    n_literals: int
    nbytes: int
    skips: str
    teddy_rate: float
    layout: dict[str, int]
    buffered: bool

    def __init__(
        self,
        patterns: Sequence[tuple[bytes, int, Sequence[int]]],
        n_literals: int,
        dense_depth: int = -1,
        skip: int = -1,
        renumber: bool = True,
        fold: bool = False,
        buffered: bool = True,
        split_bytes: bool = True,
    ) -> None: ...
    def scan(
        self,
        offsets: Buffer,
        data: Buffer,
        validity: Buffer | None,
        wide: bool,
        offset: int,
        length: int,
        relabel: Buffer | None = None,
        n_out: int = -1,
    ) -> tuple[bytearray, bytearray]:
        """Every distinct (literal, value position) hit as int64 bytearrays, sorted by literal then value."""
    def scan_folded(
        self,
        offsets: Buffer,
        data: Buffer,
        validity: Buffer | None,
        wide: bool,
        offset: int,
        length: int,
        relabel: Buffer | None = None,
        n_out: int = -1,
    ) -> tuple[bytearray, bytearray, bytearray]:
        """``scan`` leaving the values holding a non-ASCII byte unscanned: (literals, values, skipped)."""
    def scan_many(
        self,
        arrays: Sequence[tuple[Buffer, Buffer, Buffer | None, bool, int, int]],
        fold: bool,
        relabel: Buffer | None = None,
        n_out: int = -1,
        grouped: bool = False,
    ) -> tuple[bytearray, ...]:
        """``scan`` (``fold``: ``scan_folded``) of several arrays, their value positions running on.

        ``grouped``: the first bytearray holds each literal's number of hits instead of each hit's literal.
        """

def narrow(
    kept_bits: Any, place: Any, rows: Any, wide_rows: bool, codes: Any, n_distinct: int
) -> tuple[bytearray, bytearray, bytearray]:
    """Restrict a column to the kept rows: (their positions, renumbered int32 codes, old codes used).

    The arrays are anything with the buffer protocol (numpy arrays, bytes).
    """

def rows_at(codes: Any, n_distinct: int, positions: Any) -> bytearray:
    """How many ``codes`` (int64 per row) equal each of ``positions``: int64 counts, one pass."""
