"""``SparseBatch``: a record batch whose columns keep only the rows that hold a value.

Flattened logs are wide and sparse: ~420 columns of which an event sets a few dozen. An Arrow string
column spends 4 bytes of offsets (plus a validity bit) on every row, set or not, so a 65,536-row
batch of such events takes ~146 MB, ~80 % of it offsets of null rows. Big engine batches pay off
(the engine's cost per batch is largely fixed), but four of those row groups merged would take
~600 MB per worker. A ``SparseBatch`` stores each column as (rows holding a value, those values):
its size follows the data, so scans can hand the engine 262,144-row batches in ~150 MB.

The engine reads it column by column (``sparse_column``: exactly what its column views are built
from, with no compaction left to do); match records take their events from ``dense_rows``, a
regular RecordBatch of only the matched rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from sigma_arrow.engine.columns import IntArray, non_null
from sigma_arrow.flatten import scatter_strings

try:
    from sigma_arrow import _cdict
except ImportError:  # pragma: no cover - the extension is built by setup.py
    _cdict = None  # type: ignore[assignment]

_EMPTY = np.empty(0, dtype=np.int64)
#: What a Parquet scan's string columns are (and what the native row/code gather and merge take).
_DICT_STRING = pa.dictionary(pa.int32(), pa.string())
_ZERO_OFFSET = bytes(4)


class SparseBatch:
    """Columns as (sorted rows holding a value, their values); ``rows`` None means every row."""

    __slots__ = ("_columns", "_nbytes", "num_rows", "schema")

    def __init__(self, schema: pa.Schema, columns: Sequence[tuple[IntArray | None, pa.Array]], num_rows: int):
        self.schema = schema
        self.num_rows = num_rows
        self._columns = list(columns)
        self._nbytes: int | None = None  # measured once: scans ask at every merge step

    @classmethod
    def from_batch(cls, batch: pa.RecordBatch) -> SparseBatch:
        """Keep only the set rows of every column (string values are not copied)."""
        columns: list[tuple[IntArray | None, pa.Array]] = []
        for array in batch.columns:
            if array.null_count == 0:
                columns.append((None, array))
            elif array.null_count == len(array):
                columns.append((_EMPTY, array.slice(0, 0)))
            else:
                columns.append(_set_values(array, batch.num_rows))
        return cls(batch.schema, columns, batch.num_rows)

    @classmethod
    def concat(cls, batches: Sequence[SparseBatch], *, consume: bool = False) -> SparseBatch:
        """Stack batches (columns missing from some become null there); ``ArrowTypeError`` on a type clash.

        ``consume``: the parts are emptied column by column as the result is built, so the copy
        never holds two whole batches at once (the parts must not be used afterwards).
        """
        if len(batches) == 1:
            return batches[0]
        fields: dict[str, pa.Field] = {}
        for batch in batches:
            for field in batch.schema:
                known = fields.setdefault(field.name, field)
                if known.type == field.type or pa.types.is_null(field.type):
                    continue
                if pa.types.is_null(known.type):  # a column all null so far takes the other type
                    fields[field.name] = field
                    continue
                raise pa.ArrowTypeError(f"column {field.name!r} is {known.type} and {field.type}")
        starts = np.cumsum([0] + [batch.num_rows for batch in batches]).tolist()
        places = [{name: i for i, name in enumerate(batch.schema.names)} for batch in batches]
        total = int(starts[-1])
        columns: list[tuple[IntArray | None, pa.Array]] = []
        empty: tuple[IntArray | None, pa.Array] = (_EMPTY, pa.array([], type=pa.null()))
        for name in fields:
            parts: list[tuple[IntArray | None, int, int]] = []  # (set rows, first row, rows)
            values: list[pa.Array] = []
            for batch, place, start in zip(batches, places, starts, strict=False):
                position = place.get(name)
                if position is None:
                    continue
                set_rows, array = batch._columns[position]
                if array.type != fields[name].type:  # a null-typed column: no values to keep
                    array = pa.array([], type=fields[name].type)
                    set_rows = _EMPTY
                if consume:
                    batch._columns[position] = empty
                    batch._nbytes = None
                parts.append((set_rows, start, batch.num_rows))
                values.append(array)
            columns.append((_joined_rows(parts, total), _concat_values(values)))
        return cls(pa.schema(list(fields.values())), columns, total)

    def with_full_columns(self, replacements: dict[str, pa.Array]) -> SparseBatch:
        """Return the batch with these columns replaced by arrays of one value per row (types may change)."""
        columns = list(self._columns)
        schema = self.schema
        for name, array in replacements.items():
            if len(array) != self.num_rows:
                raise ValueError(f"column {name!r}: {len(array)} values for {self.num_rows} rows")
            position = schema.get_field_index(name)
            columns[position] = (None, array)
            schema = schema.set(position, pa.field(name, array.type))
        return SparseBatch(schema, columns, self.num_rows)

    def with_sparse_columns(self, replacements: dict[str, tuple[IntArray | None, pa.Array]]) -> SparseBatch:
        """Return the batch with these columns replaced by (sorted set rows or None for all, their values).

        The types stay: each replacement must have its column's type (a reader decoding some columns
        itself puts them in the places it left null).
        """
        if not replacements:
            return self
        columns = list(self._columns)
        for name, (rows, values) in replacements.items():
            position = self.schema.get_field_index(name)
            if position < 0 or values.type != self.schema.field(position).type:
                raise ValueError(f"column {name!r}: no such column of type {values.type}")
            expected = self.num_rows if rows is None else len(rows)
            if len(values) != expected:
                raise ValueError(f"column {name!r}: {len(values)} values for {expected} set rows")
            columns[position] = (rows, values)
        return SparseBatch(self.schema, columns, self.num_rows)

    def select(self, names: Sequence[str]) -> SparseBatch:
        """Return the batch with only these columns, in this order."""
        positions = [self.schema.get_field_index(name) for name in names]
        if any(p < 0 for p in positions):
            raise KeyError(f"no such columns: {[n for n, p in zip(names, positions, strict=True) if p < 0]}")
        schema = pa.schema([self.schema.field(p) for p in positions], metadata=self.schema.metadata)
        return SparseBatch(schema, [self._columns[p] for p in positions], self.num_rows)

    @property
    def nbytes(self) -> int:
        """Bytes held by the values and row lists."""
        if self._nbytes is None:
            total = 0
            for rows, array in self._columns:
                total += array.nbytes + (rows.nbytes if rows is not None else 0)
            self._nbytes = total
        return self._nbytes

    def sparse_column(self, name: str) -> tuple[IntArray | None, pa.Array]:
        """Return one column's (sorted rows holding a value, or None for all rows; those values)."""
        column: tuple[IntArray | None, pa.Array] = self._columns[self.schema.get_field_index(name)]
        return column

    def null_count(self, name: str) -> int:
        """Rows of a column without a value."""
        rows, array = self.sparse_column(name)
        if rows is None:
            return int(array.null_count)
        return self.num_rows - len(rows) + int(array.null_count)

    def column(self, name: str) -> pa.Array:
        """One whole column as a regular array (nulls where unset; dictionary columns decoded)."""
        rows, array = self.sparse_column(name)
        if rows is None:
            return _decoded(array)
        return _decoded(_spread(array, rows, np.arange(self.num_rows, dtype=np.int64)))

    def slice(self, start: int, length: int) -> SparseBatch:
        """Rows ``start`` to ``start + length`` (clipped), renumbered from 0."""
        stop = min(self.num_rows, start + length)
        columns: list[tuple[IntArray | None, pa.Array]] = []
        for rows, array in self._columns:
            if rows is None:
                columns.append((None, array.slice(start, stop - start)))
                continue
            first, last = np.searchsorted(rows, [start, stop])
            columns.append((rows[first:last] - start, array.slice(int(first), int(last - first))))
        return SparseBatch(self.schema, columns, max(stop - start, 0))

    def dense_rows(self, wanted: IntArray) -> tuple[pa.RecordBatch, IntArray]:
        """Return a RecordBatch of the distinct ``wanted`` rows (sorted) and each wanted row's place in it.

        Dictionary columns (a Parquet scan's strings) come back decoded: match records hold the
        values, whatever form the scan kept them in.
        """
        unique, positions = np.unique(wanted, return_inverse=True)
        unique = unique.astype(np.int64, copy=False)
        # Row -> its place among the wanted rows (-1: not wanted). Each sparse column then only
        # looks at its own set rows: work in proportion to the values, not to columns x rows.
        slot = np.full(self.num_rows, -1, dtype=np.int64)
        slot[unique] = np.arange(len(unique), dtype=np.int64)
        arrays = []
        for rows, array in self._columns:
            if rows is None:
                arrays.append(array.take(pa.array(unique, type=pa.int64())))
                continue
            places = slot[rows]
            picked = np.flatnonzero(places >= 0)
            if len(picked) == 0:
                arrays.append(pa.nulls(len(unique), type=array.type))
            elif _is_string_values(array.type) and not array.null_count:
                taken = _decoded(array.take(pa.array(picked, type=pa.int64())))
                arrays.append(scatter_strings(taken, places[picked], len(unique)))
            else:
                indices = np.zeros(len(unique), dtype=np.int64)
                indices[places[picked]] = picked
                present = np.zeros(len(unique), dtype=bool)
                present[places[picked]] = True
                arrays.append(array.take(pa.array(indices, type=pa.int64(), mask=~present)))
        if any(pa.types.is_dictionary(t) for t in self.schema.types):
            arrays = [_decoded(array) for array in arrays]
            schema = pa.schema([_decoded_field(f) for f in self.schema], metadata=self.schema.metadata)
        else:
            schema = self.schema
        batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        return batch, positions.astype(np.int64, copy=False)

    def to_batch(self) -> pa.RecordBatch:
        """Return the whole batch as a regular RecordBatch."""
        return self.dense_rows(np.arange(self.num_rows, dtype=np.int64))[0]


def _is_string_values(data_type: pa.DataType) -> bool:
    """Whether a column holds strings (dictionary-encoded or not)."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return bool(pa.types.is_string(data_type))


def _decoded(array: pa.Array) -> pa.Array:
    """Return a dictionary array as an array of its values (others as they are)."""
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _decoded_field(field: pa.Field) -> pa.Field:
    if pa.types.is_dictionary(field.type):
        return field.with_type(field.type.value_type)
    return field


def _set_values(array: pa.Array, n_rows: int) -> tuple[IntArray, pa.Array]:
    """Return the rows of a column holding a value (int32 when they fit) and those values, compacted.

    A dictionary string column (a Parquet scan's) is gathered natively in one pass over its
    validity bitmap: the rows and their codes, the dictionary shared, not copied.
    """
    if _cdict is not None and array.type == _DICT_STRING and n_rows < 2**31:
        validity, indices = array.buffers()[:2]
        if validity is not None and indices is not None:
            n_set = len(array) - array.null_count
            set_rows, codes = _cdict.dict_rows(validity, indices, array.offset, len(array), n_set)
            values = pa.DictionaryArray.from_buffers(
                _DICT_STRING, n_set, [None, pa.py_buffer(codes)], array.dictionary
            )
            return np.frombuffer(set_rows, dtype=np.int32), values
    rows, values = non_null(array)
    return _narrow(rows, n_rows), values


def _joined_rows(parts: Sequence[tuple[IntArray | None, int, int]], total: int) -> IntArray | None:
    """Set rows of a column stacked from parts (set rows or None for all, first row, rows); None: all."""
    count = sum(p[2] if p[0] is None else len(p[0]) for p in parts)
    if count == 0:
        return _EMPTY
    if count == total:
        return None
    joined: IntArray = np.empty(count, dtype=np.int32 if total < 2**31 else np.int64)
    position = 0
    for set_rows, start, n_rows in parts:
        if set_rows is None:
            joined[position : position + n_rows] = np.arange(start, start + n_rows)
            position += n_rows
            continue
        size = len(set_rows)
        piece = joined[position : position + size]
        piece[:] = set_rows
        piece += start
        position += size
    return joined


def _concat_values(values: list[pa.Array]) -> pa.Array:
    """Concatenate column values; dictionary string columns get one merged dictionary (native)."""
    if len(values) == 1:
        return values[0]
    if _cdict is not None and all(v.type == _DICT_STRING and not v.null_count for v in values):
        dictionaries = [v.dictionary for v in values]
        if not any(d.null_count for d in dictionaries):
            parts = [
                (
                    _buffer(d, 1, _ZERO_OFFSET),
                    _buffer(d, 2),
                    d.offset,
                    len(d),
                    _buffer(v, 1),
                    v.offset,
                    len(v),
                )
                for d, v in zip(dictionaries, values, strict=True)
            ]
            merged = _cdict.unify(parts)
            if merged is not None:
                offsets, data, codes = merged
                dictionary = pa.Array.from_buffers(
                    pa.string(), len(offsets) // 4 - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
                )
                length = len(codes) // 4
                return pa.DictionaryArray.from_buffers(
                    _DICT_STRING, length, [None, pa.py_buffer(codes)], dictionary
                )
    return pa.concat_arrays(values)


def _buffer(array: pa.Array, index: int, missing: bytes = b"") -> pa.Buffer | bytes:
    """Return one of an array's buffers (``missing`` where it has none: empty arrays may lack them)."""
    buffer = array.buffers()[index]
    return missing if buffer is None else buffer


def _narrow(rows: IntArray, n_rows: int) -> IntArray:
    """Row numbers as int32 when they fit: half the memory of the row lists (numpy mixes them freely)."""
    narrowed: IntArray = rows.astype(np.int32) if n_rows < 2**31 else rows
    return narrowed


def _spread(values: pa.Array, rows: IntArray, wanted: IntArray) -> pa.Array:
    """Values of a sparse column at the ``wanted`` rows (sorted), null where the column is unset."""
    if len(rows) == 0:
        return pa.nulls(len(wanted), type=values.type)
    found = np.searchsorted(rows, wanted)
    found[found == len(rows)] = 0
    present = rows[found] == wanted
    indices = pa.array(found, type=pa.int64(), mask=~present)
    return values.take(indices)
