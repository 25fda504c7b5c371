"""Per-batch column views: distinct text values plus a row -> distinct-value index.

Every leaf is evaluated once per *distinct* value of its column and gathered to rows through
``index`` (nulls and missing values point at the extra slot ``n_distinct``). Real logs repeat values a
lot (Channel, EventID, Image, ParentImage), so this alone removes most of the work.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from compiler.textform import text_of

try:
    from sigma_arrow import _cdict
except ImportError:  # the optional native extension is not built: Arrow kernels do the work
    _cdict = None  # type: ignore[assignment]
try:
    from sigma_arrow import _calgebra
except ImportError:  # the optional native extension is not built: numpy does the work
    _calgebra = None  # type: ignore[assignment]

#: Set to 1 to run the rule algebra without its native extension (the pure-Python fallback).
PURE_PYTHON_ENV = "SIGMA_ARROW_PURE_PYTHON_ALGEBRA"


def native_algebra() -> ModuleType | None:
    """Return the native rule algebra module (sigma_arrow/_calgebra.c), or None: not built or switched off."""
    if _calgebra is None or os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None
    return _calgebra


IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_EMPTY: IntArray = np.empty(0, dtype=np.int64)

#: Exactly the texts ``ipaddress.IPv4Address`` accepts: four dot-separated ASCII decimal octets of at
#: most 3 digits, each <= 255 and without a leading zero (RE2: ``$`` is the end of the text only).
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
IPV4_PATTERN = rf"^(?:{_OCTET}\.){{3}}{_OCTET}$"
#: ``ColumnView.ipv4_at``'s marks: not an IPv4 address / not parsed yet.
NOT_IPV4 = -1
_UNKNOWN = -2


def ipv4_integers(texts: pa.Array) -> IntArray:
    """Each text's IPv4 address as an integer (``ipaddress.IPv4Address`` syntax), NOT_IPV4 if none."""
    out = np.full(len(texts), NOT_IPV4, dtype=np.int64)
    if len(texts) == 0:
        return out
    valid = pc.fill_null(pc.match_substring_regex(texts, IPV4_PATTERN), False)
    positions = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
    if len(positions):
        parts = pc.split_pattern(texts.filter(valid), ".").flatten()
        octets = pc.cast(parts, pa.int64()).to_numpy(zero_copy_only=False).reshape(-1, 4)
        out[positions] = ((octets[:, 0] * 256 + octets[:, 1]) * 256 + octets[:, 2]) * 256 + octets[:, 3]
    return out


def group_order(codes: IntArray, n_groups: int) -> IntArray:
    """Positions of ``codes`` sorted by code, equal codes in position order (a stable argsort).

    Natively one counting pass (~9x cheaper than numpy's stable sort on a 1M-row column).
    """
    if _cdict is not None:
        contiguous = np.ascontiguousarray(codes, dtype=np.int64)
        return np.frombuffer(_cdict.group_order(contiguous, n_groups), dtype=np.int64)
    order: IntArray = np.argsort(codes, kind="stable")
    return order


def python_lower(values: pa.Array) -> pa.Array:
    """Lowercase exactly like Python ``str.lower`` (native or Arrow for ASCII, Python for the rest)."""
    if _cdict is not None and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        validity, offsets, data = values.buffers()
        lowered_data = _cdict.ascii_lower(data if data is not None else b"")
        if lowered_data is not None:
            # ASCII: every byte keeps its place, so the offsets and validity are reused as they are.
            return pa.Array.from_buffers(
                values.type,
                len(values),
                [validity, offsets, pa.py_buffer(lowered_data)],
                values.null_count,
                values.offset,
            )
    lowered = pc.utf8_lower(values)
    if len(values) == 0:
        return lowered
    ascii_mask = pc.fill_null(pc.string_is_ascii(values), True)
    if pc.all(ascii_mask).as_py() is not False:
        return lowered
    non_ascii = np.flatnonzero(~ascii_mask.to_numpy(zero_copy_only=False))
    texts = lowered.to_pylist()
    originals = values.take(pa.array(non_ascii)).to_pylist()
    for position, text in zip(non_ascii.tolist(), originals, strict=True):
        texts[position] = text.lower() if text is not None else None
    return pa.array(texts, type=pa.string())


def _is_stringlike(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
    )


class ColumnView:
    """One batch column seen through its distinct values, stored sparsely (non-null rows only).

    ``valid_rows`` lists the rows holding a value (None: every row does) and ``codes`` gives each of
    those rows' distinct-value position; ``index_at(rows)`` maps any rows to positions, with the
    extra slot ``n_distinct`` for null / missing.
    """

    __slots__ = (
        "_counts",
        "_dense",
        "_ipv4",
        "_lookups",
        "_lower",
        "_offsets",
        "_order",
        "_raw",
        "_texts",
        "codes",
        "is_string",
        "n_distinct",
        "n_rows",
        "name",
        "text",
        "valid_rows",
    )

    def __init__(
        self, name: str, array: pa.Array, set_rows: IntArray | None = None, n_rows: int | None = None
    ) -> None:
        """View ``array``; with ``set_rows``, it holds only the values of those rows of ``n_rows``."""
        self.name = name
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        self.n_rows = len(array) if n_rows is None else n_rows
        if pa.types.is_string_view(array.type):
            array = array.cast(pa.large_string())
        data_type = array.type
        valid_rows: IntArray | None = None
        if set_rows is not None:
            valid_rows = set_rows
            if array.null_count and not _encodes_natively(array):
                local, array = non_null(array)
                valid_rows = set_rows[local]
        elif array.null_count:
            if array.null_count == len(array) or pa.types.is_null(data_type):
                valid_rows = _EMPTY
            elif not _encodes_natively(array):
                valid_rows, array = non_null(array)
        raw_values: pa.Array
        native = _native_encode(array) if valid_rows is None or len(valid_rows) else None
        if native is not None:
            self.is_string = True
            local_rows, codes, raw_values = native
            if local_rows is not None:
                valid_rows = local_rows if valid_rows is None else valid_rows[local_rows]
        elif valid_rows is not None and len(valid_rows) == 0:
            self.is_string = _is_stringlike(
                data_type.value_type if pa.types.is_dictionary(data_type) else data_type
            )
            raw_values = pa.array([], type=pa.string())
            codes = _EMPTY
        elif pa.types.is_dictionary(data_type):
            self.is_string = _is_stringlike(data_type.value_type)
            raw_values = array.dictionary
            codes = array.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        else:
            self.is_string = _is_stringlike(data_type)
            encoded = pc.dictionary_encode(array)
            raw_values = encoded.dictionary
            codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if raw_values.null_count:
            # Dictionary entries that are null behave like null rows: drop those rows.
            keep = ~raw_values.is_null().to_numpy(zero_copy_only=False)[codes]
            rows = np.arange(self.n_rows, dtype=np.int64) if valid_rows is None else valid_rows
            valid_rows, codes = rows[keep], codes[keep]
        if valid_rows is not None and len(valid_rows) == self.n_rows:
            valid_rows = None
        self.n_distinct = len(raw_values)
        self.valid_rows = valid_rows
        self.codes: IntArray = codes
        self.text: pa.Array = _to_text(raw_values)
        self._raw = raw_values
        self._lower: pa.Array | None = None
        self._counts: IntArray | None = None
        self._order: IntArray | None = None
        self._offsets: IntArray | None = None
        self._dense: npt.NDArray[np.int32] | None = None
        self._ipv4: IntArray | None = None
        self._texts: list[str | None] | None = None
        self._lookups = 0

    def index_at(self, rows: IntArray) -> IntArray:
        """Distinct-value positions of some rows (``n_distinct`` where the row has no value)."""
        valid = self.valid_rows
        if valid is None:
            return self.codes[rows]
        if len(valid) == 0:
            return np.full(len(rows), self.n_distinct, dtype=np.int64)
        if self._dense is not None:
            return self._dense[rows].astype(np.int64)
        self._lookups += 1
        if self._lookups > 2 and self.n_distinct < 2**31 - 1:
            # A column read by many leaves: one dense row -> position map beats a binary search each time.
            dense = np.full(self.n_rows, self.n_distinct, dtype=np.int32)
            dense[valid] = self.codes
            self._dense = dense
            return dense[rows].astype(np.int64)
        found = np.searchsorted(valid, rows)
        found[found == len(valid)] = 0
        return np.where(valid[found] == rows, self.codes[found], self.n_distinct)

    def full_index(self) -> IntArray:
        """Distinct-value position of every row."""
        if self.valid_rows is None:
            return self.codes
        index = np.full(self.n_rows, self.n_distinct, dtype=np.int64)
        index[self.valid_rows] = self.codes
        return index

    @property
    def lower(self) -> pa.Array:
        """Distinct text values lowercased with Python ``str.lower`` semantics."""
        if self._lower is None:
            self._lower = python_lower(self.text)
        return self._lower

    def values(self, cased: bool) -> pa.Array:
        """Return the distinct text values to compare with (original when ``cased``)."""
        return self.text if cased else self.lower

    def raw_python(self, positions: IntArray) -> list[Any]:
        """Return the original Python values of some distinct entries (None for the null slot)."""
        valid = positions[positions < self.n_distinct]
        taken = self._raw.take(pa.array(valid, type=pa.int64())).to_pylist()
        if len(valid) == len(positions):
            return taken  # type: ignore[no-any-return]
        out: list[Any] = [None] * len(positions)
        for slot, value in zip(np.flatnonzero(positions < self.n_distinct).tolist(), taken, strict=True):
            out[slot] = value
        return out

    def texts_at(self, positions: IntArray) -> list[str | None]:
        """Text values of some distinct entries (None for the null slot or no text form).

        Asked for a good share of the values, the view converts all of them once and hands out the
        same ``str`` objects to every later leaf (their hashes, which kernel memos use, are kept too).
        """
        texts = self._texts
        if texts is None and len(positions) * 4 >= self.n_distinct:
            texts = self._texts = [*self.text.to_pylist(), None]  # the null slot reads as None
        if texts is not None:
            return list(map(texts.__getitem__, positions.tolist()))
        valid = positions[positions < self.n_distinct]
        taken = self.text.take(pa.array(valid, type=pa.int64())).to_pylist()
        if len(valid) == len(positions):
            return taken  # type: ignore[no-any-return]
        out: list[str | None] = [None] * len(positions)
        for slot, value in zip(np.flatnonzero(positions < self.n_distinct).tolist(), taken, strict=True):
            out[slot] = value
        return out

    def ipv4_at(self, positions: IntArray) -> IntArray:
        """IPv4 address (integer) of some distinct entries' text; NOT_IPV4 for none or the null slot.

        Parsed vectorised, once per distinct value, for every cidr leaf of the column to share.
        """
        if self._ipv4 is None:
            self._ipv4 = np.full(self.n_distinct + 1, _UNKNOWN, dtype=np.int64)
            self._ipv4[self.n_distinct] = NOT_IPV4
        known = self._ipv4[positions]
        todo = np.unique(positions[known == _UNKNOWN])
        if len(todo):
            self._ipv4[todo] = ipv4_integers(self.text.take(pa.array(todo, type=pa.int64())))
            known = self._ipv4[positions]
        return known

    @property
    def counts(self) -> IntArray:
        """Rows per distinct value (the last slot counts rows without a value)."""
        if self._counts is None:
            counts = np.bincount(self.codes, minlength=self.n_distinct + 1)
            counts[self.n_distinct] = self.n_rows - len(self.codes)
            self._counts = counts
        return self._counts

    def row_groups(self) -> tuple[IntArray, IntArray]:
        """(order, offsets): ``order[offsets[v]:offsets[v + 1]]`` are the rows holding value v (sorted)."""
        if self._order is None:
            algebra = native_algebra()
            if algebra is not None:  # one native counting sort: order, offsets (and so the counts)
                valid = self.valid_rows
                if valid is not None and valid.dtype != np.int32:
                    valid = np.ascontiguousarray(valid, dtype=np.int64)
                order_bytes, offsets_bytes = algebra.row_groups(
                    np.ascontiguousarray(self.codes, dtype=np.int64), valid, self.n_distinct, self.n_rows
                )
                self._order = np.frombuffer(order_bytes, dtype=np.int32 if self.n_rows < 2**31 else np.int64)
                self._offsets = np.frombuffer(offsets_bytes, dtype=np.int64)
                if self._counts is None:
                    counts = np.empty(self.n_distinct + 1, dtype=np.int64)
                    counts[: self.n_distinct] = np.diff(self._offsets)
                    counts[self.n_distinct] = self.n_rows - len(self.codes)
                    self._counts = counts
            else:
                order = group_order(self.codes, self.n_distinct)
                self._order = order if self.valid_rows is None else self.valid_rows[order]
                self._offsets = np.concatenate(([0], np.cumsum(self.counts[: self.n_distinct])))
        assert self._offsets is not None
        return self._order, self._offsets

    def rows_of(self, distinct: IntArray) -> IntArray:
        """Row positions whose value is one of ``distinct`` (unsorted; no null slot)."""
        self.row_groups()
        assert self._order is not None and self._offsets is not None
        starts = self._offsets[distinct]
        lengths = self._offsets[distinct + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return _EMPTY
        # Concatenate the ranges [start, start + length) without a Python loop.
        nonempty = lengths > 0
        starts, lengths = starts[nonempty], lengths[nonempty]
        steps = np.ones(total, dtype=np.int64)
        boundaries = np.cumsum(lengths)[:-1]
        steps[0] = starts[0]
        steps[boundaries] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
        return self._order[np.cumsum(steps)]


def _encodes_natively(array: pa.Array) -> bool:
    return _cdict is not None and bool(pa.types.is_string(array.type) or pa.types.is_large_string(array.type))


def _native_encode(array: pa.Array) -> tuple[IntArray | None, IntArray, pa.Array] | None:
    """(rows holding a value or None for all, their distinct-value codes, the distinct values).

    One native pass instead of validity + compaction + ``dictionary_encode`` kernels, whose fixed
    cost per call dominates for the hundreds of sparse columns of a batch. None: not a plain string
    array, or the extension is not built.
    """
    if not _encodes_natively(array):
        return None
    validity, offsets, data = array.buffers()
    wide = pa.types.is_large_string(array.type)
    rows, codes, distinct_offsets, distinct_data = _cdict.encode(
        offsets,
        data if data is not None else b"",
        validity,
        array.offset,
        len(array),
        len(array) - array.null_count,
        wide,
    )
    n_distinct = len(distinct_offsets) // (8 if wide else 4) - 1
    values = pa.Array.from_buffers(
        array.type, n_distinct, [None, pa.py_buffer(distinct_offsets), pa.py_buffer(distinct_data)]
    )
    found_rows = None if rows is None else np.frombuffer(rows, dtype=np.int64)
    return found_rows, np.frombuffer(codes, dtype=np.int64), values


def non_null(array: pa.Array) -> tuple[IntArray, pa.Array]:
    """Return the rows holding a value and those values, compacted (from buffers for strings).

    Logs are sparse (hundreds of columns, a few dozen set per event): this runs for every column of
    every batch: the valid rows come from one Arrow kernel over the bitmap, and when null slots are
    empty (as writers make them) a string array is compacted by gathering offsets, not by copying.
    """
    valid_rows = pc.indices_nonzero(array.is_valid()).to_numpy().astype(np.int64)
    data_type = array.type
    if pa.types.is_dictionary(data_type) and pa.types.is_integer(data_type.index_type):
        # A gather of the codes; the dictionary is shared, not copied (a ``take`` costs ~4x more).
        codes_type = data_type.index_type
        codes = np.frombuffer(array.buffers()[1], dtype=codes_type.to_pandas_dtype())
        picked = np.ascontiguousarray(codes[array.offset + valid_rows])
        values = pa.DictionaryArray.from_buffers(
            data_type, len(picked), [None, pa.py_buffer(picked)], array.dictionary
        )
        return valid_rows, values
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        offset_type = np.int32 if pa.types.is_string(data_type) else np.int64
        offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)[
            array.offset : array.offset + len(array) + 1
        ]
        starts = offsets[valid_rows]
        ends = offsets[valid_rows + 1]
        if len(valid_rows) and int((ends - starts).sum()) == int(offsets[-1] - offsets[0]):
            # Null slots hold no bytes, so the values lie back to back in the data buffer.
            compact = np.empty(len(valid_rows) + 1, dtype=offset_type)
            compact[:-1] = starts
            compact[-1] = ends[-1]
            values = pa.Array.from_buffers(
                data_type, len(valid_rows), [None, pa.py_buffer(compact), array.buffers()[2]]
            )
            return valid_rows, values
    return valid_rows, array.take(pa.array(valid_rows, type=pa.int64()))


def _to_text(values: pa.Array) -> pa.Array:
    """Text form of distinct values as a string array (null where there is none)."""
    data_type = values.type
    if pa.types.is_string(data_type):
        return values
    if pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return values.cast(pa.string()) if values.nbytes < 2**31 - 1 else values.cast(pa.large_string())
    if pa.types.is_integer(data_type):
        return values.cast(pa.string())
    if pa.types.is_boolean(data_type):
        return pc.if_else(values, "true", "false")
    if pa.types.is_floating(data_type):
        return pa.array([text_of(v) for v in values.to_pylist()], type=pa.string())
    if pa.types.is_null(data_type):
        return pa.array([], type=pa.string())
    # Anything else (binary, nested, temporal) has no IR text form: treated as null.
    return pa.nulls(len(values), type=pa.string())
