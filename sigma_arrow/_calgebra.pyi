"""Type stub of the native rule algebra (sigma_arrow/_calgebra.c)."""

from typing import Any, Protocol

#: Anything with the buffer protocol (bytes, numpy arrays).
Buffer = Any

class Resolver(Protocol):
    """What a Batch asks for on first need (each call sets what it asks for on the Batch)."""

    def load_column(self, slot: int, /) -> None: ...
    def scan_literal(self, literal_id: int, /) -> None: ...
    def answer(self, slot: int, codes: bytes, /) -> None: ...
    def load_row_mask(self, slot: int, /) -> None: ...

class Batch:
    """One batch's algebra state: columns, literal masks, kernel answers, keyword row masks."""

    def __init__(
        self,
        n_rows: int,
        n_columns: int,
        mask_col: bytes,
        mask_ptr: bytes,
        mask_lits: bytes,
        lazy_col: bytes,
        hit_map: dict[int, Any],
        n_row_masks: int,
        resolver: Resolver,
        literal_done: Buffer,
    ) -> None: ...
    def set_column(
        self, slot: int, valid_rows: Buffer | None, codes: Buffer | None, n_distinct: int, /
    ) -> None:
        """Load a column (n_distinct -1: the batch has no such column)."""

    def set_lazy(self, slot: int, answers: Buffer, /) -> None:
        """Keep a kernel slot's int8 answers per distinct value (-1 unknown) by reference."""

    def set_row_mask(self, slot: int, mask: Buffer, /) -> None:
        """Keep a row-mask slot's flags (one byte per row) by reference."""

    def evaluate(self, program: bytes, rows: Buffer, wide_rows: bool, /) -> bytes:
        """Return the rows (int64 bytes, input order) where a program holds."""

def gather_rows(
    n_rows: int, parts: list[tuple[Buffer, Buffer, Buffer]], group_of_row: Buffer, selected_groups: Buffer, /
) -> bytes:
    """Return the sorted distinct rows (int64 bytes) of some values of some columns in selected groups."""

def row_groups(
    codes: Buffer, valid_rows: Buffer | None, n_distinct: int, n_rows: int, /
) -> tuple[bytes, bytes]:
    """Return a column's rows grouped by value (int32 rows; int64 past 2**31) and int64 offsets per value."""

def group_rows(
    n_rows: int, columns: list[tuple[Buffer | None, Buffer, int]], /
) -> tuple[bytes, bytes, bytes, bytes] | None:
    """Return rows grouped by their columns' values: group per row, first rows, order, offsets."""
