"""The two literal scanners (per-call polars automaton, prebuilt group automaton) agree exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.reference import str_match
from sigma_arrow.engine.literals import GroupAutomaton, literal_hits

KINDS = ("contains", "startswith", "endswith", "equals")

LITERALS = [
    ("contains", "cmd"),
    ("contains", "cmd"),  # the same literal twice: both positions hit
    ("startswith", "c:\\windows"),
    ("endswith", ".exe"),
    ("equals", "whoami.exe"),
    ("contains", ""),
    ("equals", ""),
    ("contains", "a"),
    ("startswith", "\x01x"),  # a literal holding the start sentinel
    ("endswith", "y\x02"),
    ("contains", "aa"),
    ("contains", "é"),
]

VALUES = [
    "cmd.exe",
    "c:\\windows\\system32\\cmd.exe",
    "whoami.exe",
    "",
    None,
    "aaaa",  # overlapping occurrences
    "\x01xyz",  # values holding sentinels
    "xy\x02",
    "\x01",
    "café",
    "CMD",  # folded values are given; this one simply does not hit "cmd"
]


def expected(values: list[str | None], literals: list[tuple[str, str]]) -> set[tuple[int, int]]:
    return {
        (lit, pos)
        for (lit, (kind, value)), (pos, text) in itertools.product(enumerate(literals), enumerate(values))
        if text is not None and str_match(kind, text, value)  # type: ignore[arg-type]
    }


def pairs(result: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    lit, val = result
    return list(zip(lit.tolist(), val.tolist(), strict=True))


@pytest.mark.parametrize("scanner", ["polars", "group"])
def test_scanners_on_edge_cases(scanner: str) -> None:
    array = pa.array(VALUES, type=pa.string())
    if scanner == "polars":
        got = pairs(literal_hits(array, LITERALS))  # type: ignore[arg-type]
    else:
        got = pairs(GroupAutomaton(LITERALS).hits(array))  # type: ignore[arg-type]
    assert got == sorted(got), "hits are sorted by literal, then value"
    assert set(got) == expected(VALUES, LITERALS)
    assert len(got) == len(set(got))


TEXT = st.text(alphabet="ab\x01\x02c", max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), TEXT), max_size=12),
    literals=st.lists(st.tuples(st.sampled_from(KINDS), TEXT), min_size=1, max_size=8),
)
def test_scanners_agree_with_the_definition(
    values: list[str | None], literals: list[tuple[str, str]]
) -> None:
    array = pa.array(values, type=pa.string())
    want = expected(values, literals)
    assert set(pairs(literal_hits(array, literals))) == want  # type: ignore[arg-type]
    assert set(pairs(GroupAutomaton(literals).hits(array))) == want  # type: ignore[arg-type]
