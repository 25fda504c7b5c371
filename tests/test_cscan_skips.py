"""Every way the native scanner skips text finds exactly the definition's hits.

The scanner may skip text at the automaton's root by a first-bytes table, Wu-Manber shifts or a
nibble-mask prefilter (SIMD when the CPU has AVX2), and, when only unanchored literals are present,
run that skip over a whole data buffer across value boundaries ("buffered"). Each combination is
pinned here and compared with the definition (``str_match``), folded or not, on values that stress
the boundaries: matches straddling two values, null slots holding bytes, sliced arrays, the tail of
the buffer, non-ASCII text.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.reference import str_match
from sigma_arrow.engine.literals import PURE_PYTHON_ENV, native_automaton, native_hits

_cscan = pytest.importorskip("sigma_arrow._cscan")

KINDS = ("contains", "startswith", "endswith", "equals")
#: (skip, buffered): auto, none, first-bytes table, Wu-Manber, prefilter, long window (hashes);
#: each per value and buffered.
WAYS = [(skip, buffered) for skip in (-1, 0, 1, 2, 3, 4) for buffered in (False, True)]
#: (dense_depth, split_bytes): a small automaton is all dense rows by default; pinned shallow, its
#: sparse states (failure links, chains of single children) are walked too.
LAYOUTS = [(-1, True), (0, True), (1, False), (3, True)]

Literals = list[tuple[str, str]]


@pytest.fixture(autouse=True)
def native_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the native scanner: run them natively even when the suite is not."""
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)


def expected(values: list[str | None], lits: Literals, fold: bool) -> list[tuple[int, int]]:
    """The definition: (literal, value) pairs where the literal matches (the value lowercased if fold)."""
    return sorted(
        (lit, pos)
        for (lit, (kind, value)), (pos, text) in itertools.product(enumerate(lits), enumerate(values))
        if text is not None and str_match(kind, text.lower() if fold else text, value)
    )


def scanned(
    values: pa.Array,
    lits: Literals,
    fold: bool,
    skip: int,
    buffered: bool,
    layout: tuple[int, bool] = (-1, True),
) -> list[tuple[int, int]]:
    dense_depth, split_bytes = layout
    automaton = native_automaton(
        lits,  # type: ignore[arg-type]
        fold,
        skip=skip,
        buffered=buffered,
        split_bytes=split_bytes,
        dense_depth=dense_depth,
    )
    literal_pos, value_pos = native_hits(automaton, values, None, len(lits), fold)
    return list(zip(literal_pos.tolist(), value_pos.tolist(), strict=True))


def check_every_way(
    values: list[str | None], lits: Literals, fold: bool, array: pa.Array | None = None
) -> None:
    if fold:
        lits = [(kind, value.lower()) for kind, value in lits]
        lits = [(kind, value) for kind, value in lits if not any("A" <= ch <= "Z" for ch in value)]
    array = pa.array(values, type=pa.string()) if array is None else array
    want = expected(values, lits, fold)
    for skip, buffered in WAYS:
        assert scanned(array, lits, fold, skip, buffered) == want, (skip, buffered)
    for layout in LAYOUTS:
        for skip, buffered in ((-1, True), (0, False)):
            assert scanned(array, lits, fold, skip, buffered, layout) == want, (skip, buffered, layout)
    # Grouped: each literal's number of hits, then the same value positions.
    automaton = native_automaton(lits, fold)  # type: ignore[arg-type]
    per_literal, value_pos = native_hits(automaton, array, None, len(lits), fold, grouped=True)
    assert per_literal.tolist() == [sum(1 for lit, _ in want if lit == n) for n in range(len(lits))]
    assert value_pos.tolist() == [pos for _, pos in want]


KEYWORDS: Literals = [
    ("contains", text)
    for text in ("mimikatz", "sekurlsa::", "katz", "hktl", "atk/", "invoke-", "powersploit", "cobalt", "mimi")
]
STRAIGHT_VALUES: list[str | None] = [
    "c:\\tools\\mimi",  # ends with the start of a literal ...
    "katz.exe",  # ... and the next value starts with its rest: no hit across values
    "Invoke-Mimikatz -Command sekurlsa::logonpasswords",
    "",
    None,
    "powersploit",
    "x" * 70 + "cobalt",  # long values: several 32-byte blocks
    "COBALT strike" + "y" * 40,
    "short",
    "mimikatz",  # the last value: the buffer's tail is scanned one byte at a time
]

CASES: dict[str, tuple[list[str | None], Literals]] = {
    "unanchored literals across value boundaries": (STRAIGHT_VALUES, KEYWORDS),
    "anchored and unanchored": (
        STRAIGHT_VALUES,
        [*KEYWORDS, ("startswith", "katz"), ("endswith", "mimi"), ("equals", "short"), ("contains", "")],
    ),
    "one- and two-byte literals": (
        ["a", "ba", "", "abc", None, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzza", "B"],
        [("contains", "a"), ("contains", "ab"), ("contains", "zb"), ("contains", "b")],
    ),
    "non-ASCII values and literals": (
        ["café", "CAFÉ", "naïve katz", "KELVIN \u212a", "straße", "ǅ", None, "x" * 40 + "é"],
        [
            ("contains", "café"),
            ("contains", "é"),
            ("contains", "k"),
            ("contains", "katz"),
            ("contains", "ss"),
        ],
    ),
    "many literals (16 buckets, 6-byte window)": (
        STRAIGHT_VALUES,
        [("contains", f"{word}{n}") for word in ("mimi", "katz", "cobalt", "x" * 5) for n in range(12)]
        + KEYWORDS,
    ),
}


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_every_skip_matches_the_definition(case: str, fold: bool) -> None:
    values, lits = CASES[case]
    check_every_way(values, lits, fold)


def test_null_slots_holding_bytes_and_slices() -> None:
    """Null slots whose bytes would hit are no values; sliced arrays keep their positions."""
    texts = ["mimikatz", "hktl here", "nothing", "atk/ and katz", "cobalt"]
    data = "".join(texts).encode()
    offsets = np.cumsum([0, *(len(t) for t in texts)]).astype(np.int32)
    validity = np.packbits(np.array([1, 0, 1, 0, 1], dtype=bool), bitorder="little")
    array = pa.Array.from_buffers(
        pa.string(), len(texts), [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)], 2
    )
    values: list[str | None] = [t if i % 2 == 0 else None for i, t in enumerate(texts)]
    check_every_way(values, KEYWORDS, False, array)
    for start, length in [(1, 4), (2, 3), (3, 0), (4, 1)]:
        check_every_way(values[start : start + length], KEYWORDS, False, array.slice(start, length))
    wide = pa.array(STRAIGHT_VALUES, type=pa.large_string())
    check_every_way(STRAIGHT_VALUES, KEYWORDS, True, wide)


def test_the_prefilter_is_chosen_for_keyword_like_sets() -> None:
    """Many unanchored literals of 4+ bytes: the prefilter, run over the buffer (when AVX2 is there)."""
    automaton = native_automaton(KEYWORDS)  # type: ignore[arg-type]
    assert automaton.buffered
    assert automaton.teddy_rate < 0.02
    anchored = native_automaton([*KEYWORDS, ("startswith", "abc")])  # type: ignore[list-item]
    assert not anchored.buffered  # a value's start matters: value by value
    forced = native_automaton(KEYWORDS, skip=3)  # type: ignore[arg-type]
    assert forced.skips == "teddy"


@pytest.mark.parametrize("seed", range(6))
def test_random_literals_and_values(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "abcAB:\\. é\u212a"
    values: list[str | None] = [
        None if rng.random() < 0.05 else "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for _ in range(120)
    ]
    kinds = ("contains",) * 6 + KINDS if seed % 2 else ("contains",)
    lits: Literals = [
        (rng.choice(kinds), "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))))
        for _ in range(rng.choice((5, 40, 300)))
    ]
    for text in rng.sample([v for v in values if v], 20):  # substrings of the values: plenty of hits
        start = rng.randint(0, len(text))
        lits.append((rng.choice(kinds), text[start : start + rng.randint(1, 9)]))
    for fold in (False, True):
        check_every_way(values, lits, fold)


TEXT = st.text(alphabet="abAB:é\u212a", max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), TEXT), max_size=12),
    lits=st.lists(
        st.tuples(st.sampled_from(KINDS), st.text(alphabet="abAB:é", max_size=6)), min_size=1, max_size=40
    ),
    fold=st.booleans(),
)
def test_every_skip_agrees_with_the_definition(values: list[str | None], lits: Literals, fold: bool) -> None:
    check_every_way(values, lits, fold)


@pytest.mark.parametrize("n_literals", [1, 40])
def test_a_hit_at_every_offset_of_long_values(n_literals: int) -> None:
    """The SIMD prefilter steps 32 bytes at a time: a literal at any offset of a value is found."""
    lits: Literals = [("contains", f"qz{n:02d}wy") for n in range(n_literals)]
    values: list[str | None] = [
        "x" * offset + f"QZ{offset % n_literals:02d}WY" + "x" * (offset % 7) for offset in range(0, 100)
    ]
    values += ["x" * 90, *(f"qz{n:02d}wy" for n in range(n_literals))]  # the tail: short values
    check_every_way(values, lits, True)
    check_every_way(values, [(kind, value.upper()) for kind, value in lits], False)


@pytest.mark.parametrize("fold", [False, True])
def test_chunked_values_scan_in_one_call(fold: bool) -> None:
    """A keyword view's chunks (one per column) scan as one array: positions run on over chunks,
    empty and sliced chunks included, and folded scans' non-ASCII values are found in any chunk."""
    rng = random.Random(3)
    alphabet = "abkAK:é\u212a"
    pieces: list[list[str | None]] = [
        [
            None if rng.random() < 0.1 else "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50)))
            for _ in range(size)
        ]
        for size in (5, 0, 40, 1, 0, 33)
    ]
    arrays = [pa.array(piece, type=pa.string()) for piece in pieces]
    arrays[2] = pa.array(["pad", *pieces[2], "pad"], type=pa.string()).slice(1, len(pieces[2]))
    chunked = pa.chunked_array(arrays, type=pa.string())
    values = [value for piece in pieces for value in piece]
    lits: Literals = [("contains", "k"), ("contains", "ab"), ("contains", "kaka"), ("endswith", "é")]
    lits += [(rng.choice(KINDS), "".join(rng.choice("abk") for _ in range(3))) for _ in range(30)]
    if fold:
        lits = [(kind, value.lower()) for kind, value in lits]
    want = expected(values, lits, fold)
    for skip, buffered in WAYS:
        automaton = native_automaton(lits, fold, skip=skip, buffered=buffered)  # type: ignore[arg-type]
        literal_pos, value_pos = native_hits(automaton, chunked, None, len(lits), fold)
        assert list(zip(literal_pos.tolist(), value_pos.tolist(), strict=True)) == want, (skip, buffered)


@pytest.mark.parametrize("fold", [False, True])
def test_chains_of_single_children(fold: bool) -> None:
    """Long literals are chains of states matched by a byte compare: a value leaving the chain at any
    byte, in either case, falls back to the automaton exactly (suffix literals still hit)."""
    word = "Abcdefghijkl"
    lits: Literals = [("contains", word), ("contains", "efgh"), ("endswith", "ijk"), ("contains", "bcdX")]
    values: list[str | None] = []
    for cut in range(len(word) + 1):
        for other in ("X", "e", "#"):
            values.append("zz" + word[:cut] + other + word[cut:] + "q")
            values.append((word[:cut] + other).swapcase())
    check_every_way(values, lits, fold)


@pytest.mark.parametrize("fold", [False, True])
def test_long_literals_skip_by_long_windows(fold: bool) -> None:
    """Hash literals (all 16+ bytes, unanchored): windows of their length, shifted by 6-byte blocks;
    where a window may hold a start, the trie is followed from there (no hit is missed or made up)."""
    rng = random.Random(11)
    hashes = [
        "".join(rng.choice("0123456789abcdef") for _ in range(rng.choice((32, 40, 64)))) for _ in range(300)
    ]
    lits: Literals = [
        ("contains", f"{kind}={digest}")
        for kind, digest in zip(["md5", "sha1", "sha256"] * 100, hashes, strict=True)
    ]
    lits += [("contains", digest[:20]) for digest in hashes[:30]]
    values: list[str | None] = []
    for index in range(150):
        kind, digest = lits[index * 2][1].split("=")
        text = f"SHA1={hashes[index][:40].upper()},MD5={digest.upper()},IMPHASH={hashes[-index - 1].upper()}"
        if index % 3 == 0:
            text = text.replace("MD5=", f"{kind.upper()}=")  # the literal itself, upper case
        if index % 5 == 0:
            text = text[: rng.randint(0, len(text))]  # cut: no hit across the next value
        values.append(None if index % 17 == 0 else text)
    if not fold:
        values = [None if v is None else v.lower() for v in values]
    automaton = native_automaton(lits, fold)  # type: ignore[arg-type]
    assert automaton.skips == "long-window"
    check_every_way(values, lits, fold)


def test_long_literals_at_every_offset() -> None:
    """The long window shifts by up to its length: a hash at any offset of a value is found."""
    rng = random.Random(5)
    hashes = ["".join(rng.choice("0123456789abcdef") for _ in range(32)) for _ in range(40)]
    lits: Literals = [("contains", f"md5={digest}") for digest in hashes]
    filler = "".join(rng.choice("0123456789ABCDEF,=") for _ in range(200))
    values: list[str | None] = [
        filler[:offset] + f"MD5={hashes[offset % 40].upper()}" + filler[offset : offset + offset % 9]
        for offset in range(120)
    ]
    check_every_way(values, lits, True)
