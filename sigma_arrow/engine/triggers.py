"""Necessary-literal analysis: which literal hits a tree needs before it can be true.

``necessary_clauses(tree)`` returns a CNF over pooled literals: the tree can only be true on a row
where, for every clause, at least one of the clause's literals hits. An empty list means "no
constraint" (the tree may be true without any literal hit); an empty clause means "never true".
Regex and wildcard leaves contribute a *necessary* literal (a run of characters every match must
contain), so they get candidates from the same multi-literal pass.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from typing import Any

try:  # Python >= 3.11 moved the regex parser.
    sre_constants: Any = importlib.import_module("re._constants")
    sre_parse: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - Python 3.10
    sre_constants = importlib.import_module("sre_constants")
    sre_parse = importlib.import_module("sre_parse")

from compiler import textform
from compiler.ir import (
    And,
    Const,
    Keyword,
    Node,
    Not,
    Or,
    Regex,
    StrMatch,
    Wildcard,
)
from compiler.passes.pool_literals import Literal, literal_of

Clause = frozenset[Literal]

#: Shortest regex / wildcard run worth a literal (shorter ones hit nearly every row).
MIN_RUN = 3
#: ASCII letters whose ``re.IGNORECASE`` matches include characters that do not lowercase to them.
_UNSAFE_FOLD = set("iskIS K")


#: Characters rare enough in logs that even a one-character literal of them is selective.
RARE = frozenset("`^~|{}$%@#;<>!&")


def _useful(run: str) -> bool:
    """Whether a literal run is selective enough to be worth a literal."""
    return len(run) >= MIN_RUN or (bool(run) and all(c in RARE for c in run))


def _rank(run: str) -> tuple[int, int]:
    """Prefer long runs; among short ones, rare characters."""
    return (len(run) if len(run) >= MIN_RUN else 0, sum(c in RARE for c in run))


def _regex_runs(items: list[tuple[object, object]], runs: list[str], current: list[str]) -> None:
    """Collect necessary literal runs of a parsed regex sequence (conservative)."""
    literal = sre_constants.LITERAL
    subpattern = sre_constants.SUBPATTERN
    for op, arg in items:
        if op is literal:
            assert isinstance(arg, int)
            current.append(chr(arg))
            continue
        if op is subpattern:
            assert isinstance(arg, tuple)
            _group, add_flags, del_flags, sub = arg
            if add_flags or del_flags:
                runs.append("".join(current))
                current.clear()
                continue
            _regex_runs(list(sub), runs, current)
            continue
        runs.append("".join(current))
        current.clear()
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            assert isinstance(arg, tuple)
            low, _high, sub = arg
            if low >= 1:
                inner: list[str] = []
                _regex_runs(list(sub), inner, [])
                runs.extend(inner)


@cache
def regex_literal(pattern: str, flags: str) -> Literal | None:
    """Return a contains-literal every match of the regex has (None when there is no useful one).

    The literal's field is empty; callers set it.
    """
    try:
        parsed = sre_parse.parse(pattern, re.IGNORECASE if "i" in flags else 0)
    except (re.error, RecursionError, OverflowError):
        return None
    ignore_case = "i" in flags or bool(parsed.state.flags & re.IGNORECASE)
    runs: list[str] = []
    current: list[str] = []
    _regex_runs(list(parsed), runs, current)
    runs.append("".join(current))
    best: str | None = None
    for run in runs:
        # Case-insensitive: only pure-ASCII stretches without fold-unsafe letters (their matches
        # lowercase to them).
        pieces = re.split(r"[^\x20-\x7e]|[iskISK]", run) if ignore_case else [run]
        for piece in pieces:
            if _useful(piece) and (best is None or _rank(piece) > _rank(best)):
                best = piece
    if best is None:
        return None
    if ignore_case:
        return Literal("", "contains", best.lower(), False)
    return Literal("", "contains", best, True)


def leaf_literal(node: Node) -> Literal | None:
    """Return the pooled literal whose hits are necessary for a leaf (exact for StrMatch)."""
    if isinstance(node, StrMatch):
        return literal_of(node)
    if isinstance(node, Wildcard):
        tokens = textform.fold_glob(textform.parse_glob(node.pattern), node.cased)
        runs = [t for t in tokens if isinstance(t, str) and _useful(t)]
        if not runs:
            return None
        return Literal(node.field, "contains", max(runs, key=_rank), node.cased)
    if isinstance(node, Regex):
        found = regex_literal(node.pattern, node.flags)
        if found is None:
            return None
        return Literal(node.field, found.kind, found.value, found.cased)
    return None


def _clause_score(clause: Clause) -> float:
    """Rough compile-time selectivity (lower is better): short literals hit more rows."""
    score = 0.0
    for lit in clause:
        weight = 1.0 / (1 + len(lit.value))
        score += weight * (0.3 if lit.kind == "equals" else 1.0)
    return score


def necessary_clauses(node: Node) -> list[Clause]:
    """CNF of literal hits the tree needs (see the module docstring)."""
    if isinstance(node, Const):
        return [] if node.value else [frozenset()]
    if isinstance(node, And):
        clauses: list[Clause] = []
        for child in node.children:
            for clause in necessary_clauses(child):
                if clause not in clauses:
                    clauses.append(clause)
        return clauses
    if isinstance(node, Or):
        union: set[Literal] = set()
        for child in node.children:
            child_clauses = necessary_clauses(child)
            if not child_clauses:
                return []
            best: Clause = min(child_clauses, key=_clause_score)
            union.update(best)
        return [frozenset(union)]
    if isinstance(node, Not):
        return []
    if isinstance(node, Keyword):
        # A keyword leaf's literal pools under the field "*": it hits where any string column does.
        node = node.match
    literal = leaf_literal(node)
    return [frozenset((literal,))] if literal is not None else []
