"""`sigma-arrow compile RULE --to ir|datafusion|polars|pyarrow|sql`: show what rules compile to."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import click

from compiler.errors import InputError, SigmaArrowError
from compiler.ir import to_text
from compiler.model import CompiledRule

#: --to target -> backend module in compiler/backends/
BACKENDS = {
    "datafusion": "compiler.backends.datafusion_expr",
    "polars": "compiler.backends.polars_expr",
    "pyarrow": "compiler.backends.pyarrow_expr",
    "sql": "compiler.backends.sql",
}


def ir_lines(rule: CompiledRule, full: bool = False) -> list[str]:
    """Return the IR text of a rule: detection and routes (condition => detection), or the predicate."""
    lines = [f"# rule {rule.id}: {rule.meta.title} ({rule.meta.path})"]
    if full:
        lines.append(to_text(rule.predicate))
        return lines
    lines.append(f"detection: {to_text(rule.detection)}")
    if not rule.routes:
        lines.append("routes: none (the logsource map selects no events for this rule)")
    for index, route in enumerate(rule.routes, 1):
        lines.append(f"route {index}: when {to_text(route.condition)} => {to_text(route.detection)}")
    return lines


def _backend(target: str) -> ModuleType:
    name = BACKENDS[target]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise click.ClickException(
                f"backend {target!r} is not available ({name} is not installed)"
            ) from exc
        raise click.ClickException(f"backend {target!r} cannot be loaded: {exc}") from exc


def backend_text(module: ModuleType, rule: CompiledRule) -> str:
    """Return the backend expression for a rule's whole predicate, as the backend displays it."""
    if hasattr(module, "translate_rule"):
        expr = module.translate_rule(rule)
    elif hasattr(module, "translate"):
        expr = module.translate(rule.predicate)
    else:
        raise click.ClickException(f"{module.__name__} has no translate function")
    display = getattr(module, "to_display", None)
    return str(display(expr) if callable(display) else expr)


@click.command(name="compile")
@click.argument("rule_paths", nargs=-1, required=True, metavar="RULE...")
@click.option(
    "--to",
    "target",
    type=click.Choice(["ir", *BACKENDS]),
    default="ir",
    show_default=True,
    help="Output form.",
)
@click.option(
    "-p", "--pipeline", "pipelines", multiple=True, help="pySigma pipeline name or YAML file (repeatable)."
)
@click.option(
    "--logsource-map", default="windows", show_default=True, help="windows, linux, none or a map file."
)
@click.option("--id", "rule_id", default=None, help="Only the rule with this id.")
@click.option("--full", is_flag=True, help="For --to ir: print the whole predicate instead of the routes.")
def compile_rule(
    rule_paths: tuple[str, ...],
    target: str,
    pipelines: tuple[str, ...],
    logsource_map: str,
    rule_id: str | None,
    full: bool,
) -> None:
    """Print what RULE (a file, directory or glob) compiles to: the IR or a backend expression."""
    from sigma_arrow.loader import load_rules

    try:
        ruleset = load_rules(rule_paths, pipelines=pipelines, logsource_map=logsource_map)
    except InputError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    for error in ruleset.errors:
        click.echo(
            f"{error.path}:{error.line}:{error.col}: rule {error.rule_id or '-'}: "
            f"{error.status}: {error.message}",
            err=True,
        )
    rules = [r for r in ruleset.rules if rule_id is None or r.id == rule_id]
    if not rules:
        click.echo("Error: no rule could be compiled" + (f" with id {rule_id}" if rule_id else ""), err=True)
        sys.exit(2)
    module = _backend(target) if target != "ir" else None
    failed = False
    for rule in rules:
        if module is None:
            click.echo("\n".join(ir_lines(rule, full)))
            continue
        click.echo(f"# rule {rule.id}: {rule.meta.title} ({rule.meta.path})")
        try:
            click.echo(backend_text(module, rule))
        except SigmaArrowError as exc:
            failed = True
            click.echo(f"{rule.meta.path}:1:1: rule {rule.id}: unsupported: {exc}", err=True)
    sys.exit(1 if failed and len(rules) == 1 else 0)
