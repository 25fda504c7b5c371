"""The engine's native fast paths agree with their Python definitions.

* case folding inside the C scanner (``Automaton(fold=True)`` + ``scan_folded``): hits on the original
  text equal hits of the lowercase literals on ``str.lower`` of the text, non-ASCII values included;
* ``_cscan.narrow`` (restricting a column to some rows) equals its numpy definition;
* the vectorised IPv4 parse equals ``ipaddress``, and cidr / regex leaves over many distinct values
  (the vectorised and memoised kernels) equal the reference evaluator.
"""

from __future__ import annotations

import ipaddress
import itertools
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import And, Cidr, Const, Node, Not, Or, Regex, StrMatch
from compiler.model import CompiledRule, Route, RuleMeta
from compiler.reference import evaluate_rule, str_match
from sigma_arrow.engine import Engine
from sigma_arrow.engine.columns import NOT_IPV4, ColumnView, ipv4_integers
from sigma_arrow.engine.literals import PURE_PYTHON_ENV, GroupAutomaton
from sigma_arrow.engine.native import VECTOR_CIDR, FusedLeaves, fuse_leaves

_cscan = pytest.importorskip("sigma_arrow._cscan")


@pytest.fixture(autouse=True)
def native_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the native paths: run them natively even when the suite is not."""
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)


Literals = list[tuple[str, str]]


def folded_expected(values: list[str | None], lits: Literals) -> list[tuple[int, int]]:
    """The definition: lowercase literals against ``str.lower`` of every value."""
    return sorted(
        (lit, pos)
        for (lit, (kind, value)), (pos, text) in itertools.product(enumerate(lits), enumerate(values))
        if text is not None and str_match(kind, text.lower(), value)  # type: ignore[arg-type]
    )


def folded_hits(values: pa.Array, lits: Literals) -> list[tuple[int, int]]:
    group = GroupAutomaton(lits, fold=True)  # type: ignore[arg-type]
    assert group.folds
    found = group.hits(values)
    return list(zip(found[0].tolist(), found[1].tolist(), strict=True))


# A long ASCII prefix puts the non-ASCII byte past the scanner's 32-byte blocks.
LONG = "C:\\Program Files\\Some Vendor\\Some Product\\"
FOLD_CASES: dict[str, tuple[list[str | None], Literals]] = {
    "ascii case variants": (
        ["CMD.EXE", "cmd.exe", "Cmd.Exe", "C:\\WINDOWS\\System32\\CMD.exe", "xcmd", "", None, "CMDX"],
        [("contains", "cmd"), ("startswith", "c:\\windows"), ("endswith", ".exe"), ("equals", "cmd.exe")],
    ),
    "non-ascii values (str.lower is not a byte map)": (
        [
            "\u212aEY",  # KELVIN SIGN lowercases to ASCII "k"
            "KEY",
            "\u0130STANBUL",  # "İ" lowercases to "i" + COMBINING DOT ABOVE
            "istanbul",
            "STRASSE",
            "STRAẞE",  # capital sharp s lowercases to "ß"
            "ΟΔΟΣ",  # final sigma
            LONG + "CAFÉ.EXE",
            LONG + "café.exe",
            LONG + "\u212aILL",
            "é",
            None,
        ],
        [
            ("contains", "key"),
            ("startswith", "k"),
            ("startswith", "i\u0307"),
            ("contains", "stanbul"),
            ("contains", "straße"),
            ("endswith", "οδος"),
            ("endswith", "ς"),
            ("contains", "café.exe"),
            ("contains", "\\kill"),
            ("equals", "é"),
            ("contains", ""),
        ],
    ),
    "anchors and sentinel bytes": (
        ["\x01ABC\x02", "ABC", "\x01abc", "Xabc\x02"],
        [("equals", "abc"), ("startswith", "\x01a"), ("endswith", "c\x02"), ("contains", "bc")],
    ),
}


@pytest.mark.parametrize("name", list(FOLD_CASES))
@pytest.mark.parametrize("large", [False, True])
def test_folding_scan_equals_python_lower(name: str, large: bool) -> None:
    values, lits = FOLD_CASES[name]
    array = pa.array(values, type=pa.large_string() if large else pa.string())
    assert folded_hits(array, lits) == folded_expected(values, lits)


def test_folding_scan_of_a_slice() -> None:
    values = ["ÉTÉ CMD", "CMD", "x", "ÀCMD", "cmd", None, "Ωcmd"]
    lits: Literals = [("contains", "cmd"), ("startswith", "à"), ("endswith", "d")]
    array = pa.array(values).slice(2, 4)
    assert folded_hits(array, lits) == folded_expected(values[2:6], lits)


def test_uppercase_literals_do_not_fold() -> None:
    """Literals holding uppercase ASCII (not lowercased by the compiler) keep the exact scan."""
    group = GroupAutomaton([("contains", "CMD")], fold=True)  # type: ignore[list-item]
    assert not group.folds
    with pytest.raises(ValueError, match="uppercase"):
        _cscan.Automaton([(b"CMD", 0, [0])], 1, fold=True)


def test_scan_folded_lists_non_ascii_values() -> None:
    automaton = _cscan.Automaton([(b"ab", 0, [0])], 1, fold=True)
    array = pa.array(["AB", "é ab", "xaB", None, "ü"])
    validity, offsets, data = array.buffers()
    lits, vals, skipped = automaton.scan_folded(offsets, data, validity, False, 0, len(array))
    assert np.frombuffer(vals, dtype=np.int64).tolist() == [0, 2]
    assert np.frombuffer(lits, dtype=np.int64).tolist() == [0, 0]
    assert np.frombuffer(skipped, dtype=np.int64).tolist() == [1, 4]


FOLD_ALPHABET = "abkAKZ\\. \u212a\u0130\u03a3\u00df\u1e9e\x01é"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(FOLD_ALPHABET, max_size=40)), max_size=30),
    st.lists(
        st.tuples(
            st.sampled_from(["contains", "startswith", "endswith", "equals"]),
            st.text(FOLD_ALPHABET, max_size=4),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_folding_scan_property(values: list[str | None], raw: list[tuple[str, str]]) -> None:
    lits = [(kind, value.lower()) for kind, value in raw]
    if any("A" <= ch <= "Z" for _, value in lits for ch in value):
        return  # str.lower leaves none; (the "İ" of the alphabet lowercases to two characters)
    assert folded_hits(pa.array(values, type=pa.string()), lits) == folded_expected(values, lits)


# ------------------------------------------------------------------ narrow


def narrow_reference(
    place: np.ndarray, rows: np.ndarray, codes: np.ndarray, n_distinct: int
) -> tuple[list[int], list[int], list[int]]:
    places = place[rows]
    inside = np.flatnonzero(places >= 0)
    local, kept = places[inside], codes[inside]
    used = np.zeros(n_distinct, dtype=bool)
    used[kept] = True
    inverse = (np.cumsum(used) - 1)[kept]
    return local.tolist(), inverse.tolist(), np.flatnonzero(used).tolist()


@pytest.mark.parametrize(
    ("n_rows", "n_distinct", "share", "wide"),
    [
        (1, 1, 1.0, True),
        (100, 7, 0.3, False),
        (5000, 900, 0.1, True),
        (5000, 900, 0.0, False),
        (64, 3, 1.0, False),
    ],
)
def test_narrow_equals_numpy(n_rows: int, n_distinct: int, share: float, wide: bool) -> None:
    rng = np.random.default_rng(n_rows + n_distinct)
    narrow = np.flatnonzero(rng.random(n_rows) < share)
    place = np.full(n_rows, -1, dtype=np.int64)
    place[narrow] = np.arange(len(narrow))
    rows = np.flatnonzero(rng.random(n_rows) < 0.6).astype(np.int64 if wide else np.int32)
    codes = rng.integers(0, n_distinct, len(rows)).astype(np.int64)
    bits = np.packbits(place >= 0, bitorder="little")
    local, inverse, distinct = _cscan.narrow(bits, place, rows, wide, codes, n_distinct)
    got = (
        np.frombuffer(local, dtype=np.int64).tolist(),
        np.frombuffer(inverse, dtype=np.int32).tolist(),
        np.frombuffer(distinct, dtype=np.int64).tolist(),
    )
    assert got == narrow_reference(place, rows.astype(np.int64), codes, n_distinct)


def test_narrow_rejects_bad_input() -> None:
    place = np.zeros(4, dtype=np.int64)
    bits = np.packbits(place >= 0, bitorder="little")
    with pytest.raises(ValueError, match="out of range"):
        _cscan.narrow(bits, place, np.array([9], dtype=np.int64), True, np.array([0], dtype=np.int64), 1)
    with pytest.raises(ValueError, match="out of range"):
        _cscan.narrow(bits, place, np.array([1], dtype=np.int64), True, np.array([5], dtype=np.int64), 1)
    with pytest.raises(ValueError, match="differ"):
        _cscan.narrow(bits, place, np.array([1], dtype=np.int64), True, np.array([], dtype=np.int64), 1)


# ------------------------------------------------------------------ cidr and regex kernels

ADDRESS_TEXTS = [
    "1.2.3.4",
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.1",
    "01.2.3.4",  # leading zero
    "1.2.3.04",
    "1.2.3.4\n",
    " 1.2.3.4",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "1..3.4",
    "\u0661.2.3.4",  # ARABIC-INDIC DIGIT ONE: not ASCII
    "1.2.3.4/8",
    "1.2.3.1000",
    "",
    "::1",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "localhost",
    "192.168.1.300",
    "172.16.254.1",
]


def ipaddress_integer(text: str) -> int:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return NOT_IPV4
    return int(address) if address.version == 4 else NOT_IPV4


def test_ipv4_integers_equal_ipaddress() -> None:
    got = ipv4_integers(pa.array(ADDRESS_TEXTS)).tolist()
    assert got == [ipaddress_integer(text) for text in ADDRESS_TEXTS]


def test_column_ipv4_at_parses_each_value_once() -> None:
    view = ColumnView("ip", pa.array(["1.2.3.4", None, "x", "1.2.3.4", "10.0.0.1"]))
    positions = np.arange(view.n_distinct + 1)
    first = view.ipv4_at(positions).tolist()
    assert first == [ipaddress_integer(t) for t in view.text.to_pylist()] + [NOT_IPV4]
    assert view.ipv4_at(positions[::-1]).tolist() == first[::-1]


def random_address(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return ".".join(
            str(rng.choice([0, 1, 10, 127, 172, 192, 255, rng.randint(0, 300)])) for _ in range(4)
        )
    if kind < 0.7:
        return rng.choice(["::1", "fe80::1", "::ffff:10.1.2.3", "2001:db8::7", "fc00::1", "::"])
    return rng.choice(ADDRESS_TEXTS) + rng.choice(["", "0", ".1", " "])


def rule(rule_id: str, detection: Node) -> CompiledRule:
    return CompiledRule(RuleMeta(rule_id, rule_id, "medium"), detection, (Route(Const(True), detection),))


def test_cidr_and_regex_kernels_over_many_values_equal_reference() -> None:
    rng = random.Random(7)
    n = 4 * VECTOR_CIDR + 50
    addresses = [random_address(rng) if rng.random() > 0.05 else None for _ in range(n)]
    commands = [
        rng.choice(["cmd /c ", "powershell -enc ", "RUNDLL32.EXE ", "x"]) + str(rng.randint(0, 10**6))
        for _ in range(n)
    ]
    assert len(set(addresses)) > VECTOR_CIDR  # the vectorised cidr path runs
    batch = pa.RecordBatch.from_pydict({"Ip": pa.array(addresses, type=pa.string()), "CommandLine": commands})
    detections: list[Node] = [
        Cidr("Ip", "10.0.0.0/8"),
        Cidr("Ip", "0.0.0.0/0"),
        Cidr("Ip", "192.168.0.0/16"),
        Cidr("Ip", "::1/128"),
        Cidr("Ip", "fe80::/10"),
        Cidr("Ip", "::ffff:0:0/96"),
        Not(Cidr("Ip", "172.16.0.0/12")),
        Regex("CommandLine", r"\d{5}$", ""),
        Regex("CommandLine", r"^rundll32", "i"),
        Regex("CommandLine", r"[0-3]{2}", ""),
    ]
    rules = [rule(f"r{i}", d) for i, d in enumerate(detections)]
    rows = batch.to_pylist()
    engine = Engine(rules)
    for _ in range(2):  # the second batch answers regexes from the memo
        got = engine.evaluate(batch)
        for i, compiled in enumerate(rules):
            assert got.column(i).to_pylist() == [evaluate_rule(compiled, row) for row in rows], detections[i]


def test_kernel_memo_rests_when_values_never_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A memo that recalls nothing is dropped for a while; answers stay the reference's throughout."""
    from sigma_arrow.engine import native

    monkeypatch.setattr(native, "MEMO_PROBE", 4)
    monkeypatch.setattr(native, "MEMO_REST", 2)
    detections: list[Node] = [Regex("CommandLine", r"7\d*$", ""), Cidr("Ip", "10.0.0.0/8")]
    rules = [rule(f"r{i}", d) for i, d in enumerate(detections)]
    engine = Engine(rules)
    rested = []
    for start in range(0, 800, 100):  # every batch new values, then the first batch again
        numbers = list(range(start % 700, start % 700 + 100))
        batch = pa.RecordBatch.from_pydict(
            {
                "CommandLine": [f"run {n}" for n in numbers],
                "Ip": [f"10.0.{n % 256}.{n // 256}" if n % 3 else f"11.0.0.{n % 256}" for n in numbers],
            }
        )
        got = engine.evaluate(batch)
        rows = batch.to_pylist()
        for i, compiled in enumerate(rules):
            assert got.column(i).to_pylist() == [evaluate_rule(compiled, row) for row in rows]
        assert engine._plan is not None
        rested.append(detections[0] in engine._plan.memo_resting)
    assert any(rested)


# ------------------------------------------------------------------ fused literal leaves

A = StrMatch("CommandLine", "contains", "cmd")
B = StrMatch("CommandLine", "endswith", ".exe")
C = StrMatch("CommandLine", "startswith", "c:\\")
D = StrMatch("Image", "endswith", "\\cmd.exe")
E = StrMatch("Missing", "contains", "x")
F = StrMatch("Missing", "equals", "y")
FUSION_CASES: list[tuple[str, Node]] = [
    ("or on one column", Or((A, B, C))),
    ("or across columns", Or((A, D, B, C))),
    ("and on one column", And((A, B))),
    ("and with another column", And((A, D, B))),
    ("or with a missing column", Or((E, F, A))),
    ("and with a missing column", And((E, F))),
    ("not of a fused or", Not(Or((A, B)))),
    ("nested", And((Or((A, B, D)), Not(Or((C, E, F)))))),
    ("same leaf twice", Or((A, A, B))),
    ("cased and uncased", Or((A, StrMatch("CommandLine", "contains", "CMD", cased=True)))),
    ("with a regex", Or((A, Regex("CommandLine", r"\d$", ""), B))),
]
FUSION_ROWS = {
    "CommandLine": [
        "C:\\Windows\\CMD.EXE /c x",
        "cmd",
        "notepad.exe",
        None,
        "c:\\x 1",
        "",
        "CMD",
        "C:\\tool",
    ],
    "Image": ["C:\\Windows\\cmd.exe", None, "x", "\\CMD.exe", None, "", "a", "b"],
}


@pytest.mark.parametrize(("name", "detection"), FUSION_CASES, ids=[c[0] for c in FUSION_CASES])
def test_fused_leaves_equal_reference(name: str, detection: Node) -> None:
    batch = pa.RecordBatch.from_pydict(FUSION_ROWS)
    compiled = rule("r", detection)
    expected = [evaluate_rule(compiled, row) for row in batch.to_pylist()]
    assert Engine([compiled]).evaluate(batch).column(0).to_pylist() == expected


def test_fuse_leaves_groups_literal_leaves_per_column() -> None:
    leaf_literals: dict[Node, int] = {A: 0, B: 1, C: 2, D: 3}
    parts = fuse_leaves(Or((D, A, Regex("CommandLine", "x", ""), B, C)), leaf_literals)
    assert parts[0] is D
    assert isinstance(parts[1], FusedLeaves)
    assert (parts[1].field, parts[1].leaves, parts[1].any_of) == ("CommandLine", (A, B, C), True)
    assert isinstance(parts[2], Regex) and len(parts) == 3
    single = fuse_leaves(And((A, D)), leaf_literals)
    assert single == [A, D]  # one leaf per column: nothing to fuse
