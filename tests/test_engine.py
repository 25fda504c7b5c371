"""Table-driven engine tests: rules as IR + batches -> expected masks (each also checked against the
reference evaluator row by row), match records, backends and reporting."""

from __future__ import annotations

import pyarrow as pa
import pytest

from compiler.ir import (
    KEYWORD_FIELD,
    And,
    Cidr,
    Compare,
    Const,
    Exists,
    FieldRef,
    IsNull,
    Keyword,
    Node,
    Not,
    Or,
    Regex,
    StrMatch,
    TimestampPart,
    Wildcard,
)
from compiler.model import CompiledRule, Route, RuleMeta
from compiler.passes.pool_literals import Literal, pool_literals
from compiler.reference import evaluate_rule
from sigma_arrow.engine import Engine
from sigma_arrow.engine.triggers import necessary_clauses, regex_literal
from sigma_arrow.schema import RESERVED_COLUMNS, match_schema

SYSMON_1 = And(
    (
        StrMatch("Channel", "equals", "Microsoft-Windows-Sysmon/Operational"),
        StrMatch("EventID", "equals", "1"),
    )
)
SECURITY_4688 = StrMatch("EventID", "equals", "4688")

BATCH = {
    "Channel": [
        "Microsoft-Windows-Sysmon/Operational",
        "microsoft-windows-sysmon/operational",
        "Security",
        None,
        "Security",
    ],
    "EventID": [1, 1, 4688, 1, 4624],
    "Image": ["C:\\Windows\\System32\\cmd.exe", "C:\\tools\\PsExec.exe", None, "c:\\x\\CMD.EXE", None],
    "NewProcessName": [None, None, "C:\\Windows\\System32\\WHOAMI.exe", None, None],
    "CommandLine": ["cmd.exe /c whoami", "psexec \\\\host -s cmd", "whoami /all", "", None],
    "DestinationIp": ["10.1.2.3", "192.168.0.1", "fe80::1", "not-an-ip", None],
    "Count": pa.array([3, None, 10, 7, 0], type=pa.int64()),
    "Ratio": pa.array([1.5, 2.0, None, -3.0, 0.25], type=pa.float64()),
    "Flag": pa.array([True, False, None, True, False], type=pa.bool_()),
    "UtcTime": ["2024-03-01 13:04:05.123", "2023-12-31T23:59:59Z", "bad", None, "2024-03-01"],
    "User": ["ACME\\alice", "acme\\Bob", "ACME\\alice", None, "İstanbul"],
    "TargetUser": ["acme\\ALICE", "bob", "ACME\\alice", None, "i̇stanbul"],
}

CASES: list[tuple[str, Node, list[bool]]] = [
    ("equals, int column as text", StrMatch("EventID", "equals", "4688"), [False, False, True, False, False]),
    ("equals case-insensitive", StrMatch("Channel", "equals", "SECURITY"), [False, False, True, False, True]),
    (
        "equals cased",
        StrMatch("Channel", "equals", "Security", cased=True),
        [False, False, True, False, True],
    ),
    ("endswith", StrMatch("Image", "endswith", "\\cmd.exe"), [True, False, False, True, False]),
    ("startswith", StrMatch("CommandLine", "startswith", "WHOAMI"), [False, False, True, False, False]),
    ("contains", StrMatch("CommandLine", "contains", "whoami"), [True, False, True, False, False]),
    ("contains cased", StrMatch("Image", "contains", "CMD", cased=True), [False, False, False, True, False]),
    ("empty equals", StrMatch("CommandLine", "equals", ""), [False, False, False, True, False]),
    ("empty contains = present", StrMatch("CommandLine", "contains", ""), [True, True, True, True, False]),
    ("missing column", StrMatch("NoSuchField", "contains", "x"), [False] * 5),
    ("not on missing column", Not(StrMatch("NoSuchField", "contains", "x")), [True] * 5),
    (
        "and/or/not",
        And((StrMatch("EventID", "equals", "1"), Not(StrMatch("Image", "contains", "psexec")))),
        [True, False, False, True, False],
    ),
    (
        "or of literals",
        Or((StrMatch("CommandLine", "contains", "-s "), StrMatch("CommandLine", "endswith", "/all"))),
        [False, True, True, False, False],
    ),
    ("wildcard", Wildcard("Image", "c:\\\\*\\\\cmd.exe"), [True, False, False, True, False]),
    ("wildcard ?", Wildcard("CommandLine", "whoami /al?"), [False, False, True, False, False]),
    ("wildcard escaped star", Wildcard("Image", "*\\*"), [False] * 5),
    ("regex case-sensitive", Regex("CommandLine", "who[a-z]+"), [True, False, True, False, False]),
    ("regex i flag", Regex("Image", "CMD\\.exe$", "i"), [True, False, False, True, False]),
    ("regex anchored", Regex("CommandLine", "^psexec"), [False, True, False, False, False]),
    ("cidr v4", Cidr("DestinationIp", "10.0.0.0/8"), [True, False, False, False, False]),
    ("cidr v6", Cidr("DestinationIp", "fe80::/10"), [False, False, True, False, False]),
    ("compare int", Compare("Count", "gte", 7), [False, False, True, True, False]),
    ("compare float", Compare("Ratio", "lt", 1), [False, False, False, True, True]),
    ("bool text form", StrMatch("Flag", "equals", "true"), [True, False, False, True, False]),
    ("float text form (integral)", StrMatch("Ratio", "equals", "2"), [False, True, False, False, False]),
    ("exists", Exists("Image"), [True, True, False, True, False]),
    ("is null", IsNull("Image"), [False, False, True, False, True]),
    ("is null on missing column", IsNull("NoSuchField"), [True] * 5),
    (
        "fieldref equals (case-insensitive, full lowercasing)",
        FieldRef("User", "TargetUser"),
        [True, False, True, False, True],
    ),
    ("fieldref cased", FieldRef("User", "TargetUser", cased=True), [False, False, True, False, False]),
    ("timestamp hour", TimestampPart("UtcTime", "hour", 13), [True, False, False, False, False]),
    ("timestamp year", TimestampPart("UtcTime", "year", 2024), [True, False, False, False, True]),
    (
        "keyword contains",
        Keyword(StrMatch(KEYWORD_FIELD, "contains", "psexec")),
        [False, True, False, False, False],
    ),
    ("keyword does not search int columns", Keyword(StrMatch(KEYWORD_FIELD, "equals", "4688")), [False] * 5),
    ("keyword regex", Keyword(Regex(KEYWORD_FIELD, "^fe80")), [False, False, True, False, False]),
    ("unicode lowercase (İ -> i̇)", StrMatch("User", "startswith", "i̇st"), [False, False, False, False, True]),
    ("const true", Const(True), [True] * 5),
    ("const false", Const(False), [False] * 5),
]


def rule(
    rule_id: str, detection: Node, routes: tuple[Route, ...] | None = None, level: str = "medium"
) -> CompiledRule:
    return CompiledRule(
        RuleMeta(rule_id, f"title {rule_id}", level, tags=("attack.t1",)),
        detection,
        routes if routes is not None else (Route(Const(True), detection),),
    )


def make_batch(columns: dict[str, object], source: str | None = "file.evtx") -> pa.RecordBatch:
    arrays = {k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()}
    if source is not None:
        n = len(next(iter(arrays.values())))
        arrays["__source"] = pa.array([source] * n)
        arrays["__event_index"] = pa.array(range(100, 100 + n), type=pa.int64())
    return pa.RecordBatch.from_pydict(arrays)


def reference_mask(compiled: CompiledRule, batch: pa.RecordBatch) -> list[bool]:
    rows = [{k: v for k, v in r.items() if k not in RESERVED_COLUMNS} for r in batch.to_pylist()]
    return [evaluate_rule(compiled, row) for row in rows]


@pytest.mark.parametrize(("name", "detection", "expected"), CASES, ids=[c[0] for c in CASES])
def test_single_rule_masks(name: str, detection: Node, expected: list[bool]) -> None:
    batch = make_batch(BATCH)
    compiled = rule("r", detection)
    assert reference_mask(compiled, batch) == expected
    assert Engine([compiled]).evaluate(batch).column(0).to_pylist() == expected


def test_all_cases_as_one_ruleset_and_column_types() -> None:
    rules = [rule(f"r{i}", d) for i, (_, d, _) in enumerate(CASES)]
    engine = Engine(rules)

    def convert(kind: str) -> pa.RecordBatch:
        columns = {}
        for name, values in BATCH.items():
            array = values if isinstance(values, pa.Array) else pa.array(values)
            if pa.types.is_string(array.type):
                array = array.dictionary_encode() if kind == "dictionary" else array.cast(kind)
            columns[name] = array
        return make_batch(columns)

    variants = {kind: convert(kind) for kind in ("string", "dictionary", "large_string", "string_view")}
    for batch in variants.values():
        masks = engine.evaluate(batch)
        assert masks.schema.names == [r.id for r in rules]
        for i, (_, _, expected) in enumerate(CASES):
            assert masks.column(i).null_count == 0
            assert masks.column(i).to_pylist() == expected == reference_mask(rules[i], batch)


ROUTED = [
    # process_creation-like rule: Sysmon 1 with rule fields, Security 4688 with renamed fields
    rule(
        "proc",
        StrMatch("Image", "endswith", "\\whoami.exe"),
        routes=(
            Route(SYSMON_1, StrMatch("Image", "endswith", "\\cmd.exe")),
            Route(SECURITY_4688, StrMatch("NewProcessName", "endswith", "\\whoami.exe")),
        ),
    ),
    rule("channel-less", IsNull("Channel"), routes=(Route(IsNull("Channel"), Exists("Image")),)),
    rule("no-route", Const(True), routes=()),
]


def test_routes_restrict_rows() -> None:
    batch = make_batch(BATCH)
    expected = {
        "proc": [True, False, True, False, False],
        "channel-less": [False, False, False, True, False],
        "no-route": [False] * 5,
    }
    masks = Engine(ROUTED).evaluate(batch)
    for compiled in ROUTED:
        assert (
            masks.column(compiled.id).to_pylist() == expected[compiled.id] == reference_mask(compiled, batch)
        )


def test_matches_records() -> None:
    batch = make_batch(BATCH)
    rules = [
        rule("b", StrMatch("CommandLine", "contains", "whoami"), level="high"),
        rule("a", StrMatch("EventID", "equals", "1"), level="low"),
    ]
    records = Engine(rules).matches(batch)
    assert records.schema.names == [*match_schema().names, "event"]
    got = [(r["event_index"], r["rule_id"]) for r in records.to_pylist()]
    # ordered by event, then by rule (ruleset order)
    assert got == [(100, "b"), (100, "a"), (101, "a"), (102, "b"), (103, "a")]
    first = records.to_pylist()[0]
    assert first["source"] == "file.evtx"
    assert (
        first["rule_title"] == "title b"
        and first["rule_level"] == "high"
        and first["rule_tags"] == ["attack.t1"]
    )
    assert first["timestamp"] == "2024-03-01 13:04:05.123"  # UtcTime: the first present timestamp field
    assert first["event"]["CommandLine"] == "cmd.exe /c whoami"
    assert "__source" not in first["event"]

    high = Engine(rules).matches(batch, include_event=False, min_level="high")
    assert "event" not in high.schema.names
    assert [r["rule_id"] for r in high.to_pylist()] == ["b", "b"]


def test_event_index_defaults_to_row_position() -> None:
    batch = make_batch({"CommandLine": ["x", "whoami"]}, source=None)
    records = Engine([rule("r", StrMatch("CommandLine", "equals", "whoami"))]).matches(batch)
    assert records.column("event_index").to_pylist() == [1]
    assert records.column("source").to_pylist() == [None]


def test_duplicate_rule_ids_get_suffixes() -> None:
    rules = [rule("x", Const(True)), rule("x", Const(False)), rule("x", Const(True))]
    masks = Engine(rules).evaluate(make_batch({"a": ["1"]}))
    assert masks.schema.names == ["x", "x~2", "x~3"]
    assert [c.to_pylist() for c in masks.columns] == [[True], [False], [True]]


def test_unrunnable_rules_are_reported_not_dropped() -> None:
    rules = [rule("bad", Regex("CommandLine", "(unclosed")), rule("good", Const(True))]
    engine = Engine(rules)
    assert [rule_id for rule_id, _ in engine.skipped] == ["bad"]
    assert "regex" in engine.skipped[0][1]
    masks = engine.evaluate(make_batch({"CommandLine": ["(unclosed"]}))
    assert masks.column("bad").to_pylist() == [False]
    assert masks.column("good").to_pylist() == [True]


def test_empty_batch_and_profile() -> None:
    engine = Engine([rule("r", StrMatch("a", "contains", "x"))])
    masks = engine.evaluate(pa.RecordBatch.from_pydict({"a": pa.array([], type=pa.string())}))
    assert masks.num_rows == 0 and masks.schema.names == ["r"]
    engine.evaluate(make_batch(BATCH))
    assert set(engine.profile.seconds) >= {"route", "literals", "algebra", "kernels", "output"}
    assert engine.profile.rows == 5 and "literals" in engine.profile.format()


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown engine backend"):
        Engine([], backend="nope")


@pytest.mark.parametrize("backend", ["polars", "pyarrow", "datafusion"])
def test_expression_backends_agree_with_native(backend: str) -> None:
    batch = make_batch(BATCH)
    rules = [rule(f"r{i}", d) for i, (_, d, _) in enumerate(CASES)] + ROUTED
    native = Engine(rules).evaluate(batch)
    other = Engine(rules, backend=backend)
    masks = other.evaluate(batch)
    skipped = {rule_id for rule_id, _ in other.skipped}
    for i, compiled in enumerate(rules):
        if compiled.id in skipped:
            assert masks.column(i).true_count == 0
            continue
        assert masks.column(i).to_pylist() == native.column(i).to_pylist(), compiled.id


POOL_CASES: list[tuple[Node, set[Literal]]] = [
    (StrMatch("Image", "endswith", "\\CMD.exe"), {Literal("Image", "endswith", "\\cmd.exe")}),
    (
        StrMatch("Image", "endswith", "\\CMD.exe", cased=True),
        {Literal("Image", "endswith", "\\CMD.exe", True)},
    ),
    (Or((StrMatch("a", "equals", "X"), Not(StrMatch("a", "equals", "x")))), {Literal("a", "equals", "x")}),
    (Keyword(StrMatch(KEYWORD_FIELD, "contains", "Evil")), {Literal(KEYWORD_FIELD, "contains", "evil")}),
    (Regex("a", "abc"), set()),
]


@pytest.mark.parametrize(("tree", "expected"), POOL_CASES)
def test_pool_literals(tree: Node, expected: set[Literal]) -> None:
    assert set(pool_literals([tree]).ids) == expected


CNF_CASES: list[tuple[Node, list[set[str]]]] = [
    (StrMatch("a", "contains", "x"), [{"x"}]),
    (And((StrMatch("a", "contains", "x"), Not(StrMatch("a", "contains", "y")))), [{"x"}]),
    (Or((StrMatch("a", "contains", "x"), StrMatch("b", "equals", "y"))), [{"x", "y"}]),
    (Or((StrMatch("a", "contains", "x"), Exists("b"))), []),
    (Regex("a", "foo.*barbaz"), [{"barbaz"}]),
    (Regex("a", "Foo|bar"), []),
    (Regex("a", "\\w+`(?:\\w+|-)`"), [{"`"}]),  # one rare character is selective enough
    (Regex("a", "ab.cd"), []),  # runs shorter than 3 ordinary characters are not
    (Regex("a", "(?i)AbCd"), [{"abcd"}]),  # case-insensitive: lowercased
    (Regex("a", "misc", "i"), []),  # i and s have Unicode case partners: no safe literal
    (Wildcard("a", "*\\\\Temp\\\\*.ps1"), [{"\\temp\\"}]),
    (Wildcard("a", "*\\Temp\\*.ps1"), [{"temp*.ps1"}]),  # backslash escapes: \* is a literal star
    (Const(False), [set()]),
]


@pytest.mark.parametrize(("tree", "expected"), CNF_CASES)
def test_necessary_clauses(tree: Node, expected: list[set[str]]) -> None:
    assert [{lit.value for lit in clause} for clause in necessary_clauses(tree)] == expected


def test_regex_literal_is_cased_without_i() -> None:
    found = regex_literal("Invoke-Mimikatz", "")
    assert found is not None and found.cased and found.value == "Invoke-Mimikatz"


def test_keyword_in_a_route_condition_is_evaluated_per_row() -> None:
    routed = rule(
        "k",
        Const(True),
        routes=(Route(Keyword(StrMatch(KEYWORD_FIELD, "contains", "zz")), StrMatch("a", "equals", "1")),),
    )
    batch = make_batch({"a": ["1", "1", "2"], "b": ["zz", "y", "zz"]})
    expected = [True, False, False]
    assert Engine([routed]).evaluate(batch).column(0).to_pylist() == expected == reference_mask(routed, batch)
