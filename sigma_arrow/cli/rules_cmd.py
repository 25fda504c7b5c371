"""`sigma-arrow rules check`: compile rules and report each one's status (ok / unsupported / error ...)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import click

from compiler.errors import InputError
from sigma_arrow.ruleset import RuleSet

STATUSES = ("ok", "correlation", "filter", "unsupported", "error")


def rule_report(ruleset: RuleSet) -> list[dict[str, Any]]:
    """One entry per rule, correlation, filter and failure: path, id, title, status, reason."""
    entries: list[dict[str, Any]] = []
    for rule in ruleset.rules:
        reason = "" if rule.routes else f"no route in logsource map {ruleset.logsource_map!r}: never matches"
        entries.append(_entry(rule.meta.path, rule.id, rule.meta.title, "ok", reason))
    for corr in ruleset.correlations:
        reason = f"{corr.type} correlation over {', '.join(corr.rules)}"
        entries.append(_entry(corr.meta.path, corr.meta.id, corr.meta.title, "correlation", reason))
    for flt in ruleset.filters:
        targets = ", ".join(flt.targets) if flt.targets else "any rule of its logsource"
        entries.append(_entry(flt.meta.path, flt.meta.id, flt.meta.title, "filter", f"filter for {targets}"))
    for error in ruleset.errors:
        entry = _entry(error.path, error.rule_id, None, error.status, error.message)
        entry["_line"], entry["_col"] = error.line, error.col
        entries.append(entry)
    entries.sort(key=lambda e: (e["path"], e.get("_line", 0), e["id"] or ""))
    return entries


def _entry(path: str, rule_id: str | None, title: str | None, status: str, reason: str) -> dict[str, Any]:
    return {"path": path, "id": rule_id, "title": title, "status": status, "reason": reason}


def totals(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Count per status (every status listed, zeros included) plus ``total``."""
    counts = Counter(e["status"] for e in entries)
    result = {status: counts.get(status, 0) for status in STATUSES}
    for status, count in counts.items():
        result.setdefault(status, count)
    result["total"] = len(entries)
    return result


def _line(entry: dict[str, Any]) -> str:
    if entry["status"] in ("unsupported", "error"):
        where = f"{entry['path']}:{entry.get('_line', 1)}:{entry.get('_col', 1)}"
        return f"{where}: rule {entry['id'] or '-'}: {entry['status']}: {entry['reason']}"
    detail = f" ({entry['reason']})" if entry["reason"] else ""
    return f"{entry['path']}: rule {entry['id']}: {entry['status']}: {entry['title']}{detail}"


@click.group(name="rules")
def rules() -> None:
    """Inspect Sigma rules (see `rules check`)."""


@rules.command(name="check")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "-p", "--pipeline", "pipelines", multiple=True, help="pySigma pipeline name or YAML file (repeatable)."
)
@click.option(
    "--logsource-map",
    default="windows",
    show_default=True,
    help="Logsource map: windows, linux, none or a map YAML file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {rules: [...], totals: {...}}.")
@click.option("-q", "--quiet", is_flag=True, help="Only print rules that are not ok, and the totals.")
@click.option("--no-cache", is_flag=True, help="Compile from scratch (do not read or write the cache).")
def check(
    paths: tuple[str, ...],
    pipelines: tuple[str, ...],
    logsource_map: str,
    as_json: bool,
    quiet: bool,
    no_cache: bool,
) -> None:
    """Compile RULES (files, directories, globs) and report each rule: ok, unsupported or error."""
    from sigma_arrow.loader import load_rules

    try:
        ruleset = load_rules(paths, pipelines=pipelines, logsource_map=logsource_map, cache=not no_cache)
    except InputError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    entries = rule_report(ruleset)
    counts = totals(entries)
    if as_json:
        public = [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]
        by_status = {k: v for k, v in counts.items() if k != "total"}
        click.echo(json.dumps({"rules": public, "totals": by_status}, ensure_ascii=False))
    else:
        for entry in entries:
            if quiet and entry["status"] == "ok" and not entry["reason"]:
                continue
            click.echo(_line(entry))
        summary = ", ".join(f"{counts[s]} {s}" for s in counts if s != "total")
        click.echo(f"{counts['total']} rules: {summary}")
    loaded = len(ruleset.rules) + len(ruleset.correlations) + len(ruleset.filters)
    sys.exit(0 if loaded else 2)
