"""The native scanner (sigma_arrow._cscan) finds exactly what the Python scanners and the definition find."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.reference import str_match
from sigma_arrow.engine import literals
from sigma_arrow.engine.literals import PURE_PYTHON_ENV, GroupAutomaton, literal_hits

_cscan = pytest.importorskip("sigma_arrow._cscan")

KINDS = ("contains", "startswith", "endswith", "equals")


@pytest.fixture(autouse=True)
def native_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the native scanner: run them natively even when the suite is not."""
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)


Literals = list[tuple[str, str]]


def expected(values: list[str | None], lits: Literals) -> list[tuple[int, int]]:
    """The definition: every (literal, value) pair where the literal matches, sorted."""
    return sorted(
        (lit, pos)
        for (lit, (kind, value)), (pos, text) in itertools.product(enumerate(lits), enumerate(values))
        if text is not None and str_match(kind, text, value)  # type: ignore[arg-type]
    )


def pairs(result: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    return list(zip(result[0].tolist(), result[1].tolist(), strict=True))


def native_pairs(values: pa.Array, lits: Literals) -> list[tuple[int, int]]:
    return pairs(GroupAutomaton(lits).hits(values))  # type: ignore[arg-type]


def python_pairs(values: pa.Array, lits: Literals, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    with monkeypatch.context() as patch:
        patch.setenv(PURE_PYTHON_ENV, "1")
        return sorted(set(pairs(literal_hits(values, lits))))  # type: ignore[arg-type]


def random_text(rng: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


ALPHABET = "abc\\:. é€\x01\x02"  # ASCII, 2- and 3-byte UTF-8, and the Python path's sentinels

CASES: dict[str, tuple[list[str | None], Literals]] = {
    "edge cases": (
        [
            "cmd.exe",
            "c:\\windows\\cmd.exe",
            "",
            None,
            "aaaa",
            "\x01xyz",
            "xy\x02",
            "\x01",
            "café",
            "CMD",
            "é",
        ],
        [
            ("contains", "cmd"),
            ("contains", "cmd"),  # the same literal twice: both positions hit
            ("startswith", "c:\\windows"),
            ("endswith", ".exe"),
            ("equals", "cmd.exe"),
            ("contains", ""),
            ("startswith", ""),
            ("endswith", ""),
            ("equals", ""),
            ("contains", "aa"),  # overlapping occurrences
            ("startswith", "\x01x"),  # sentinels inside literals
            ("endswith", "y\x02"),
            ("contains", "\x01"),
            ("equals", "\x01"),
            ("contains", "é"),
            ("endswith", "é"),
        ],
    ),
    "prefixes and suffixes of each other": (
        ["abcabc", "abc", "bcab", "cabca", "a", "bc", "abcab"],
        [(kind, text) for kind in KINDS for text in ("a", "ab", "abc", "abca", "bc", "c", "cab", "bcab")],
    ),
    "equals only (nothing starts mid-value)": (
        ["0x3e7", "0x3e4", "null", "0x3e70", "x0x3e7", "", "NULL"],
        [("equals", "0x3e7"), ("equals", "0x3e4"), ("equals", "null"), ("startswith", "0x3")],
    ),
    "long literals (Wu-Manber skipping)": (
        [
            "privilege::debug sekurlsa::logonpasswords",
            "nothing to see here at all, really nothing",
            "kerberos::golden",
            "xkerberos::goldenx",
            "kerberos::golde",
            "lsadump::sam\x02",
        ],
        [("contains", t) for t in ("sekurlsa::", "privilege::debug", "kerberos::golden", "lsadump::")]
        + [("endswith", "::sam\x02"), ("endswith", "logonpasswords")],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_matches_the_definition(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values, lits = CASES[case]
    array = pa.array(values, type=pa.string())
    want = expected(values, lits)
    got = native_pairs(array, lits)
    assert got == want
    assert python_pairs(array, lits, monkeypatch) == want


# polars ``extract_many(overlapping=True)`` (the pure-Python path) panics on some mixes of many
# non-ASCII patterns and values (polars 2.1, find_many.rs:150): compare with it on ASCII only.
@pytest.mark.parametrize(
    ("seed", "alphabet"), [(0, ALPHABET), (1, ALPHABET), (2, "abc\\:. \x01\x02"), (3, "ab.\x01")]
)
def test_many_random_patterns(seed: int, alphabet: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    values: list[str | None] = [
        None if rng.random() < 0.05 else random_text(rng, alphabet, 24) for _ in range(150)
    ]
    # Many literals (big automaton: dense and sparse states, long failure chains), some repeated,
    # plus substrings of the values so that plenty of them hit.
    lits: Literals = [(rng.choice(KINDS), random_text(rng, alphabet, 6)) for _ in range(800)]
    for text in rng.sample([v for v in values if v], 40):
        start = rng.randint(0, len(text))
        lits.append((rng.choice(KINDS), text[start : start + rng.randint(0, 8)]))
    lits += lits[:20]
    array = pa.array(values, type=pa.string())
    want = expected(values, lits)
    assert native_pairs(array, lits) == want
    if alphabet.isascii():
        assert python_pairs(array, lits, monkeypatch) == want


@pytest.mark.parametrize("type_", [pa.string(), pa.large_string(), pa.string_view()])
def test_array_layouts(type_: pa.DataType) -> None:
    """Offsets of either width, sliced arrays (non-zero offset) and validity bitmaps."""
    values: list[str | None] = ["x", None, "abc", "zabcz", None, "", "abcabc", "ab"] * 5
    lits: Literals = [("contains", "abc"), ("equals", ""), ("endswith", "c"), ("startswith", "ab")]
    array = pa.array(values, type=type_)
    for start, length in [(0, len(values)), (3, 20), (7, 0), (11, 29)]:
        piece = array.slice(start, length)
        assert native_pairs(piece, lits) == expected(values[start : start + length], lits)


def test_subsets_share_or_build() -> None:
    """A subset of a group's literals reports positions relative to the subset, both ways."""
    rng = random.Random(7)
    values: list[str | None] = [random_text(rng, "abc", 10) for _ in range(200)]
    lits: Literals = [(rng.choice(KINDS), random_text(rng, "abc", 4)) for _ in range(60)]
    array = pa.array(values, type=pa.large_string())
    group = GroupAutomaton(lits)
    for size in (60, 45, 30, 5, 1):  # the whole group, shared automaton, own automaton
        positions = np.array(sorted(rng.sample(range(60), size)), dtype=np.int64)
        subset = group.subset(positions)
        assert isinstance(subset, GroupAutomaton)
        chosen = [lits[i] for i in positions.tolist()]
        assert pairs(subset.hits(array)) == expected(values, chosen)
        assert group.subset(positions) is subset  # kept for the next batch


def test_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    assert not literals.native_scan_enabled()
    group = GroupAutomaton([("contains", "a"), ("equals", "b")])
    assert group.native is None
    assert group.subset(np.array([1])) == [("equals", "b")]
    monkeypatch.setenv(PURE_PYTHON_ENV, "0")
    assert literals.native_scan_enabled()


def test_bad_buffers_are_refused() -> None:
    automaton = _cscan.Automaton([(b"ab", 0, [0])], 1)
    offsets = np.array([0, 2, 9], dtype=np.int32).tobytes()
    with pytest.raises(ValueError, match="offsets"):
        automaton.scan(offsets, b"abcd", None, False, 0, 2)
    with pytest.raises(ValueError, match="too small"):
        automaton.scan(offsets, b"abcdefghij", None, False, 1, 5)
    with pytest.raises(ValueError, match="out of range"):
        _cscan.Automaton([(b"ab", 0, [3])], 1)
    with pytest.raises(TypeError):
        _cscan.Automaton([("ab", 0, [0])], 1)


TEXT = st.text(alphabet="ab\x01\x02é", max_size=7)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), TEXT), max_size=12),
    lits=st.lists(st.tuples(st.sampled_from(KINDS), TEXT), min_size=1, max_size=10),
)
def test_native_agrees_with_the_definition(values: list[str | None], lits: Literals) -> None:
    array = pa.array(values, type=pa.string())
    want = expected(values, lits)
    assert native_pairs(array, lits) == want
    assert pairs(literal_hits(array, lits)) == want  # type: ignore[arg-type]
