"""The whole SigmaHQ corpus compiles (>= 99.5 % ok, every other rule with a precise reason), and the rules
of SigmaHQ's regression cases fire on their own EVTX events through the windows logsource map."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.reference import evaluate, evaluate_rule
from sigma_arrow.loader import load_rules
from sigma_arrow.ruleset import RuleSet

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus(sigma_rule_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    import os

    old = os.environ.get("SIGMA_ARROW_CACHE_DIR")
    os.environ["SIGMA_ARROW_CACHE_DIR"] = str(tmp_path_factory.mktemp("corpus-cache"))
    try:
        return load_rules(sigma_rule_dirs, cache=False)
    finally:
        if old is None:
            del os.environ["SIGMA_ARROW_CACHE_DIR"]
        else:
            os.environ["SIGMA_ARROW_CACHE_DIR"] = old


def test_corpus_compiles(corpus: RuleSet, sigma_rule_dirs: list[Path]) -> None:
    files = sum(1 for d in sigma_rule_dirs for _ in d.rglob("*.yml"))
    statuses = Counter(e.status for e in corpus.errors)
    total = len(corpus) + len(corpus.correlations) + len(corpus.filters) + len(corpus.errors)
    print(
        f"\nSigmaHQ corpus: {files} files, {total} rules: {len(corpus)} ok,"
        f" {len(corpus.correlations)} correlation, {len(corpus.filters)} filter,"
        f" {statuses.get('unsupported', 0)} unsupported, {statuses.get('error', 0)} error"
    )
    reasons = Counter(f"{e.status}: {e.message}" for e in corpus.errors)
    for reason, count in reasons.most_common():
        print(f"  {count:4d}  {reason}")
    assert total >= files
    assert len(corpus) / total >= 0.995
    for error in corpus.errors:
        assert error.rule_id and error.message and error.line >= 1 and Path(error.path).is_file(), str(error)
    assert all(rule.routes for rule in corpus), "every rule has at least one route under the windows map"


def flatten_evtx(record: dict[str, Any]) -> dict[str, object]:
    """The reader's EVTX flattening: System and EventData fields at top level, #attributes lifted."""
    event = record.get("Event", record)
    row: dict[str, object] = {}
    for key, value in (event.get("System") or {}).items():
        if isinstance(value, dict):
            attributes = value.get("#attributes") or {}
            if "#text" in value:
                row[key] = value["#text"]
            for name, attr in attributes.items():
                row[f"{key}_{name}" if key == "Provider" else name] = attr
        else:
            row[key] = value
    for section in ("EventData", "UserData"):
        data = event.get(section)
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            if key == "#attributes":
                continue
            if section == "UserData" and isinstance(value, dict):
                row.update({k: v for k, v in value.items() if k != "#attributes"})
            else:
                row[key] = value
    return row


def read_events(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    events, position = [], 0
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        obj, position = decoder.raw_decode(text, position)
        events.extend(obj if isinstance(obj, list) else [obj])
    return events


def test_regression_rules_route_and_fire(corpus: RuleSet, regression_data: Path) -> None:
    by_id = corpus.by_id()
    routed = fired = 0
    missed: list[str] = []
    cases = sorted(regression_data.rglob("info.yml"))
    cases = [c for c in cases if any(c.parent.glob("*.json"))]  # a few cases are raw text logs, not EVTX
    for info_path in cases:
        info = yaml.safe_load(info_path.read_text(encoding="utf-8"))
        for meta in info.get("rule_metadata", []):
            rule = by_id.get(str(meta["id"]))
            assert rule is not None, f"{info_path}: rule {meta['id']} did not compile"
            rows = [flatten_evtx(e) for f in info_path.parent.glob("*.json") for e in read_events(f)]
            if any(evaluate(route.condition, row) for route in rule.routes for row in rows):
                routed += 1
            if any(evaluate_rule(rule, row) for row in rows):
                fired += 1
            else:
                missed.append(f"{meta['id']} {meta.get('title', '')}")
    print(f"\nregression cases: {len(cases)}, routed: {routed}, fired: {fired}")
    for line in missed:
        print("  did not fire:", line)
    assert routed == len(cases)
    assert fired == len(cases)
