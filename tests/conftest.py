"""Shared fixtures: where ../shared lives, and skipping cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"
SIGMA = SHARED / "sigma"
SIGMA_RULE_DIRS = [SIGMA / "rules", SIGMA / "rules-emerging-threats", SIGMA / "rules-threat-hunting"]
REGRESSION_DATA = SIGMA / "regression_data"
EVTX_SAMPLES = SHARED / "data" / "evtx-attack-samples"


def require(path: Path) -> Path:
    """Skip the calling test when a ../shared path is missing (a user's fresh clone)."""
    if not path.exists():
        pytest.skip(f"{path} not present (needs ../shared beside the project)")
    return path


@pytest.fixture(scope="session")
def sigma_rule_dirs() -> list[Path]:
    """The three SigmaHQ rule directories."""
    return [require(p) for p in SIGMA_RULE_DIRS]


@pytest.fixture(scope="session")
def regression_data() -> Path:
    """SigmaHQ's regression cases (evtx + json + info.yml)."""
    return require(REGRESSION_DATA)


@pytest.fixture(scope="session")
def evtx_samples() -> Path:
    """The EVTX attack samples."""
    return require(EVTX_SAMPLES)
