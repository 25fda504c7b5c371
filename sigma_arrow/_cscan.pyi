"""Type stub of the native multi-literal scanner (sigma_arrow/_cscan.c)."""

from collections.abc import Sequence

from typing_extensions import Buffer

class Automaton:
    """Aho-Corasick automaton over (body, flags, literal numbers) patterns; flags 1 start-, 2 end-anchored."""

    n_states: int
    n_literals: int
    nbytes: int
    skips: str

    def __init__(
        self,
        patterns: Sequence[tuple[bytes, int, Sequence[int]]],
        n_literals: int,
        dense_depth: int = 3,
        skip: int = -1,
        renumber: bool = True,
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
