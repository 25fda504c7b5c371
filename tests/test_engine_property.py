"""Hypothesis: random rulesets of random IR trees over random batches; native engine == reference."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from compiler.reference import evaluate_rule
from sigma_arrow.engine import Engine
from sigma_arrow.schema import RESERVED_COLUMNS

FIELDS = ["a", "b", "c", "n", "missing"]
# Characters that exercise case folding (İ, Σ, Kelvin K, long s), the literal-pass sentinels and empties.
ALPHABET = "abAB.\\ -İΣσςKſ\x01\x02xyz"
texts = st.text(alphabet=ALPHABET, max_size=6)
words = st.sampled_from(["abc", "ABC", "x.y", "1", "10", "-2.5", "İx", "ΑΣ", "Kab", "ſ", "\x01a", ""])
values = st.one_of(texts, words)


def leaves(field_names: list[str]) -> st.SearchStrategy[Node]:
    field = st.sampled_from(field_names)
    kind = st.sampled_from(["equals", "contains", "startswith", "endswith"])
    return st.one_of(
        st.builds(StrMatch, field, kind, values, st.booleans()),
        st.builds(
            Wildcard,
            field,
            st.sampled_from(["*ab*", "a?c", "*\\*", "x*y", "*", "ab*c?", "İ*"]),
            st.booleans(),
        ),
        st.builds(
            Regex,
            field,
            st.sampled_from(["abc", "a.c", "^ab", "b$", "x\\.y", "(ab)+c", "[İi]x"]),
            st.sampled_from(["", "i", "ims"]),
        ),
        st.builds(Compare, field, st.sampled_from(["lt", "lte", "gt", "gte"]), st.sampled_from([1, 2.5, -3])),
        st.builds(Exists, field),
        st.builds(IsNull, field),
        st.builds(Cidr, field, st.sampled_from(["10.0.0.0/8", "::1/128"])),
        st.builds(FieldRef, field, field, kind, st.booleans()),
        st.builds(TimestampPart, field, st.sampled_from(["year", "hour"]), st.sampled_from([2024, 13])),
        st.builds(lambda m: Keyword(m), st.builds(StrMatch, st.just(KEYWORD_FIELD), kind, values)),
        st.builds(Const, st.booleans()),
    )


def trees() -> st.SearchStrategy[Node]:
    return st.recursive(
        leaves(FIELDS),
        lambda inner: st.one_of(
            st.builds(lambda xs: And(tuple(xs)), st.lists(inner, min_size=1, max_size=4)),
            st.builds(lambda xs: Or(tuple(xs)), st.lists(inner, min_size=1, max_size=4)),
            st.builds(Not, inner),
        ),
        max_leaves=8,
    )


routes = st.sampled_from(
    [Const(True), StrMatch("c", "equals", "1"), Or((StrMatch("c", "equals", "2"), IsNull("c")))]
)


@st.composite
def rulesets(draw: st.DrawFn) -> list[CompiledRule]:
    count = draw(st.integers(1, 6))
    rules = []
    for i in range(count):
        route_list = draw(st.lists(st.tuples(routes, trees()), min_size=1, max_size=2))
        rule_routes = tuple(Route(c, d) for c, d in route_list)
        rules.append(CompiledRule(RuleMeta(f"rule-{i % 4}", "t"), rule_routes[0].detection, rule_routes))
    return rules


TYPES = ["string", "large_string", "string_view", "dictionary", "int", "float", "bool", "null"]


@st.composite
def batches(draw: st.DrawFn) -> pa.RecordBatch:
    n_rows = draw(st.integers(0, 12))
    columns: dict[str, pa.Array] = {}
    for name in ["a", "b", "c", "n"]:
        kind = draw(st.sampled_from(TYPES))
        if kind == "int":
            data = draw(st.lists(st.one_of(st.none(), st.integers(-3, 12)), min_size=n_rows, max_size=n_rows))
            columns[name] = pa.array(data, type=pa.int64())
        elif kind == "float":
            data = draw(
                st.lists(
                    st.one_of(st.none(), st.sampled_from([1.0, 2.5, -3.0, 10.0, 0.1])),
                    min_size=n_rows,
                    max_size=n_rows,
                )
            )
            columns[name] = pa.array(data, type=pa.float64())
        elif kind == "bool":
            data = draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n_rows, max_size=n_rows))
            columns[name] = pa.array(data, type=pa.bool_())
        elif kind == "null":
            columns[name] = pa.nulls(n_rows)
        else:
            pool = st.one_of(
                st.none(), values, st.sampled_from(["10.1.2.3", "::1", "2024-01-02T13:04:05Z", "2"])
            )
            data = draw(st.lists(pool, min_size=n_rows, max_size=n_rows))
            array = pa.array(data, type=pa.string())
            if kind == "large_string":
                array = array.cast(pa.large_string())
            elif kind == "string_view":
                array = array.cast(pa.string_view())
            elif kind == "dictionary":
                array = array.dictionary_encode()
            columns[name] = array
    columns["__source"] = pa.array(["abc"] * n_rows)
    return pa.RecordBatch.from_pydict(columns)


def event_rows(batch: pa.RecordBatch) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k not in RESERVED_COLUMNS} for row in batch.to_pylist()]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rulesets(), batches())
def test_native_engine_equals_reference(rules: list[CompiledRule], batch: pa.RecordBatch) -> None:
    engine = Engine(rules, threads=1)
    assert not engine.skipped
    masks = engine.evaluate(batch)
    rows = event_rows(batch)
    for position, rule in enumerate(rules):
        column = masks.column(position)
        assert column.null_count == 0
        expected = [evaluate_rule(rule, row) for row in rows]
        assert column.to_pylist() == expected, (rule, rows)


@pytest.mark.parametrize("threads", [1, 2])
@settings(max_examples=30, deadline=None)
@given(rulesets(), batches())
def test_sliced_batches_match_whole_batches(
    threads: int, rules: list[CompiledRule], batch: pa.RecordBatch
) -> None:
    import sigma_arrow.engine.core as core

    saved = core.SLICE_ROWS
    core.SLICE_ROWS = 3
    try:
        sliced = Engine(rules, threads=threads).evaluate(batch)
    finally:
        core.SLICE_ROWS = saved
    assert sliced.equals(Engine(rules, threads=1).evaluate(batch))
