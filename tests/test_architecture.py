"""The compiler core stays pure: no engine imports and no file I/O outside compiler/backends/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COMPILER = Path(__file__).resolve().parents[1] / "compiler"
ENGINES = {"pyarrow", "polars", "datafusion", "confluent_kafka"}
IO_CALLS = {"open"}
IO_ATTRIBUTES = {"read_text", "read_bytes", "write_text", "write_bytes", "urlopen"}
IO_MODULES = {"socket", "urllib", "http", "requests", "subprocess", "shutil"}

CORE_MODULES = sorted(p for p in COMPILER.rglob("*.py") if "backends" not in p.relative_to(COMPILER).parts)


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
            # importlib.import_module("pyarrow") / __import__("polars")
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                value = node.args[0].value
                if isinstance(value, str):
                    roots.add(value.split(".")[0])
    return roots


def io_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in IO_CALLS:
                found.append(f"{func.id}() at line {node.lineno}")
            elif isinstance(func, ast.Attribute) and func.attr in IO_ATTRIBUTES | IO_CALLS:
                found.append(f".{func.attr}() at line {node.lineno}")
    return found


def test_there_are_core_modules() -> None:
    names = {p.name for p in CORE_MODULES}
    assert {"ir.py", "model.py", "errors.py", "reference.py", "textform.py"} <= names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(COMPILER)))
def test_core_module_imports_no_engine(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert not imported_roots(tree) & ENGINES, f"{path} imports an engine"
    assert not imported_roots(tree) & IO_MODULES, f"{path} imports a network/process module"


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(COMPILER)))
def test_core_module_does_no_file_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert io_calls(tree) == [], f"{path} does file I/O"


def test_checker_catches_violations() -> None:
    bad = ast.parse(
        "import pyarrow.compute as pc\nfrom polars import col\nx = open('f')\nPath('x').read_text()\n"
    )
    assert imported_roots(bad) >= {"pyarrow", "polars"}
    assert len(io_calls(bad)) == 2


@pytest.mark.parametrize("module", ["pyarrow_expr", "polars_expr", "datafusion_expr", "sql"])
def test_each_backend_fails_closed(module: str) -> None:
    """Each backend is one singledispatch ``translate`` whose fallback raises UnsupportedError."""
    import importlib

    from compiler.errors import UnsupportedError
    from compiler.ir import Node

    backend = importlib.import_module(f"compiler.backends.{module}")
    assert hasattr(backend.translate, "registry")
    with pytest.raises(UnsupportedError):
        backend.translate(Node())
    assert callable(backend.translate_rule) and callable(backend.to_display)
