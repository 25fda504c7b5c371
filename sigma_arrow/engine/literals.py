r"""The multi-literal pass: one Aho-Corasick scan of a column's distinct values for all literals.

Values are wrapped as ``\x01 value \x02`` so that one automaton settles contains, startswith and
endswith: a ``startswith`` literal is the pattern ``\x01lit``, ``endswith`` is ``lit\x02`` and
``contains`` is ``lit``. Polars ``str.extract_many`` (Rust aho-corasick, overlapping, GIL released)
returns which patterns occur in each value; a categorical cast maps them back to literal numbers.
Equality literals are one hash lookup (``index_in``) of every value in the set of equality literals.
The few shortest literals (1-2 characters, which hit nearly every value) use an Arrow kernel, and
values or literals containing the sentinels take an exact slow path.

When the C extension ``sigma_arrow._cscan`` is built (and ``SIGMA_ARROW_PURE_PYTHON_SCAN`` is not
set to 1), every scan runs there instead: one Aho-Corasick automaton per (column, cased) group, built
once per ruleset, reads the Arrow buffers in place with the GIL released and returns the sorted,
distinct (literal, value) hits. Its anchors are symbols outside the byte range, so sentinel bytes in
values or literals need no slow path there, and short literals stay in the automaton (the 12
shortest CommandLine literals as Arrow kernels cost 15 ms more than they save). Each non-keyword
column is scanned for its whole group at once; keyword views scan the wanted subset (see
``GroupAutomaton.subset``), all columns in one native call (a chunked array: no concatenated
copy). Uncased groups' automata fold ASCII case themselves, so they scan the original text: only
values holding non-ASCII bytes are lowercased by Python (``native_hits``). How the scanner skips
text (a SIMD nibble-mask prefilter for keyword-like sets, Wu-Manber, a long window for hashes) is
chosen per automaton when it is built (see the header of ``_cscan.c``). The polars /
pyahocorasick code below is the fallback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from compiler.ir import MatchKind
from sigma_arrow.engine.columns import IntArray, python_lower

try:  # the native scanner (setup.py builds it when a C compiler is there); else polars / pyahocorasick
    from sigma_arrow import _cscan
except ImportError:  # pragma: no cover - depends on the build
    _cscan = None  # type: ignore[assignment]

#: Set to ``1`` to scan with polars / pyahocorasick even when the native scanner is built.
PURE_PYTHON_ENV = "SIGMA_ARROW_PURE_PYTHON_SCAN"

#: Contains/startswith/endswith literals shorter than this use an Arrow kernel instead of the automaton.
SHORT = 3
#: At most this many short literals per scan take the kernel path (each kernel is a full pass).
MAX_DIRECT = 12
#: Scans with at most this many patterns over more than PREFILTER_VALUES values look for values with
#: any hit first (one boolean pass) and build match lists only for those.
PREFILTER_PATTERNS = 256
PREFILTER_VALUES = 4096
#: Columns with at most this many distinct values are scanned with the group's prebuilt automaton
#: (``GroupAutomaton``): building an automaton per scan costs more than scanning a few values.
SMALL_VALUES = 2048
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
    import polars as pl  # imported when first needed: ~0.09 s that scan workers mostly never pay

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


#: A subset of a group's literals at least this share (1/SHARE_FRACTION) of the group is scanned with
#: the group's automaton, dropping the other literals' hits; smaller ones get their own automaton.
SHARE_FRACTION = 2
#: Subset automata kept per group (the wanted literals of a lane are mostly the same every batch).
MAX_SUBSETS = 8
_FLAGS: dict[str, int] = {"contains": 0, "startswith": 1, "endswith": 2, "equals": 3}


def native_scan_enabled() -> bool:
    """Whether scans run in the native scanner (built, and not switched off)."""
    return _cscan is not None and os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")


def native_automaton(
    literals: Sequence[tuple[MatchKind, str]],
    fold: bool = False,
    skip: int = -1,
    buffered: bool = True,
    split_bytes: bool = True,
    dense_depth: int = -1,
) -> _cscan.Automaton:
    """Build the C automaton of some literals: equal (kind, value) pairs share one pattern.

    ``fold``: ASCII letters match case-insensitively (the literals must hold no uppercase ASCII).
    ``skip`` and ``buffered`` choose how the scan skips text (tests pin each way; the default picks):
    -1 auto, 0 never, 1 first-bytes table, 2 Wu-Manber, 3 nibble-mask prefilter; ``buffered``
    lets the skip run over a whole data buffer when only unanchored literals are present;
    ``split_bytes`` finds one-byte ``contains`` literals by a byte pass instead of the automaton;
    ``dense_depth``: states this shallow get complete transition rows (-1: all of a small automaton's).
    """
    owners: dict[tuple[bytes, int], list[int]] = {}
    for position, (kind, value) in enumerate(literals):
        # surrogatepass: a lone surrogate cannot occur in valid UTF-8 text, so it never matches.
        key = (value.encode("utf-8", "surrogatepass"), _FLAGS[kind])
        owners.setdefault(key, []).append(position)
    return _cscan.Automaton(
        [(body, flags, positions) for (body, flags), positions in owners.items()],
        len(literals),
        fold=fold,
        skip=skip,
        buffered=buffered,
        split_bytes=split_bytes,
        dense_depth=dense_depth,
    )


def _lowercase(literals: Sequence[tuple[MatchKind, str]]) -> bool:
    """Whether no literal holds an uppercase ASCII letter (a folding automaton may hold them)."""
    return not any(any("A" <= ch <= "Z" for ch in value) for _, value in literals)


def native_hits(
    automaton: _cscan.Automaton,
    values: pa.Array | pa.ChunkedArray,
    relabel: bytes | None,
    n_out: int,
    fold: bool = False,
    grouped: bool = False,
) -> tuple[IntArray, IntArray]:
    """Scan string values with a C automaton: (literal, value) hits sorted by literal then value.

    ``fold``: the values are the original text and the literals lowercase; the scanner reads ASCII
    letters as lowercase (no lowercased copy of the values), and the few values holding non-ASCII
    bytes, which ``str.lower`` may change in other ways, are lowercased in Python and scanned apart.
    A chunked array (a keyword view: hundreds of columns) is scanned in one native call, its value
    positions running on from chunk to chunk, with no concatenated copy. ``grouped``: the first
    array is each literal's number of hits (``n_out`` entries) instead of each hit's literal.
    """
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    arrays = []
    for position, chunk in enumerate(chunks):
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            chunk = chunks[position] = chunk.cast(pa.large_string())
        validity, offsets, data = chunk.buffers()[:3]
        arrays.append(
            (
                offsets,
                b"" if data is None else data,
                validity if chunk.null_count else None,
                pa.types.is_large_string(chunk.type),
                chunk.offset,
                len(chunk),
            )
        )
    found = automaton.scan_many(arrays, fold, relabel, n_out, grouped)
    first = np.frombuffer(found[0], dtype=np.int64)
    value_pos = np.frombuffer(found[1], dtype=np.int64)
    skipped = np.frombuffer(found[2], dtype=np.int64) if fold else value_pos[:0]
    if len(skipped) == 0:
        return first, value_pos
    # The few skipped values, taken chunk by chunk (a take on a chunked array costs milliseconds).
    starts = np.cumsum([0] + [len(chunk) for chunk in chunks])
    owner = np.searchsorted(starts, skipped, side="right") - 1
    parts = []
    for index in np.unique(owner).tolist():
        local = skipped[owner == index] - starts[index]
        parts.append(chunks[index].take(pa.array(local, type=pa.int64())))
    if any(part.type != parts[0].type for part in parts):
        parts = [part.cast(pa.large_string()) for part in parts]
    lowered = python_lower(pa.concat_arrays(parts))
    literal_pos = np.repeat(np.arange(n_out, dtype=np.int64), first) if grouped else first
    literal_pos, value_pos = _merge_skipped(
        automaton, literal_pos, value_pos, skipped, lowered, relabel, n_out
    )
    if grouped:
        return np.bincount(literal_pos, minlength=n_out).astype(np.int64, copy=False), value_pos
    return literal_pos, value_pos


def _merge_skipped(
    automaton: _cscan.Automaton,
    literal_pos: IntArray,
    value_pos: IntArray,
    skipped: IntArray,
    lowered: pa.Array,
    relabel: bytes | None,
    n_out: int,
) -> tuple[IntArray, IntArray]:
    """Add the hits of the values a folding scan left out (non-ASCII), scanned lowercased by Python."""
    more_literals, more_values = native_hits(automaton, lowered, relabel, n_out)
    if len(more_literals) == 0:
        return literal_pos, value_pos
    literal_pos = np.concatenate((literal_pos, more_literals))
    value_pos = np.concatenate((value_pos, skipped[more_values]))
    order = np.lexsort((value_pos, literal_pos))
    return literal_pos[order], value_pos[order]


def literal_hits(values: pa.Array, literals: Sequence[tuple[MatchKind, str]]) -> tuple[IntArray, IntArray]:
    """Every (literal position, value position) hit, sorted by literal then value.

    ``values`` are already folded the way the literals are (lowercased unless cased); null values
    never hit. Hits are gathered as one int64 key ``literal * n_values + value`` per pair, so a
    single sort orders them (cheaper than a two-key lexsort of ~10^6 pairs).
    """
    n_values = len(values)
    empty = np.empty(0, dtype=np.int64)
    if n_values == 0 or not literals:
        return empty, empty
    if native_scan_enabled():
        return native_hits(native_automaton(literals), values, None, len(literals))
    key_parts: list[IntArray] = []

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
            key_parts.append(hits + position * n_values)
        else:
            patterns.setdefault(_pattern(kind, value), []).append(position)

    if equals:
        # Equality literals: one hash lookup of every value in the literal set.
        keys = list(equals)
        found_key = pc.index_in(values, value_set=pa.array(keys, type=values.type))
        key_codes = found_key.to_numpy(zero_copy_only=False)
        matched = np.flatnonzero(found_key.is_valid().to_numpy(zero_copy_only=False)).astype(np.int64)
        codes = key_codes[matched].astype(np.int64)
        key_parts.extend(_owned_keys(codes, matched, [equals[k] for k in keys], n_values))

    if patterns:
        import polars as pl

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
        rows = None
        if len(names) <= PREFILTER_PATTERNS and len(series) > PREFILTER_VALUES:
            # Few patterns over many values (keywords over every column): most values hit nothing, so
            # find the values with any hit first (no match lists built) and extract only from those.
            any_hit = series.str.contains_any(names).fill_null(False)
            rows = np.flatnonzero(any_hit.to_numpy())
            series = series.gather(rows)
        # One polars pipeline (Rust, multi-threaded): matches -> distinct (pattern code, value) keys.
        pair_keys = (
            pl.DataFrame({"m": series.str.extract_many(names, overlapping=True)})
            .with_row_index("v")
            .lazy()
            .explode("m")
            .drop_nulls("m")
            .select(
                pl.col("m").cast(pl.Enum(names)).to_physical().cast(pl.Int64) * n_values
                + pl.col("v").cast(pl.Int64)
            )
            .unique()
            .collect()
            .to_series()
            .to_numpy()
        )
        pattern_codes, value_positions = np.divmod(pair_keys.astype(np.int64, copy=False), n_values)
        if rows is not None:
            value_positions = rows[value_positions]
        if len(special):
            keep = ~np.isin(value_positions, special)
            pattern_codes, value_positions = pattern_codes[keep], value_positions[keep]
        key_parts.extend(_owned_keys(pattern_codes, value_positions, [patterns[n] for n in names], n_values))
        if len(special):
            texts = values.take(pa.array(special)).to_pylist()
            for value_position, text in zip(special.tolist(), texts, strict=True):
                for position, (kind, value) in enumerate(literals):
                    if kind == "equals" or _START in value or _END in value or position in direct:
                        continue
                    if _python_hits(text, kind, value):
                        key_parts.append(np.array([position * n_values + value_position], dtype=np.int64))

    if not key_parts:
        return empty, empty
    ordered = np.sort(np.concatenate(key_parts))
    lit_all, val_all = np.divmod(ordered, n_values)
    return lit_all, val_all


def _owned_keys(
    codes: IntArray, value_positions: IntArray, owners: list[list[int]], n_values: int
) -> list[IntArray]:
    """Turn (pattern code, value) hits into literal keys; a pattern may stand for several literals."""
    if all(len(o) == 1 for o in owners):
        code_to_lit = np.array([o[0] for o in owners], dtype=np.int64)
        return [code_to_lit[codes] * n_values + value_positions]
    parts = []
    for code, positions in enumerate(owners):
        selected = value_positions[codes == code]
        for position in positions:
            parts.append(selected + position * n_values)
    return parts


class GroupAutomaton:
    """All literals of one (column, cased) group in one Aho-Corasick automaton, built once per ruleset.

    ``literal_hits`` builds its automaton on every call, which is what costs most when a column has
    few distinct values (a batch of repeated events, a low-cardinality field): this one is reused by
    every batch. Natively (``sigma_arrow._cscan``) it scans any number of values in C; otherwise it
    walks the values one by one in Python (cheap for a few thousand values).
    """

    def __init__(self, literals: Sequence[tuple[MatchKind, str]], fold: bool = False) -> None:
        """``fold``: the literals are lowercase and ``hits`` may be given the original text natively."""
        self.literals = list(literals)
        #: The C automaton (None: pure Python) and, for a subset sharing its parent's automaton, the
        #: parent literal -> subset position map (-1: not reported).
        self.native: _cscan.Automaton | None = None
        self.relabel: bytes | None = None
        self._subsets: dict[bytes, GroupAutomaton] = {}
        self._python: ahocorasick.Automaton | None = None
        self.odd: list[int] = []
        self.empty = True
        #: Whether ``hits`` takes the original text (native folding scan) rather than lowercased values.
        self.folds = False
        if native_scan_enabled():
            self.folds = fold and _lowercase(self.literals)
            self.native = native_automaton(self.literals, self.folds)

    def scans_whole(self, n_values: int) -> bool:
        """Whether scanning every literal of the group over ``n_values`` values is the cheap way."""
        return self.native is not None or n_values <= SMALL_VALUES

    def subset(self, positions: IntArray) -> GroupAutomaton | list[tuple[MatchKind, str]]:
        """Return a scanner of some of the group's literals (hits relative to ``positions``).

        Natively: the group's own automaton reporting only those literals when they are most of
        the group, else a smaller automaton built for them (kept for the next batches). In pure
        Python mode: the literal list, for ``literal_hits``.
        """
        if self.native is None:
            return [self.literals[i] for i in positions.tolist()]
        if len(positions) == len(self.literals):
            return self
        key = positions.astype(np.int64).tobytes()
        found = self._subsets.get(key)
        if found is None:
            if len(self._subsets) >= MAX_SUBSETS:
                self._subsets.pop(next(iter(self._subsets)))
            chosen = [self.literals[i] for i in positions.tolist()]
            if len(positions) * SHARE_FRACTION >= len(self.literals):
                found = GroupAutomaton.__new__(GroupAutomaton)
                found.literals = chosen
                found.native = self.native
                relabel = np.full(len(self.literals), -1, dtype=np.int32)
                relabel[positions] = np.arange(len(positions), dtype=np.int32)
                found.relabel = relabel.tobytes()
                found._subsets = {}
                found._python = None
                found.odd = []
                found.empty = True
                found.folds = self.folds
            else:
                found = GroupAutomaton(chosen, self.folds)
            self._subsets[key] = found
        return found

    def hits(self, values: pa.Array) -> tuple[IntArray, IntArray]:
        """Every (literal position, value position) hit, sorted by literal then value.

        ``values`` are folded like the literals, unless ``folds``: then they are the original text.
        """
        if self.native is not None:
            return native_hits(self.native, values, self.relabel, len(self.literals), self.folds)
        return self._python_walk(values)

    def hits_grouped(self, values: pa.Array) -> tuple[IntArray, IntArray]:
        """``hits`` as (hits per literal position, value positions sorted by literal then value)."""
        if self.native is not None:
            return native_hits(
                self.native, values, self.relabel, len(self.literals), self.folds, grouped=True
            )
        literal_pos, value_pos = self._python_walk(values)
        return np.bincount(literal_pos, minlength=len(self.literals)).astype(np.int64, copy=False), value_pos

    def _python_automaton(self) -> ahocorasick.Automaton:
        if self._python is None:
            automaton = ahocorasick.Automaton()
            owners: dict[str, list[int]] = {}
            #: Literals the automaton cannot hold exactly (empty, or containing a sentinel).
            self.odd = []
            for position, (kind, value) in enumerate(self.literals):
                if value == "" or _START in value or _END in value:
                    self.odd.append(position)
                else:
                    owners.setdefault(_pattern(kind, value), []).append(position)
            for pattern, positions in owners.items():
                automaton.add_word(pattern, tuple(positions))
            if owners:
                automaton.make_automaton()
            self.empty = not owners
            self._python = automaton
        return self._python

    def _python_walk(self, values: pa.Array) -> tuple[IntArray, IntArray]:
        n_values = len(values)
        keys: list[int] = []
        iterate = self._python_automaton().iter
        for position, text in enumerate(values.to_pylist()):
            if text is None:
                continue
            if _START in text or _END in text:
                # Sentinels inside the value would fake anchors: test every literal exactly.
                for literal, (kind, value) in enumerate(self.literals):
                    if _python_hits(text, kind, value):
                        keys.append(literal * n_values + position)
                continue
            if not self.empty:
                for _, literals in iterate(_START + text + _END):
                    for literal in literals:
                        keys.append(literal * n_values + position)
            for literal in self.odd:
                kind, value = self.literals[literal]
                if _python_hits(text, kind, value):
                    keys.append(literal * n_values + position)
        if not keys:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        ordered = np.unique(np.array(keys, dtype=np.int64))
        lit_all, val_all = np.divmod(ordered, n_values)
        return lit_all, val_all
