"""The compiler passes: simplify, dedupe (interning), apply_filters, and logsource map routing."""

from __future__ import annotations

import pytest

from compiler.ir import And, Const, Exists, Keyword, Node, Not, Or, StrMatch, to_text
from compiler.logsource import LogsourceMapError, parse_logsource_map
from compiler.model import RuleMeta, SigmaFilter
from compiler.passes.apply_filters import apply_filters
from compiler.passes.dedupe import Interner, dedupe
from compiler.passes.simplify import simplify

A = StrMatch("A", "equals", "1")
B = StrMatch("B", "equals", "2")
C = StrMatch("C", "contains", "3")
T, F = Const(True), Const(False)

SIMPLIFY_CASES: list[tuple[str, Node, str]] = [
    ("flatten and", And((A, And((B, C)))), '(and (eq A "1") (eq B "2") (contains C "3"))'),
    ("flatten or", Or((Or((A, B)), C)), '(or (eq A "1") (eq B "2") (contains C "3"))'),
    ("keep mixed nesting", And((A, Or((B, C)))), '(and (eq A "1") (or (eq B "2") (contains C "3")))'),
    ("drop true in and", And((A, T)), '(eq A "1")'),
    ("false absorbs and", And((A, F, B)), "false"),
    ("true absorbs or", Or((A, T)), "true"),
    ("drop false in or", Or((F, A, F)), '(eq A "1")'),
    ("empty and", And(()), "true"),
    ("empty or", Or(()), "false"),
    ("duplicates", Or((A, B, A)), '(or (eq A "1") (eq B "2"))'),
    ("duplicates after flattening", And((A, And((A, B)))), '(and (eq A "1") (eq B "2"))'),
    ("not not", Not(Not(A)), '(eq A "1")'),
    ("not const", Not(And((A, F))), "true"),
    ("nested not not", And((Not(Not(A)), B)), '(and (eq A "1") (eq B "2"))'),
    ("inside keyword", Keyword(Or((StrMatch("*", "contains", "x"), F))), '(keyword (contains * "x"))'),
    ("leaf unchanged", Exists("X"), "(exists X)"),
]


@pytest.mark.parametrize(
    ("node", "expected"), [c[1:] for c in SIMPLIFY_CASES], ids=[c[0] for c in SIMPLIFY_CASES]
)
def test_simplify(node: Node, expected: str) -> None:
    assert to_text(simplify(node)) == expected
    assert simplify(simplify(node)) == simplify(node)  # idempotent


def test_dedupe_shares_equal_subtrees() -> None:
    interner = Interner()
    first = dedupe(And((Or((A, B)), C)), interner)
    second = dedupe(And((Or((StrMatch("A", "equals", "1"), B)), Not(C))), interner)
    assert isinstance(first, And) and isinstance(second, And)
    assert first.children[0] is second.children[0]
    assert first.children[1] is second.children[1].child  # type: ignore[attr-defined]
    assert interner.stats.unique < interner.stats.nodes
    assert interner.stats.unique_leaves == 3
    assert dedupe(first, interner) is first


def meta(rule_id: str, category: str = "process_creation") -> RuleMeta:
    return RuleMeta(id=rule_id, title=rule_id, product="windows", category=category)


def test_apply_filters_targets_and_logsource() -> None:
    flt = SigmaFilter(meta=meta("f1"), targets=("r1", "by-name"), detection=Not(C))
    rules = [(meta("r1"), A), (meta("r2"), B), (meta("r3"), A), (meta("r1x", "image_load"), A)]
    out = apply_filters(rules, [flt], names={"by-name": "r3"})
    got = {m.id: to_text(d) for m, d in out.rules}
    assert got["r1"] == '(and (eq A "1") (not (contains C "3")))'
    assert got["r2"] == '(eq B "2")'
    assert got["r3"] == '(and (eq A "1") (not (contains C "3")))'
    assert got["r1x"] == '(eq A "1")'
    assert out.applied == {"r1": ["f1"], "r3": ["f1"]}
    any_rule = SigmaFilter(
        meta=RuleMeta(id="f2", title="f2", product="windows"), targets=(), detection=Not(B)
    )
    out = apply_filters(rules, [any_rule])
    assert set(out.applied) == {"r1", "r2", "r3", "r1x"}


MAP = {
    "name": "t",
    "entries": [
        {"match": {"product": "windows"}, "routes": [{"when": {"Channel|exists": True}}]},
        {
            "match": {"product": "windows", "category": ["process_creation", "PROC"]},
            "routes": [
                {"when": {"EventID": 1}},
                {"when": [{"EventID": 4688}, {"x": None}], "rename": {"A": "AA"}},
            ],
        },
        {"match": {"product": "windows", "service": None, "category": None}, "routes": [{"when": {}}]},
    ],
    "default": {"routes": [{"when": {"Channel": None}}]},
}

ROUTE_CASES = [
    (
        "most specific wins",
        ("windows", "process_creation", None),
        ['(eq EventID "1")', '(or (eq EventID "4688") (null x))'],
    ),
    (
        "list values and case",
        ("Windows", "proc", None),
        ['(eq EventID "1")', '(or (eq EventID "4688") (null x))'],
    ),
    ("null means absent", ("windows", None, None), ["true"]),
    ("product only", ("windows", "image_load", None), ["(exists Channel)"]),
    ("default", ("linux", "process_creation", None), ["(null Channel)"]),
]


@pytest.mark.parametrize(
    ("logsource", "expected"), [c[1:] for c in ROUTE_CASES], ids=[c[0] for c in ROUTE_CASES]
)
def test_map_routing(logsource: tuple[str | None, str | None, str | None], expected: list[str]) -> None:
    routes = parse_logsource_map(MAP).routes(*logsource, A)
    assert [to_text(r.condition) for r in routes] == expected


def test_map_rename_only_on_its_route() -> None:
    first, second = parse_logsource_map(MAP).routes("windows", "process_creation", None, And((A, B)))
    assert to_text(first.detection) == '(and (eq A "1") (eq B "2"))'
    assert to_text(second.detection) == '(and (eq AA "1") (eq B "2"))'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"entries": [{"routes": [{}]}]}, "needs a 'match' map"),
        ({"entries": [{"match": {"vendor": "x"}, "routes": [{}]}]}, "match key 'vendor'"),
        ({"entries": [{"match": {"product": "x"}, "routes": []}]}, "non-empty list"),
        ({"entries": [{"match": {"product": "x"}, "routes": [{"if": {}}]}]}, "unknown route keys"),
        ({"entries": [{"match": {"product": "x"}, "routes": [{"when": {"a|nope": 1}}]}]}, "bad 'when'"),
        ({"mapping": []}, "unknown top-level keys"),
    ],
)
def test_bad_maps(data: dict[str, object], message: str) -> None:
    with pytest.raises(LogsourceMapError, match=message):
        parse_logsource_map(data)
