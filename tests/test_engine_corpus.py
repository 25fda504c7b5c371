"""The whole SigmaHQ corpus over real events: per-rule match counts of the native engine equal the
reference evaluator's (marked shared + slow)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from compiler.ir import Const, Node
from compiler.model import CompiledRule
from compiler.reference import evaluate
from sigma_arrow.engine import Engine
from sigma_arrow.flatten import flatten_record, rows_to_batch
from sigma_arrow.loader import load_rules
from sigma_arrow.ruleset import RuleSet
from sigma_arrow.schema import RESERVED_COLUMNS

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def evtx_rows(paths: list[Path]) -> list[dict[str, object]]:
    from evtx import PyEvtxParser

    rows = []
    for path in paths:
        for record in PyEvtxParser(str(path)).records_json():
            rows.append(flatten_record(orjson.loads(record["data"])))
    return rows


def json_rows(paths: list[Path]) -> list[dict[str, object]]:
    rows = []
    decoder = json.JSONDecoder()
    for path in paths:
        text = path.read_text(encoding="utf-8")
        position = 0
        while True:  # the files hold one or more concatenated (pretty-printed) JSON documents
            while position < len(text) and text[position].isspace():
                position += 1
            if position >= len(text):
                break
            data, position = decoder.raw_decode(text, position)
            for record in data if isinstance(data, list) else [data]:
                rows.append(flatten_record(record))
    return rows


def reference_counts(rules: RuleSet, batch: pa.RecordBatch) -> dict[int, int]:
    """Per rule position, how many rows ``evaluate_rule`` accepts (route conditions cached per row)."""
    rows = [{k: v for k, v in row.items() if k not in RESERVED_COLUMNS} for row in batch.to_pylist()]
    condition_cache: dict[Node, list[bool]] = {}
    counts: dict[int, int] = {}
    for position, rule in enumerate(rules):
        hits = [False] * len(rows)
        for route in rule.routes:
            if route.condition not in condition_cache:
                condition_cache[route.condition] = [evaluate(route.condition, row) for row in rows]
            selected = condition_cache[route.condition]
            for i, row in enumerate(rows):
                if selected[i] and not hits[i] and evaluate(route.detection, row):
                    hits[i] = True
        counts[position] = sum(hits)
    return counts


def check(rules: RuleSet, batch: pa.RecordBatch) -> int:
    engine = Engine(rules)
    assert engine.skipped == []
    masks = engine.evaluate(batch)
    expected = reference_counts(rules, batch)
    got = {i: masks.column(i).true_count for i in range(masks.num_columns)}
    differing = {rules.rules[i].id: (got[i], expected[i]) for i in expected if got[i] != expected[i]}
    assert differing == {}
    return sum(got.values())


@pytest.fixture(scope="module")
def corpus(sigma_rule_dirs: list[Path]) -> RuleSet:
    return load_rules(sigma_rule_dirs)


def test_corpus_over_evtx_attack_samples(corpus: RuleSet, evtx_samples: Path) -> None:
    rows = evtx_rows(sorted(evtx_samples.rglob("*.evtx")))
    batch = rows_to_batch(rows, source="evtx-attack-samples", indices=0)
    assert check(corpus, batch) > 0


def test_corpus_over_regression_json(corpus: RuleSet, regression_data: Path) -> None:
    rows = json_rows(sorted(regression_data.rglob("*.json")))
    batch = rows_to_batch(rows, source="regression", indices=0)
    assert check(corpus, batch) > 0


def test_rule_matches_single_rows_too(corpus: RuleSet, regression_data: Path) -> None:
    # Tiny batches (one event each) take different paths (few distinct values, no slicing).
    rows = json_rows(sorted(regression_data.rglob("*.json"))[:20])
    for position, row in enumerate(rows):
        batch = rows_to_batch([row], source="one", indices=position)
        check(RuleSet(rules=[r for r in corpus.rules if _might_apply(r)]), batch)


def _might_apply(rule: CompiledRule) -> bool:
    return any(route.condition != Const(False) for route in rule.routes)
