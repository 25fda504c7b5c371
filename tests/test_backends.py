"""Fixture table: IR node + rows -> expected booleans, over the reference evaluator and every backend."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from backend_runners import BACKENDS, RUNNERS, Rows, make_table

from compiler.backends import datafusion_expr, polars_expr, pyarrow_expr, sql
from compiler.errors import UnsupportedError
from compiler.ir import (
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
    rename_fields,
)
from compiler.model import CompiledRule, Route, RuleMeta
from compiler.reference import evaluate_rule

BACKEND_MODULES = {"pyarrow": pyarrow_expr, "polars": polars_expr, "datafusion": datafusion_expr, "sql": sql}


@dataclass
class Case:
    id: str
    node: Node
    rows: Rows
    expected: list[bool]
    schema: pa.Schema | None = None
    #: backends that must refuse the node (fail closed)
    unsupported: frozenset[str] = field(default_factory=frozenset)
    #: backends with a documented difference on these rows (strict xfail)
    differs: frozenset[str] = field(default_factory=frozenset)


def S(*names: str) -> pa.Schema:
    return pa.schema([(n, pa.string()) for n in names])


IMAGES = [
    {"Image": "C:\\Windows\\System32\\CMD.EXE"},
    {"Image": "c:\\windows\\system32\\cmd.exe"},
    {"Image": None},
    {},
    {"Image": ""},
]
UNICODE = [
    {"s": "Straße"},
    {"s": "STRASSE"},
    {"s": "ẞ"},
    {"s": "İstanbul"},
    {"s": "ıI"},
    {"s": "😀ABC"},
    {"s": "ΟΔΟΣ"},
]
IPV4 = [
    "10.1.2.3",
    "10.0.0.256",
    "11.0.0.1",
    "010.0.0.1",
    " 10.0.0.1",
    "::ffff:10.0.0.1",
    "not an ip",
    None,
    "10.255.255.255",
]
IPV6 = [
    "2001:db8::1",
    "2001:DB8:0:0:0:0:0:1",
    "2001:0db8::",
    "2001:db9::1",
    "2001:db8::1%eth0",
    "2001:db8::1.2.3.4",
    "::",
    "10.0.0.1",
    "2001:db8:::1",
    "2001:db8::1%",
    "2001:db8:0:0:0:0:0:0:1",
    "02001:db8::1",
]
NUMBERS = ["5", "10", "-3.5", "abc", "", " 5", "1e3", None, "+7", "4.", "007"]
STAMPS = [
    "2025-11-27T07:40:10.165324Z",
    "2025-11-27 07:40:10.165",
    "2025-11-27",
    "2021-01-03T00:00:00+01:00",
    "2025-02-30T00:00:00",
    "2025-11-27T24:00:00",
    "garbage",
    None,
    "2024-12-30T23:59",
]

PARIS = ZoneInfo("Europe/Paris")
DICT = pa.schema([("c", pa.dictionary(pa.int32(), pa.string()))])

CASES: list[Case] = [
    # ---- boolean structure
    Case("const-true", Const(True), [{"a": "x"}, {}], [True, True]),
    Case("const-false", Const(False), [{"a": "x"}], [False]),
    Case("and-empty", And(()), [{"a": "x"}], [True]),
    Case("or-empty", Or(()), [{"a": "x"}], [False]),
    Case(
        "nested",
        Or((And((StrMatch("a", "equals", "x"), Not(StrMatch("b", "equals", "y")))), IsNull("a"))),
        [{"a": "x", "b": "y"}, {"a": "x", "b": "z"}, {"a": "x"}, {"b": "y"}, {"a": "q"}],
        [False, True, True, True, False],
        S("a", "b"),
    ),
    # ---- StrMatch, case folding, text form
    Case(
        "eq-ci",
        StrMatch("Image", "equals", "C:\\WINDOWS\\system32\\cmd.exe"),
        IMAGES,
        [True, True, False, False, False],
    ),
    Case(
        "eq-cased",
        StrMatch("Image", "equals", "c:\\windows\\system32\\cmd.exe", True),
        IMAGES,
        [False, True, False, False, False],
    ),
    Case("contains-empty", StrMatch("Image", "contains", ""), IMAGES, [True, True, False, False, True]),
    Case(
        "endswith-ci", StrMatch("Image", "endswith", "\\CMD.exe"), IMAGES, [True, True, False, False, False]
    ),
    Case(
        "startswith-cased",
        StrMatch("Image", "startswith", "C:\\", True),
        IMAGES,
        [True, False, False, False, False],
    ),
    Case("eq-empty", StrMatch("Image", "equals", ""), IMAGES, [False, False, False, False, True]),
    Case("missing-column", StrMatch("Nope", "contains", ""), IMAGES, [False] * 5),
    Case("not-missing-column", Not(StrMatch("Nope", "contains", "")), IMAGES, [True] * 5),
    Case(
        "int-text-form",
        StrMatch("EventID", "equals", "4688"),
        [{"EventID": 4688}, {"EventID": 1}, {"EventID": None}, {"EventID": -4688}],
        [True, False, False, False],
    ),
    Case(
        "int-startswith",
        StrMatch("EventID", "startswith", "-4"),
        [{"EventID": 4688}, {"EventID": -46}],
        [False, True],
    ),
    Case(
        "bool-text-form",
        StrMatch("b", "equals", "TRUE"),
        [{"b": True}, {"b": False}, {"b": None}],
        [True, False, False],
    ),
    Case(
        "float-text-form",
        Or((StrMatch("f", "equals", "4688"), StrMatch("f", "equals", "1.5"))),
        [{"f": 4688.0}, {"f": 1.5}, {"f": 2.25}, {"f": None}, {"f": -0.0}],
        [True, True, False, False, False],
    ),
    Case("null-typed-column", StrMatch("n", "contains", ""), [{"n": None}, {"n": None}], [False, False]),
    Case(
        "sharp-s-not-ss",
        StrMatch("s", "equals", "strasse"),
        UNICODE,
        [False, True, False, False, False, False, False],
    ),
    Case(
        "capital-sharp-s",
        StrMatch("s", "equals", "ß"),
        UNICODE,
        [False, False, True, False, False, False, False],
    ),
    Case(
        "dotted-capital-i",
        StrMatch("s", "equals", "İSTANBUL"),
        UNICODE,
        [False, False, False, True, False, False, False],
    ),
    Case("dotted-i-not-plain-i", StrMatch("s", "startswith", "ist"), UNICODE, [False] * 7),
    Case(
        "dotless-i", StrMatch("s", "equals", "ıi"), UNICODE, [False, False, False, False, True, False, False]
    ),
    Case("emoji", StrMatch("s", "contains", "😀abc"), UNICODE, [False] * 5 + [True, False]),
    Case(
        "final-sigma",
        StrMatch("s", "equals", "οδος"),
        UNICODE,
        [False] * 6 + [True],
    ),
    Case(
        "final-sigma-contexts",
        Or((StrMatch("s", "endswith", "ς"), Wildcard("s", "*ς?"), Wildcard("s", "*σ?"))),
        [{"s": v} for v in ["ΑΣ", "Σ", "ΑΣΣ", "ΑΣ'Σ", "ΑΣ.", "ΑΣ̀b", "1Σ", "ΑΣ Β", "aς"]],
        [True, False, True, True, True, False, False, False, True],
    ),
    # ---- Wildcard
    Case(
        "glob-backslash", Wildcard("Image", "*\\\\sys*\\\\cmd.exe"), IMAGES, [True, True, False, False, False]
    ),
    Case(
        "glob-qmark",
        Wildcard("s", "?abc"),
        [{"s": "😀ABC"}, {"s": "xabc"}, {"s": "abc"}, {"s": "xxabc"}],
        [True, True, False, False],
    ),
    Case(
        "glob-escaped-star",
        Wildcard("s", "a\\*b", True),
        [{"s": "a*b"}, {"s": "axb"}, {"s": "a\\*b"}],
        [True, False, False],
    ),
    Case("glob-escaped-qmark", Wildcard("s", "a\\?*"), [{"s": "a?x"}, {"s": "ab"}], [True, False]),
    Case("glob-trailing-backslash", Wildcard("s", "*abc\\"), [{"s": "xabc\\"}, {"s": "xabc"}], [True, False]),
    Case("glob-escaped-other", Wildcard("s", "\\a*"), [{"s": "ab"}, {"s": "\\ab"}], [True, False]),
    Case(
        "glob-newline",
        Wildcard("s", "a*b?c"),
        [{"s": "a\nb\nc"}, {"s": "ab\nc"}, {"s": "abc"}],
        [True, True, False],
    ),
    Case("glob-like-chars", Wildcard("s", "%_*"), [{"s": "%_x"}, {"s": "ab"}], [True, False]),
    Case(
        "glob-ci-unicode", Wildcard("s", "STRA?E"), UNICODE, [True, False, False, False, False, False, False]
    ),
    Case("glob-star-only", Wildcard("s", "*"), [{"s": ""}, {"s": None}, {"s": "x"}], [True, False, True]),
    Case("glob-int", Wildcard("n", "4?8*"), [{"n": 4688}, {"n": 468}, {"n": 48}], [True, True, False]),
    # ---- Regex
    Case("re-search", Regex("s", "b.d"), [{"s": "abcde"}, {"s": "ABCDE"}, {"s": None}], [True, False, False]),
    Case("re-i", Regex("s", "b.d", "i"), [{"s": "abcde"}, {"s": "ABCDE"}], [True, True]),
    Case(
        "re-anchors",
        Regex("s", "^ab$"),
        [{"s": "ab"}, {"s": "ab\n"}, {"s": "xab"}, {"s": "ab\nc"}],
        [True, True, False, False],
    ),
    Case("re-m", Regex("s", "^c$", "m"), [{"s": "ab\nc"}, {"s": "c\nd"}, {"s": "ac"}], [True, True, False]),
    Case("re-s", Regex("s", "a.b", "s"), [{"s": "a\nb"}, {"s": "axb"}], [True, True]),
    Case("re-no-s", Regex("s", "a.b"), [{"s": "a\nb"}, {"s": "axb"}], [False, True]),
    Case(
        "re-classes",
        Regex("s", r"^\w+\s\d+$"),
        [{"s": "héllo 42"}, {"s": "a\x1c٣"}, {"s": "a-b 1"}],
        [True, True, False],
    ),
    Case(
        "re-turkish-i", Regex("s", "istanbul", "i"), UNICODE, [False, False, False, True, False, False, False]
    ),
    Case("re-inline-flag", Regex("s", "(?i)cmd"), [{"s": "CMD"}, {"s": "cmd"}], [True, True]),
    Case("re-int", Regex("n", r"^46\d\d$"), [{"n": 4688}, {"n": 46}], [True, False]),
    Case("re-lazy-alt", Regex("s", "(foo|ba+?r){2}"), [{"s": "foobaar"}, {"s": "foo"}], [True, False]),
    Case(
        "re-lookahead",
        Regex("s", "a(?=b)"),
        [{"s": "ab"}, {"s": "ac"}],
        [True, False],
        unsupported=frozenset(BACKENDS),
    ),
    Case("re-backref", Regex("s", r"(a)\1"), [{"s": "aa"}], [True], unsupported=frozenset(BACKENDS)),
    Case("re-dollar-inside", Regex("s", "a$\n"), [{"s": "a\n"}], [True], unsupported=frozenset(BACKENDS)),
    Case(
        "re-word-boundary",
        Regex("s", r"\bcmd\b"),
        [{"s": "a cmd b"}, {"s": "acmd"}, {"s": "écmd"}],
        [True, False, False],
        unsupported=frozenset({"pyarrow"}),
    ),
    # ---- Cidr
    Case(
        "cidr-v4",
        Cidr("ip", "10.0.0.0/8"),
        [{"ip": v} for v in IPV4],
        [True, False, False, False, False, False, False, False, True],
    ),
    Case(
        "cidr-v4-partial-octet",
        Cidr("ip", "192.168.16.0/20"),
        [{"ip": v} for v in ["192.168.31.255", "192.168.32.0", "192.168.15.255", "192.168.16.0"]],
        [True, False, False, True],
    ),
    Case("cidr-v4-host", Cidr("ip", "1.2.3.4/32"), [{"ip": "1.2.3.4"}, {"ip": "1.2.3.40"}], [True, False]),
    Case(
        "cidr-v4-all",
        Cidr("ip", "0.0.0.0/0"),
        [{"ip": "1.2.3.4"}, {"ip": "::1"}, {"ip": "1.2.3"}],
        [True, False, False],
    ),
    Case(
        "cidr-v6",
        Cidr("ip", "2001:db8::/32"),
        [{"ip": v} for v in IPV6],
        [True, True, True, False, True, True, False, False, False, False, False, False],
    ),
    Case(
        "cidr-v6-partial-hextet",
        Cidr("ip", "fe80::/10"),
        [{"ip": v} for v in ["fe80::1", "FEBF::1", "fec0::1", "fe7f::1", "fe80::", "fe8::1"]],
        [True, True, False, False, True, False],
    ),
    Case(
        "cidr-v6-mapped",
        Cidr("ip", "::ffff:0:0/96"),
        [
            {"ip": v}
            for v in [
                "::ffff:10.0.0.1",
                "::FFFF:1.2.3.4",
                "0:0:0:0:0:ffff:0102:0304",
                "10.0.0.1",
                "::fffe:1.2.3.4",
            ]
        ],
        [True, True, True, False, False],
    ),
    Case("cidr-int-column", Cidr("n", "0.0.0.0/0"), [{"n": 5}], [False]),
    # ---- Compare
    Case(
        "cmp-string",
        Compare("v", "gte", 5),
        [{"v": v} for v in NUMBERS],
        [True, True, False, False, False, False, False, False, True, False, True],
    ),
    Case(
        "cmp-lt-float",
        Compare("v", "lt", -3.25),
        [{"v": v} for v in NUMBERS],
        [False, False, True] + [False] * 8,
    ),
    Case(
        "cmp-int",
        Compare("n", "gt", 4687),
        [{"n": 4688}, {"n": 4687}, {"n": None}, {"n": -1}],
        [True, False, False, False],
    ),
    Case("cmp-lte-int", Compare("n", "lte", 1), [{"n": 1}, {"n": 2}], [True, False]),
    Case(
        "cmp-float",
        Compare("f", "lt", 2),
        [{"f": 1.5}, {"f": float("nan")}, {"f": float("inf")}, {"f": None}],
        [True, False, False, False],
    ),
    Case("cmp-bool", Compare("b", "gte", 0), [{"b": True}, {"b": False}], [False, False]),
    Case("cmp-missing", Compare("zz", "gte", 0), [{"b": True}], [False]),
    # ---- Exists / IsNull
    Case("exists", Exists("Image"), IMAGES, [True, True, False, False, True]),
    Case("isnull", IsNull("Image"), IMAGES, [False, False, True, True, False]),
    Case("exists-missing", Exists("Nope"), IMAGES, [False] * 5),
    Case("isnull-missing", IsNull("Nope"), IMAGES, [True] * 5),
    Case("not-exists-missing", Not(Exists("Nope")), IMAGES, [True] * 5),
    # ---- FieldRef
    Case(
        "ref-equals",
        FieldRef("a", "b"),
        [
            {"a": "X", "b": "x"},
            {"a": "x", "b": "y"},
            {"a": None, "b": "x"},
            {"a": "x", "b": None},
            {"a": "", "b": ""},
        ],
        [True, False, False, False, True],
    ),
    Case(
        "ref-equals-cased",
        FieldRef("a", "b", cased=True),
        [{"a": "X", "b": "x"}, {"a": "x", "b": "x"}],
        [False, True],
    ),
    Case("ref-missing-other", FieldRef("a", "zz"), [{"a": "x"}], [False]),
    Case(
        "ref-int-string", FieldRef("n", "s"), [{"n": 4688, "s": "4688"}, {"n": 1, "s": "01"}], [True, False]
    ),
    Case(
        "ref-contains",
        FieldRef("a", "b", "contains"),
        [{"a": "xABCx", "b": "abc"}, {"a": "x", "b": "abc"}, {"a": "x", "b": ""}, {"a": "x", "b": None}],
        [True, False, True, False],
        unsupported=frozenset({"pyarrow"}),
    ),
    Case(
        "ref-startswith",
        FieldRef("a", "b", "startswith", True),
        [{"a": "abc", "b": "ab"}, {"a": "abc", "b": "AB"}, {"a": "abc", "b": "bc"}],
        [True, False, False],
        unsupported=frozenset({"pyarrow"}),
    ),
    Case(
        "ref-endswith",
        FieldRef("a", "b", "endswith"),
        [{"a": "abc", "b": "BC"}, {"a": "abc", "b": "ab"}],
        [True, False],
        unsupported=frozenset({"pyarrow"}),
    ),
    # ---- TimestampPart
    Case(
        "ts-year",
        TimestampPart("t", "year", 2025),
        [{"t": v} for v in STAMPS],
        [True, True, True, False, False, False, False, False, False],
    ),
    Case(
        "ts-month",
        TimestampPart("t", "month", 11),
        [{"t": v} for v in STAMPS],
        [True, True, True] + [False] * 6,
    ),
    Case(
        "ts-day", TimestampPart("t", "day", 27), [{"t": v} for v in STAMPS], [True, True, True] + [False] * 6
    ),
    Case("ts-hour", TimestampPart("t", "hour", 7), [{"t": v} for v in STAMPS], [True, True] + [False] * 7),
    Case(
        "ts-hour-zero",
        TimestampPart("t", "hour", 0),
        [{"t": v} for v in STAMPS],
        [False, False, True, True] + [False] * 5,
    ),
    Case("ts-minute", TimestampPart("t", "minute", 59), [{"t": v} for v in STAMPS], [False] * 8 + [True]),
    Case(
        "ts-week-53",
        TimestampPart("t", "week", 53),
        [{"t": v} for v in STAMPS],
        [False, False, False, True] + [False] * 5,
    ),
    Case("ts-week-1", TimestampPart("t", "week", 1), [{"t": v} for v in STAMPS], [False] * 8 + [True]),
    Case(
        "ts-week-48",
        TimestampPart("t", "week", 48),
        [{"t": v} for v in STAMPS],
        [True, True, True] + [False] * 6,
    ),
    Case(
        "ts-typed-column",
        And((TimestampPart("t", "hour", 7), TimestampPart("t", "week", 48))),
        [{"t": dt.datetime(2025, 11, 27, 7, 40)}, {"t": dt.datetime(2025, 11, 27, 8)}, {"t": None}],
        [True, False, False],
        pa.schema([("t", pa.timestamp("us"))]),
    ),
    Case(
        "ts-zoned-column",
        And((TimestampPart("t", "hour", 0), TimestampPart("t", "day", 28))),
        [
            {"t": dt.datetime(2025, 11, 28, 0, 40, tzinfo=PARIS)},
            {"t": dt.datetime(2025, 11, 27, 23, 40, tzinfo=PARIS)},
        ],
        [True, False],
        pa.schema([("t", pa.timestamp("us", tz="Europe/Paris"))]),
    ),
    Case(
        "ts-date-column",
        TimestampPart("t", "day", 27),
        [{"t": dt.date(2025, 11, 27)}, {"t": dt.date(2025, 11, 28)}],
        [True, False],
        pa.schema([("t", pa.date32())]),
    ),
    Case(
        "ts-date-column-midnight",
        And((TimestampPart("t", "hour", 0), TimestampPart("t", "minute", 0))),
        [{"t": dt.date(2025, 11, 27)}, {"t": None}],
        [True, False],
        pa.schema([("t", pa.date32())]),
    ),
    Case("ts-int-column", TimestampPart("t", "year", 2025), [{"t": 2025}], [False]),
    # ---- dictionary-encoded (categorical) string columns behave as string columns
    Case(
        "dict-strmatch",
        StrMatch("c", "endswith", "\\CMD.exe"),
        [{"c": "C:\\x\\cmd.exe"}, {"c": "y"}, {"c": None}],
        [True, False, False],
        DICT,
    ),
    Case(
        "dict-compare",
        Compare("c", "gt", 4),
        [{"c": "5"}, {"c": "x"}, {"c": "3"}],
        [True, False, False],
        DICT,
    ),
    Case(
        "dict-timestamp", TimestampPart("c", "month", 11), [{"c": STAMPS[0]}, {"c": "x"}], [True, False], DICT
    ),
    Case(
        "dict-keyword", Keyword(StrMatch("*", "equals", "Y")), [{"c": "y"}, {"c": "z"}], [True, False], DICT
    ),
    Case(
        "odd-column-names",
        And((StrMatch("Event.System.EventID", "equals", "4688"), StrMatch('we"ird', "equals", "x"))),
        [{"Event.System.EventID": 4688, 'we"ird': "X"}, {"Event.System.EventID": 4688, 'we"ird': "y"}],
        [True, False],
    ),
    # ---- Keyword
    Case(
        "keyword-several-columns",
        Keyword(StrMatch("*", "contains", "MIMI")),
        [
            {"a": "mimikatz", "b": "x", "n": 1},
            {"a": "x", "b": "Mimi", "n": 2},
            {"a": None, "b": None, "n": 3},
            {"a": "x", "b": "y", "n": 4},
        ],
        [True, True, False, False],
    ),
    Case(
        "keyword-ignores-ints",
        Keyword(StrMatch("*", "equals", "4688")),
        [{"a": "x", "n": 4688}, {"a": "4688", "n": 1}],
        [False, True],
    ),
    Case(
        "keyword-glob",
        Keyword(Wildcard("*", "*.exe")),
        [{"a": "x", "b": "C.EXE"}, {"a": "exe", "b": "y"}],
        [True, False],
    ),
    Case(
        "not-keyword",
        Not(Keyword(StrMatch("*", "contains", "x"))),
        [{"a": "x"}, {"a": "y"}, {"a": None}],
        [False, True, True],
    ),
]


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, backend: str) -> None:
    assert len(case.expected) == len(case.rows), "fixture error"
    table = make_table(case.rows, case.schema)
    run = RUNNERS[backend]
    if backend in case.unsupported:
        with pytest.raises(UnsupportedError):
            run(case.node, case.rows, table)
        return
    if backend in case.differs:
        pytest.xfail(f"documented {backend} difference")
    assert run(case.node, case.rows, table) == case.expected


def test_case_ids_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyword_without_schema_is_unsupported(backend: str) -> None:
    from compiler.backends import datafusion_expr, polars_expr, pyarrow_expr, sql

    module = {"pyarrow": pyarrow_expr, "polars": polars_expr, "datafusion": datafusion_expr, "sql": sql}[
        backend
    ]
    with pytest.raises(UnsupportedError):
        module.translate(Keyword(StrMatch("*", "contains", "x")))
    # without a schema every field is assumed to be a string column
    assert module.to_display(module.translate(StrMatch("Image", "contains", "x")))


def test_unknown_node_fails_closed() -> None:
    class Strange(Node):
        pass

    for module in (pyarrow_expr, polars_expr, datafusion_expr, sql):
        with pytest.raises(UnsupportedError, match="Strange"):
            module.translate(Strange())


def _rule(detection: Node) -> CompiledRule:
    meta = RuleMeta(id="rule-1", title="t", path="rules/x.yml")
    routes = (
        Route(StrMatch("EventID", "equals", "1"), detection),
        Route(StrMatch("EventID", "equals", "4688"), rename_fields(detection, {"Image": "NewProcessName"})),
    )
    return CompiledRule(meta, detection, routes)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_rule_routes(backend: str) -> None:
    rule = _rule(StrMatch("Image", "endswith", "\\cmd.exe"))
    rows: list[dict[str, object]] = [
        {"EventID": 1, "Image": "C:\\cmd.exe"},
        {"EventID": 4688, "NewProcessName": "C:\\CMD.EXE"},
        {"EventID": 4688, "Image": "C:\\cmd.exe"},
        {"EventID": 2, "Image": "C:\\cmd.exe"},
    ]
    assert [evaluate_rule(rule, r) for r in rows] == [True, True, False, False]
    assert RUNNERS[backend](rule.predicate, rows, make_table(rows)) == [True, True, False, False]


@pytest.mark.parametrize("backend", BACKENDS)
def test_translate_rule_names_the_rule(backend: str) -> None:
    module = BACKEND_MODULES[backend]
    rule = _rule(Regex("Image", "a(?=b)"))
    with pytest.raises(UnsupportedError) as caught:
        module.translate_rule(rule)
    assert str(caught.value).startswith("rules/x.yml:1:1: rule rule-1: ")
    assert "lookahead" in str(caught.value)
    ok = _rule(StrMatch("Image", "contains", "x"))
    assert module.to_display(module.translate_rule(ok)) == module.to_display(module.translate(ok.predicate))
