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

_EMPTY = np.empty(0, dtype=np.int64)


class SparseBatch:
    """Columns as (sorted rows holding a value, their values); ``rows`` None means every row."""

    __slots__ = ("_columns", "num_rows", "schema")

    def __init__(self, schema: pa.Schema, columns: Sequence[tuple[IntArray | None, pa.Array]], num_rows: int):
        self.schema = schema
        self.num_rows = num_rows
        self._columns = list(columns)

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
                rows, values = non_null(array)
                columns.append((_narrow(rows, batch.num_rows), values))
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
        starts = np.cumsum([0] + [batch.num_rows for batch in batches])
        places = [{name: i for i, name in enumerate(batch.schema.names)} for batch in batches]
        total = int(starts[-1])
        columns: list[tuple[IntArray | None, pa.Array]] = []
        empty: tuple[IntArray | None, pa.Array] = (_EMPTY, pa.array([], type=pa.null()))
        for name in fields:
            rows: list[IntArray] = []
            values: list[pa.Array] = []
            for batch, place, start in zip(batches, places, starts.tolist(), strict=False):
                position = place.get(name)
                if position is None:
                    continue
                set_rows, array = batch._columns[position]
                if array.type != fields[name].type:  # a null-typed column: no values to keep
                    array = pa.array([], type=fields[name].type)
                    set_rows = _EMPTY
                if consume:
                    batch._columns[position] = empty
                if set_rows is None:
                    set_rows = np.arange(batch.num_rows, dtype=np.int64)
                rows.append(set_rows.astype(np.int64) + start)
                values.append(array)
            joined = _narrow(np.concatenate(rows), total) if rows else _EMPTY
            columns.append((None if len(joined) == total else joined, pa.concat_arrays(values)))
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

    @property
    def nbytes(self) -> int:
        """Bytes held by the values and row lists."""
        total = 0
        for rows, array in self._columns:
            total += array.nbytes + (rows.nbytes if rows is not None else 0)
        return total

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
