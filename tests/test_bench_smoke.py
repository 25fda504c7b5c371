"""Smoke test of the benchmark harness (issue 4): `python -m bench --quick` on a tiny dataset.

It asserts that every lane and mode produces a figure and that the engine agrees with the reference
evaluator on the sample. It never asserts anything about speed (benchmarks print figures).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def test_quick_benchmark_produces_figures_and_agrees(
    tmp_path: Path, sigma_rule_dirs: list[Path], evtx_samples: Path, regression_data: Path
) -> None:
    with_duckdb = all(importlib.util.find_spec(m) for m in ("duckdb", "sigma_backend_duckdb"))
    figures = tmp_path / "figures.json"
    # A slice of the corpus (Security, image load, network rules: ~300) keeps the test to a few minutes.
    windows = sigma_rule_dirs[0] / "windows"
    rules = [windows / "builtin" / "security", windows / "image_load", windows / "network_connection"]
    command = [
        sys.executable, "-m", "bench", "--quick",
        "--rows", "3000",
        "--check-rows", "300",
        "--duckdb-rows", "300",
        "--evtx-files", "5",
        *[arg for rule_dir in rules for arg in ("--rules", str(rule_dir))],
        "--data-dir", str(tmp_path / "data"),
        "--results", str(tmp_path / "RESULTS.md"),
        "--json", str(figures),
    ]  # fmt: skip
    if not with_duckdb:
        command.append("--no-duckdb")
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    report = json.loads(figures.read_text())
    expected_modes = {
        "attack": {"evaluate", "parquet", "ndjson", "evtx"},
        "realistic": {"evaluate", "parquet", "ndjson"},
    }
    for lane, modes in expected_modes.items():
        results = report["lanes"][lane]["results"]
        if with_duckdb:
            modes = modes | {"duckdb"}
        assert set(results) == modes, lane
        for mode, figure in results.items():
            assert figure["error"] is None, (lane, mode, figure["error"])
            assert figure["rate"] > 0 and figure["rss_bytes"] > 0, (lane, mode)
            assert figure["rows"] >= (300 if mode == "duckdb" else 3000), (lane, mode)
        check = report["lanes"][lane]["check"]
        assert check["events"] == 300
        assert check["disagree"] == 0, check
        assert check["engine_matches"] == check["reference_matches"]
    # the attack lane is attack-dense: the sample must exercise the rules
    assert report["lanes"]["attack"]["check"]["engine_matches"] > 0
    results_md = (tmp_path / "RESULTS.md").read_text()
    assert "bench:results:begin" in results_md and "in-memory Engine.evaluate" in results_md


@pytest.mark.parametrize("lane", ["attack", "realistic"])
def test_lanes_are_deterministic_and_keep_every_column(
    lane: str, evtx_samples: Path, regression_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(PROJECT))  # bench/ is not an installed package
    from bench import datasets

    shared = evtx_samples.parents[1]
    base = datasets.load_base(shared)
    if lane == "attack":
        first, second = datasets.attack_table(base, 2_000), datasets.attack_table(base, 2_000)
    else:
        first, _ = datasets.realistic_table(base, 2_000, seed=7)
        second, _ = datasets.realistic_table(base, 2_000, seed=7)
    assert first.equals(second)
    assert first.num_rows == 2_000
    assert first.schema.names == base.table.schema.names
