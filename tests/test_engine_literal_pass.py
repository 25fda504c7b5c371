"""The literal pass gives the reference evaluator's answers whichever way it scans.

Keyword literals that only narrow routes use are scanned over every string column natively (their
hits then hold on every row) and over the narrow routes' rows in pure Python mode; on the thread
pool, big scans are split into chunks whose grouped hits are merged. Each way is compared with the
reference evaluator, row by row.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from compiler.ir import KEYWORD_FIELD, And, Const, Keyword, Node, Or, StrMatch
from compiler.model import CompiledRule, Route, RuleMeta
from compiler.reference import evaluate_rule
from sigma_arrow.engine import Engine, native
from sigma_arrow.engine.literals import PURE_PYTHON_ENV
from sigma_arrow.schema import RESERVED_COLUMNS

WORDS = ["mimikatz", "sekurlsa", "Invoke-Expression", "psexec", "whoami", "café", "KATZ", "nothing"]


def make_rule(rule_id: str, route: Node, detection: Node) -> CompiledRule:
    return CompiledRule(RuleMeta(rule_id, rule_id, "high", tags=()), detection, (Route(route, detection),))


def keyword(text: str, kind: str = "contains") -> Node:
    return Keyword(StrMatch(KEYWORD_FIELD, kind, text))  # type: ignore[arg-type]


def rules() -> list[CompiledRule]:
    narrow = StrMatch("Channel", "equals", "rare")
    wide = StrMatch("Channel", "equals", "common")
    return [
        make_rule("narrow keyword", narrow, keyword("mimikatz")),
        make_rule("narrow keywords and", narrow, And((keyword("sekurlsa"), keyword("katz")))),
        make_rule(
            "narrow keyword or field", narrow, Or((keyword("psexec"), StrMatch("Image", "endswith", ".exe")))
        ),
        make_rule("wide keyword", wide, keyword("invoke-")),
        make_rule("wide keyword cased", wide, keyword("KATZ", "contains")),
        make_rule("everywhere keyword", Const(True), keyword("whoami")),
        make_rule("everywhere field", Const(True), StrMatch("CommandLine", "contains", "café")),
    ]


def batch(seed: int, n_rows: int = 300) -> pa.RecordBatch:
    rng = random.Random(seed)

    def text() -> str | None:
        if rng.random() < 0.2:
            return None
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 3)))

    channels = [
        "rare" if rng.random() < 0.03 else "common" if rng.random() < 0.5 else "other" for _ in range(n_rows)
    ]
    columns = {
        "Channel": channels,
        "CommandLine": [text() for _ in range(n_rows)],
        "Image": [rng.choice(["c:\\x\\psexec.exe", "cmd.exe", None, "mimikatz.dll"]) for _ in range(n_rows)],
        "ParentCommandLine": [text() for _ in range(n_rows)],
        "__source": ["f"] * n_rows,
        "__event_index": list(range(n_rows)),
    }
    return pa.RecordBatch.from_pydict(columns)


def reference(ruleset: list[CompiledRule], data: pa.RecordBatch) -> list[list[bool]]:
    rows = [{k: v for k, v in row.items() if k not in RESERVED_COLUMNS} for row in data.to_pylist()]
    return [[evaluate_rule(rule, row) for row in rows] for rule in ruleset]


def masks(engine: Engine, data: pa.RecordBatch) -> list[list[bool]]:
    result = engine.evaluate(data)
    return [result.column(i).to_pylist() for i in range(result.num_columns)]


@pytest.mark.parametrize("pure", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_narrow_route_keywords(seed: int, pure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if pure:
        monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    else:
        monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    ruleset = rules()
    data = batch(seed)
    assert masks(Engine(ruleset), data) == reference(ruleset, data)


@pytest.mark.parametrize("seed", range(3))
def test_scans_split_on_the_thread_pool(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    monkeypatch.setattr(native, "SCAN_CHUNK", 7)  # every scan split into up to 4 chunks
    ruleset = rules()
    data = batch(seed, 500)
    assert masks(Engine(ruleset, threads=2), data) == reference(ruleset, data)
