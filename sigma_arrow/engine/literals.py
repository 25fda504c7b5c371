r"""The multi-literal pass: one Aho-Corasick scan of a column's distinct values for all literals.

Values are wrapped as ``\x01 value \x02`` so that one automaton settles contains, startswith and
endswith: a ``startswith`` literal is the pattern ``\x01lit``, ``endswith`` is ``lit\x02`` and
``contains`` is ``lit``. Polars ``str.extract_many`` (Rust aho-corasick, overlapping, GIL released)
returns which patterns occur in each value; a categorical cast maps them back to literal numbers.
Equality literals are one hash lookup (``index_in``) of every value in the set of equality literals.
The few shortest literals (1-2 characters, which hit nearly every value) use an Arrow kernel, and
values or literals containing the sentinels take an exact slow path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from compiler.ir import MatchKind
from sigma_arrow.engine.columns import IntArray

#: Contains/startswith/endswith literals shorter than this use an Arrow kernel instead of the automaton.
SHORT = 3
#: At most this many short literals per scan take the kernel path (each kernel is a full pass).
MAX_DIRECT = 12
_START = "\x01"
_END = "\x02"


def _pattern(kind: MatchKind, value: str) -> str:
    if kind == "contains":
        return value
    if kind == "startswith":
        return _START + value
    if kind == "endswith":
        return value + _END
    return _START + value + _END


def _direct(values: pa.Array, kind: MatchKind, value: str) -> IntArray:
    """Exact hits of one literal with a vectorised kernel (whole array; polars, memchr-based)."""
    series = pl.Series("v", values)
    if kind == "contains":
        mask = series.str.contains(value, literal=True)
    elif kind == "startswith":
        mask = series.str.starts_with(value)
    elif kind == "endswith":
        mask = series.str.ends_with(value)
    else:
        mask = series == value
    return np.flatnonzero(mask.fill_null(False).to_numpy()).astype(np.int64)


def _python_hits(text: str, kind: MatchKind, value: str) -> bool:
    if kind == "contains":
        return value in text
    if kind == "startswith":
        return text.startswith(value)
    if kind == "endswith":
        return text.endswith(value)
    return text == value


def literal_hits(values: pa.Array, literals: Sequence[tuple[MatchKind, str]]) -> tuple[IntArray, IntArray]:
    """Every (literal position, value position) hit, sorted by literal then value.

    ``values`` are already folded the way the literals are (lowercased unless cased); null values
    never hit.
    """
    n_values = len(values)
    empty = np.empty(0, dtype=np.int64)
    if n_values == 0 or not literals:
        return empty, empty
    lit_parts: list[IntArray] = []
    val_parts: list[IntArray] = []

    patterns: dict[str, list[int]] = {}
    equals: dict[str, list[int]] = {}
    short = sorted(
        (len(value), position)
        for position, (kind, value) in enumerate(literals)
        if kind != "equals" and len(value) < SHORT
    )
    direct = {position for _, position in short[:MAX_DIRECT]}
    for position, (kind, value) in enumerate(literals):
        if kind == "equals":
            equals.setdefault(value, []).append(position)
        elif _START in value or _END in value or position in direct:
            # Very short literals hit most values: an Arrow kernel beats materialising AC matches.
            if value == "":
                hits = np.flatnonzero(values.is_valid().to_numpy(zero_copy_only=False)).astype(np.int64)
            else:
                hits = _direct(values, kind, value)
            lit_parts.append(np.full(len(hits), position, dtype=np.int64))
            val_parts.append(hits)
        else:
            patterns.setdefault(_pattern(kind, value), []).append(position)

    if equals:
        # Equality literals: one hash lookup of every value in the literal set.
        keys = list(equals)
        found_key = pc.index_in(values, value_set=pa.array(keys, type=values.type))
        key_codes = found_key.to_numpy(zero_copy_only=False)
        matched = np.flatnonzero(found_key.is_valid().to_numpy(zero_copy_only=False)).astype(np.int64)
        codes = key_codes[matched].astype(np.int64)
        owners = [equals[k] for k in keys]
        if all(len(o) == 1 for o in owners):
            lit_parts.append(np.array([o[0] for o in owners], dtype=np.int64)[codes])
            val_parts.append(matched)
        else:
            for code, positions in enumerate(owners):
                selected = matched[codes == code]
                for position in positions:
                    lit_parts.append(np.full(len(selected), position, dtype=np.int64))
                    val_parts.append(selected)

    if patterns:
        series = pl.Series("m", values)
        anchored = any(name.startswith(_START) or name.endswith(_END) for name in patterns)
        if anchored:
            # Sentinels are only needed (and only ambiguous) when start/end anchored patterns exist.
            sentinel_rows = series.str.contains_any([_START, _END]).fill_null(False).to_numpy()
            special = np.flatnonzero(sentinel_rows)
            text_type = values.type
            series = pl.Series(
                "m",
                pc.binary_join_element_wise(
                    pa.scalar(_START, text_type), values, pa.scalar(_END, text_type), pa.scalar("", text_type)
                ),
            )
        else:
            special = np.empty(0, dtype=np.int64)
        names = list(patterns)
        found = series.str.extract_many(names, overlapping=True)
        frame = (
            pl.DataFrame({"v": np.arange(n_values, dtype=np.int64), "m": found})
            .explode("m")
            .drop_nulls("m")
            .unique()
        )
        pattern_codes = frame["m"].cast(pl.Enum(names)).to_physical().to_numpy().astype(np.int64)
        value_positions = frame["v"].to_numpy().astype(np.int64)
        if len(special):
            keep = ~np.isin(value_positions, special)
            pattern_codes, value_positions = pattern_codes[keep], value_positions[keep]
        # One pattern can stand for several literal positions only if literals repeat: expand.
        owners = [patterns[name] for name in names]
        if all(len(o) == 1 for o in owners):
            code_to_lit = np.array([o[0] for o in owners], dtype=np.int64)
            lit_parts.append(code_to_lit[pattern_codes])
            val_parts.append(value_positions)
        else:
            for code, positions in enumerate(owners):
                selected = value_positions[pattern_codes == code]
                for position in positions:
                    lit_parts.append(np.full(len(selected), position, dtype=np.int64))
                    val_parts.append(selected)
        if len(special):
            texts = values.take(pa.array(special)).to_pylist()
            for value_position, text in zip(special.tolist(), texts, strict=True):
                for position, (kind, value) in enumerate(literals):
                    if kind == "equals" or _START in value or _END in value or position in direct:
                        continue
                    if _python_hits(text, kind, value):
                        lit_parts.append(np.array([position], dtype=np.int64))
                        val_parts.append(np.array([value_position], dtype=np.int64))

    lit_all = np.concatenate(lit_parts) if lit_parts else empty
    val_all = np.concatenate(val_parts) if val_parts else empty
    order = np.lexsort((val_all, lit_all))
    return lit_all[order], val_all[order]
