"""Apply Sigma filters to the rules they target: the rule's detection AND the filter's condition.

A filter's condition is written from the rule's point of view (typically ``not selection``), so, as in
pySigma, the filtered detection is ``And(rule, filter_condition)``; with the usual ``not x`` filter
condition that is ``And(rule, Not(x))``. A filter applies to a rule when the filter's logsource
attributes all equal the rule's and the rule's id or name is among its ``rules`` (no targets: any rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from compiler.ir import And, Node
from compiler.model import RuleMeta, SigmaFilter


@dataclass(slots=True)
class FilteredRules:
    """Rules (meta, detection) after filtering, and which filter ids were applied to which rule id."""

    rules: list[tuple[RuleMeta, Node]] = field(default_factory=list)
    applied: dict[str, list[str]] = field(default_factory=dict)


def _logsource_covers(filter_meta: RuleMeta, rule_meta: RuleMeta) -> bool:
    for attr in ("product", "category", "service"):
        wanted = getattr(filter_meta, attr)
        if wanted is not None and (getattr(rule_meta, attr) or "").lower() != wanted.lower():
            return False
    return True


def filter_applies(sigma_filter: SigmaFilter, meta: RuleMeta, names: Mapping[str, str]) -> bool:
    """Whether ``sigma_filter`` targets the rule described by ``meta``."""
    if not _logsource_covers(sigma_filter.meta, meta):
        return False
    if not sigma_filter.targets:
        return True
    return any(names.get(t, t) == meta.id for t in sigma_filter.targets)


def apply_filters(
    rules: Sequence[tuple[RuleMeta, Node]],
    filters: Sequence[SigmaFilter],
    names: Mapping[str, str] | None = None,
) -> FilteredRules:
    """Each rule's detection AND-ed with the condition of every filter that targets it."""
    names = names or {}
    out = FilteredRules()
    for meta, detection in rules:
        matching = [f for f in filters if filter_applies(f, meta, names)]
        if matching:
            out.applied[meta.id] = [f.meta.id for f in matching]
            detection = And((detection, *(f.detection for f in matching)))
        out.rules.append((meta, detection))
    return out
