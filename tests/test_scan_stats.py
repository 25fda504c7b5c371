"""ScanStats.count_matches and the spooled JSON Lines of worker results."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from sigma_arrow.scanning import ScanStats
from sigma_arrow.schema import match_schema
from sigma_arrow.workers import UnitResult, spool_root

# (rule id, title, level) per match record, in record order.
BATCHES: list[list[tuple[str, str | None, str | None]]] = [
    [],
    [("a", "Rule A", "high")],
    [("a", "Rule A", "high"), ("b", None, "low"), ("a", "Rule A", "high"), ("c", "C", None)],
    [("b", "later title", "low"), ("d", "D", "critical"), ("d", "D", "critical"), ("a", "A2", "high")],
]


def _records(rows: list[tuple[str, str | None, str | None]]) -> pa.RecordBatch:
    schema = match_schema(None)
    count = len(rows)
    columns = {
        "rule_id": pa.array([r[0] for r in rows], type=pa.string()),
        "rule_title": pa.array([r[1] for r in rows], type=pa.string()),
        "rule_level": pa.array([r[2] for r in rows], type=pa.string()),
        "rule_tags": pa.array([[] for _ in rows], type=pa.list_(pa.string())),
        "source": pa.array(["x"] * count, type=pa.string()),
        "event_index": pa.array(list(range(count)), type=pa.int64()),
        "timestamp": pa.nulls(count, type=pa.string()),
    }
    return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


def test_count_matches_agrees_with_a_plain_count() -> None:
    stats = ScanStats()
    expected_rules: Counter[str] = Counter()
    expected_levels: Counter[str] = Counter()
    expected_titles: dict[str, str] = {}
    for rows in BATCHES:
        stats.count_matches(_records(rows))
        for rule_id, title, level in rows:
            expected_rules[rule_id] += 1
            expected_levels[level or "informational"] += 1
            expected_titles.setdefault(rule_id, title or "")
    assert stats.matches == sum(len(rows) for rows in BATCHES)
    assert stats.by_rule == expected_rules
    assert stats.by_level == expected_levels
    assert stats.rule_titles == expected_titles  # the first title seen wins


@pytest.mark.parametrize(
    "parts",
    [
        [b'{"a":1}\n'],
        [b'{"a":1}\n', b'{"b":2}\n{"c":3}\n', b'{"d":"\\u00e9"}\n'],
        [b"x" * 70_000, b"y", b"z" * 4096],  # parts across page boundaries
    ],
)
def test_spooled_parts_come_back_as_written(tmp_path: Path, parts: list[bytes]) -> None:
    spool = tmp_path / "unit.jsonl"
    spool.write_bytes(b"".join(parts))
    result = UnitResult(spool_path=str(spool), spool_sizes=[len(p) for p in parts])
    views = list(result.encoded_parts())
    assert [bytes(v) for v in views if v is not None] == parts
    assert not spool.exists()  # removed once read; the views stay readable
    assert b"".join(v for v in views if v is not None) == b"".join(parts)


@pytest.mark.parametrize(
    ("spool_dir", "tmpdir", "expected"),
    [
        ("/some/where", None, "/some/where"),  # configured: always that
        ("/some/where", "/elsewhere", "/some/where"),
        (None, "/elsewhere", None),  # TMPDIR named: tempfile's choice, not ours
    ],
)
def test_spool_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, spool_dir: str | None, tmpdir: str | None, expected: str | None
) -> None:
    for name, value in (("SIGMA_ARROW_SPOOL_DIR", spool_dir), ("TMPDIR", tmpdir)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert spool_root() == expected


def test_spool_root_by_default_is_a_writable_directory_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGMA_ARROW_SPOOL_DIR", raising=False)
    monkeypatch.delenv("TMPDIR", raising=False)
    root = spool_root()
    assert root is None or (os.path.isdir(root) and os.access(root, os.W_OK))
