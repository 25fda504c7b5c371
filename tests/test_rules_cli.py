"""`sigma-arrow rules check` and `sigma-arrow compile` through the real click commands."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sigma_arrow.cli import cli

GOOD = """title: Whoami
id: 00000000-0000-0000-0000-000000000001
level: medium
logsource: {product: windows, category: process_creation}
detection:
  sel:
    Image|endswith: '\\whoami.exe'
  condition: sel
"""
BAD = GOOD.replace("0001", "0002").replace("Image|endswith", "Image|bogus")
PLACEHOLDER = GOOD.replace("0001", "0003").replace(
    "Image|endswith: '\\whoami.exe'", "User|expand: '%admins%'"
)
CORRELATION = """title: Many whoamis
id: 00000000-0000-0000-0000-000000000010
correlation:
  type: event_count
  rules: [00000000-0000-0000-0000-000000000001]
  group-by: [Computer]
  timespan: 10m
  condition: {gte: 5}
"""
FILTER = """title: Not on the admin box
id: 00000000-0000-0000-0000-000000000020
logsource: {product: windows, category: process_creation}
filter:
  rules: [00000000-0000-0000-0000-000000000001]
  admin_box:
    Computer: ADMIN01
  condition: not admin_box
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGMA_ARROW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    for name, text in [
        ("good.yml", GOOD),
        ("bad.yml", BAD),
        ("placeholder.yml", PLACEHOLDER),
        ("corr.yml", CORRELATION),
        ("filter.yml", FILTER),
    ]:
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_text(rules_dir: Path) -> None:
    code, out, _ = run("rules", "check", str(rules_dir))
    assert code == 0
    lines = out.splitlines()
    assert (
        f"{rules_dir / 'bad.yml'}:7:10: rule 00000000-0000-0000-0000-000000000002:"
        " error: Unknown modifier 'bogus'" in lines
    )
    assert any(
        line.startswith(
            f"{rules_dir / 'placeholder.yml'}:7:5: rule 00000000-0000-0000-0000-000000000003: unsupported: "
        )
        for line in lines
    )
    assert any("rule 00000000-0000-0000-0000-000000000001: ok: Whoami" in line for line in lines)
    assert any(": correlation: Many whoamis" in line for line in lines)
    assert any(": filter: Not on the admin box" in line for line in lines)
    assert lines[-1] == "5 rules: 1 ok, 1 correlation, 1 filter, 1 unsupported, 1 error"


def test_check_quiet_hides_ok(rules_dir: Path) -> None:
    code, out, _ = run("rules", "check", "-q", str(rules_dir))
    assert code == 0
    assert ": ok:" not in out
    assert "Unknown modifier" in out


def test_check_json(rules_dir: Path) -> None:
    code, out, _ = run("rules", "check", "--json", str(rules_dir))
    assert code == 0
    report = json.loads(out)  # exactly one JSON document
    assert set(report) == {"rules", "totals"}
    assert all(set(entry) == {"path", "id", "title", "status", "reason"} for entry in report["rules"])
    statuses = {entry["id"]: entry["status"] for entry in report["rules"]}
    assert statuses == {
        "00000000-0000-0000-0000-000000000001": "ok",
        "00000000-0000-0000-0000-000000000002": "error",
        "00000000-0000-0000-0000-000000000003": "unsupported",
        "00000000-0000-0000-0000-000000000010": "correlation",
        "00000000-0000-0000-0000-000000000020": "filter",
    }
    assert report["totals"] == {
        "ok": 1,
        "correlation": 1,
        "filter": 1,
        "unsupported": 1,
        "error": 1,
    }


@pytest.mark.parametrize(
    ("files", "args"),
    [
        ({"bad.yml": BAD}, []),
        ({}, ["/nonexistent/rules"]),
        ({"good.yml": GOOD}, ["--logsource-map", "nope"]),
        ({"good.yml": GOOD}, ["-p", "no-such-pipeline"]),
    ],
    ids=["nothing loadable", "missing path", "unknown map", "unknown pipeline"],
)
def test_check_exit_2(tmp_path: Path, files: dict[str, str], args: list[str]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    code, _, err = run(
        "rules", "check", *(args if args and not args[0].startswith("-") else [str(tmp_path), *args])
    )
    assert code == 2
    if args:
        assert err.startswith("Error: ")


def test_compile_ir(rules_dir: Path) -> None:
    code, out, _ = run("compile", str(rules_dir / "good.yml"))
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == r'detection: (endswith Image "\\whoami.exe")'
    assert lines[2].startswith("route 1: when (and (or (eq Channel ")
    assert lines[3].endswith(r'=> (endswith NewProcessName "\\whoami.exe")')
    code, out, _ = run("compile", str(rules_dir / "good.yml"), "--full", "--logsource-map", "none")
    assert out.splitlines()[1] == r'(endswith Image "\\whoami.exe")'


@pytest.mark.parametrize("target", ["datafusion", "polars", "pyarrow", "sql"])
def test_compile_backends(rules_dir: Path, target: str) -> None:
    module = {
        "datafusion": "datafusion_expr",
        "polars": "polars_expr",
        "pyarrow": "pyarrow_expr",
        "sql": "sql",
    }[target]
    if importlib.util.find_spec(f"compiler.backends.{module}") is None:
        pytest.skip(f"compiler.backends.{module} not written yet")
    code, out, err = run("compile", str(rules_dir / "good.yml"), "--to", target, "--logsource-map", "none")
    assert code == 0, err
    assert "whoami.exe" in out.lower()


def test_compile_nothing_compiles(rules_dir: Path) -> None:
    code, _, err = run("compile", str(rules_dir / "bad.yml"))
    assert code == 2
    assert "Unknown modifier" in err
