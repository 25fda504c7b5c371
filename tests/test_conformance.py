"""SigmaHQ conformance: every regression case's named rule fires through `sigma-arrow scan`.

Runs ../shared/tools/regression_check.py (SigmaHQ's cases scored against the CLI) with the whole
corpus: rules, rules-emerging-threats and rules-threat-hunting, default `windows` map.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED

CHECKER = SHARED / "tools" / "regression_check.py"


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["evtx", "json", "raw"])
def test_regression_cases_fire_their_rule(
    kind: str, regression_data: Path, sigma_rule_dirs: list[Path]
) -> None:
    if not CHECKER.exists():
        pytest.skip("regression_check.py not present")
    env = dict(os.environ)
    # The checker calls `sigma-arrow` from PATH: use the one installed beside this interpreter.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, str(CHECKER), str(regression_data), kind, *map(str, sigma_rule_dirs)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    print(done.stdout[-3000:])
    last = done.stdout.strip().splitlines()[-1]
    passed, total = (int(n) for n in last.removeprefix("passed ").split("/"))
    assert total > 0
    assert passed == total, done.stdout[-3000:] + done.stderr[-2000:]
