"""Lower pySigma objects (detections, conditions, values) to the IR.

pySigma does the parsing and applies the modifiers (so value expansions such as ``windash``,
``base64offset`` and ``wide`` give exactly pySigma's values); this module turns the resulting
``SigmaType`` values and condition parse trees into IR nodes.

Keyword (unbound) values are substring searches: a keyword string without ``startswith`` /
``endswith`` modifiers is wrapped in ``*...*`` (as if it had ``|contains``), matching how full-text
searches treat a term.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionIdentifier,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionSelector,
    SigmaCondition,
)
from sigma.modifiers import (
    SigmaEndswithModifier,
    SigmaStartswithModifier,
    SigmaWideModifier,
    modifier_mapping,
    reverse_modifier_mapping,
)
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaDetections, SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaQueryExpression,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from compiler.errors import UnsupportedError
from compiler.ir import (
    KEYWORD_FIELD,
    And,
    Cidr,
    Compare,
    CompareOp,
    Const,
    Exists,
    FieldRef,
    IsNull,
    Keyword,
    MatchKind,
    Node,
    Not,
    Or,
    Regex,
    StrMatch,
    TimePart,
    TimestampPart,
    Wildcard,
)

# The Sigma specification names UTF-16LE ``utf16le`` (an alias of ``wide``); pySigma 1.5 only knows
# ``wide``, so register the alias (forward mapping only: ``wide`` stays the canonical name).
modifier_mapping.setdefault("utf16le", SigmaWideModifier)
reverse_modifier_mapping.setdefault(SigmaWideModifier.__name__, "wide")

_COMPARE_OPS: dict[CompareOperators, CompareOp] = {
    CompareOperators.LT: "lt",
    CompareOperators.LTE: "lte",
    CompareOperators.GT: "gt",
    CompareOperators.GTE: "gte",
}
_REGEX_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}


class LoweringError(UnsupportedError):
    """A construct the IR cannot express (raised with a precise reason, located by the caller)."""


class BrokenRuleError(LoweringError):
    """The rule itself is wrong (e.g. its condition names a detection that does not exist)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status="error")


def _escape_glob(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def lower_string(field: str, value: SigmaString, *, cased: bool = False, unanchored: bool = False) -> Node:
    """Lower a SigmaString to StrMatch (plain, or only leading/trailing ``*``) or an anchored Wildcard."""
    parts: list[Any] = list(value.s)
    for part in parts:
        if isinstance(part, Placeholder):
            raise LoweringError(
                f"unresolved placeholder %{part.name}% (expand modifier) on field {field!r}: "
                "no processing pipeline defines it"
            )
    if unanchored:
        if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
            parts.insert(0, SpecialChars.WILDCARD_MULTI)
        if parts[-1] is not SpecialChars.WILDCARD_MULTI:
            parts.append(SpecialChars.WILDCARD_MULTI)
    start, end = 0, len(parts)
    while start < end and parts[start] is SpecialChars.WILDCARD_MULTI:
        start += 1
    while end > start and parts[end - 1] is SpecialChars.WILDCARD_MULTI:
        end -= 1
    middle = parts[start:end]
    if all(isinstance(p, str) for p in middle):
        text = "".join(middle)
        leading, trailing = start > 0, end < len(parts)
        kind: MatchKind
        if leading and trailing:
            kind = "contains"
        elif leading:
            kind = "endswith"
        elif trailing:
            kind = "startswith"
        else:
            kind = "equals"
        if not middle and (leading or trailing):
            kind = "contains"  # a bare "*": any value at all
        return StrMatch(field, kind, text, cased)
    pattern = []
    for part in parts:
        if part is SpecialChars.WILDCARD_MULTI:
            pattern.append("*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            pattern.append("?")
        else:
            pattern.append(_escape_glob(part))
    return Wildcard(field, "".join(pattern), cased)


def lower_value(field: str | None, value: Any, *, unanchored_keyword: bool = True) -> Node:
    """Lower one (modified) Sigma value bound to ``field`` (``None``: a keyword) as an IR node."""
    if field is None:
        if isinstance(value, SigmaExpansion):
            return _or([lower_value(None, v, unanchored_keyword=unanchored_keyword) for v in value.values])
        if isinstance(value, SigmaNull | SigmaExists | SigmaFieldReference):
            raise LoweringError(f"{type(value).__name__} value cannot be a keyword (needs a field)")
        return Keyword(_lower_bound(KEYWORD_FIELD, value, unanchored=unanchored_keyword))
    return _lower_bound(field, value, unanchored=False)


def _lower_bound(field: str, value: Any, *, unanchored: bool) -> Node:
    if isinstance(value, SigmaExpansion):
        return _or([_lower_bound(field, v, unanchored=unanchored) for v in value.values])
    if isinstance(value, SigmaCasedString):
        return lower_string(field, value, cased=True, unanchored=unanchored)
    if isinstance(value, SigmaString):
        return lower_string(field, value, unanchored=unanchored)
    if isinstance(value, SigmaTimestampPart):
        part: TimePart = value.timestamp_part.name.lower()  # type: ignore[assignment]
        return TimestampPart(field, part, int(value.number))
    if isinstance(value, SigmaNumber | SigmaBool):
        text = str(value.number) if isinstance(value, SigmaNumber) else ("true" if value.boolean else "false")
        return lower_string(field, SigmaString.from_str(text), unanchored=unanchored)
    if isinstance(value, SigmaNull):
        return IsNull(field)
    if isinstance(value, SigmaExists):
        return Exists(field) if value.exists else Not(Exists(field))
    if isinstance(value, SigmaRegularExpression):
        if value.regexp.contains_placeholder():
            raise LoweringError(f"unresolved placeholder in regular expression on field {field!r}")
        flags = "".join(sorted(_REGEX_FLAGS[f] for f in value.flags))
        return Regex(field, str(value.regexp), flags)
    if isinstance(value, SigmaCIDRExpression):
        return Cidr(field, str(value.network))
    if isinstance(value, SigmaCompareExpression):
        op = _COMPARE_OPS.get(value.op)
        if op is None:
            raise LoweringError(f"comparison operator {value.op.name} is not supported on field {field!r}")
        return Compare(field, op, value.number.number)
    if isinstance(value, SigmaFieldReference):
        kind: MatchKind = "equals"
        if value.starts_with and value.ends_with:
            kind = "contains"
        elif value.starts_with:
            kind = "startswith"
        elif value.ends_with:
            kind = "endswith"
        return FieldRef(field, value.field, kind)
    if isinstance(value, SigmaQueryExpression):
        raise LoweringError(f"query expression placeholder on field {field!r} (backend-specific)")
    raise LoweringError(f"value type {type(value).__name__} is not supported (field {field!r})")


def _or(nodes: Sequence[Node]) -> Node:
    return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))


def _and(nodes: Sequence[Node]) -> Node:
    return nodes[0] if len(nodes) == 1 else And(tuple(nodes))


def lower_detection_item(item: SigmaDetectionItem) -> Node:
    """Lower a detection item: its values OR-ed (AND-ed with ``|all``), negated with ``|neq``."""
    unanchored = not any(m in (SigmaStartswithModifier, SigmaEndswithModifier) for m in item.modifiers)
    if not item.value:
        if item.field is None:
            raise LoweringError("null value must be bound to a field")
        node: Node = IsNull(item.field)
    else:
        nodes = [lower_value(item.field, v, unanchored_keyword=unanchored) for v in item.value]
        node = _and(nodes) if item.value_linking is ConditionAND else _or(nodes)
    return Not(node) if item.negated else node


def lower_detection(detection: SigmaDetection) -> Node:
    """Lower a named detection: maps AND-ed, lists of maps OR-ed (pySigma's ``item_linking``)."""
    nodes: list[Node] = []
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            nodes.append(lower_detection(item))
        else:
            nodes.append(lower_detection_item(item))
    if not nodes:
        return Const(True)
    return _or(nodes) if detection.item_linking is ConditionOR else _and(nodes)


def lower_condition(tree: Any, detections: SigmaDetections, named: dict[str, Node]) -> Node:
    """Lower a parsed (not post-processed) condition tree with identifiers resolved through ``named``."""
    if isinstance(tree, ConditionIdentifier):
        if tree.identifier not in named:
            raise BrokenRuleError(f"condition references undefined detection {tree.identifier!r}")
        return named[tree.identifier]
    if isinstance(tree, ConditionSelector):
        ids = [c.identifier for c in tree.resolve_referenced_detections(detections)]
        if not ids:
            raise BrokenRuleError(f"'{tree.args[0]} of {tree.pattern}' matches no detection in the rule")
        nodes = [named[i] for i in ids]
        return _or(nodes) if tree.cond_class is ConditionOR else _and(nodes)
    if isinstance(tree, ConditionNOT):
        return Not(lower_condition(tree.args[0], detections, named))
    if isinstance(tree, ConditionAND | ConditionOR):
        nodes = [lower_condition(a, detections, named) for a in tree.args if a is not None]
        return _and(nodes) if isinstance(tree, ConditionAND) else _or(nodes)
    if isinstance(tree, ConditionItem):
        raise LoweringError(f"condition element {type(tree).__name__} is not supported")
    raise LoweringError(f"condition element {tree!r} is not supported")


#: ``N of pattern`` with N >= 2 (pySigma's grammar only knows ``1``/``any``/``all``).
_N_OF = re.compile(r"(?<![\w-])([0-9]+)\s+of\s+([A-Za-z0-9_*]+)")
#: Cap on the and/or expansion of ``N of`` (combinations of N out of k selections).
MAX_N_OF_COMBINATIONS = 4096


def _selection_names(pattern: str, detections: SigmaDetections) -> list[str]:
    """Return the detection names a selector pattern covers (``them``/``x*`` skip ``_``-prefixed names)."""
    regex = re.compile(".*" if pattern == "them" else pattern.replace("*", ".*"))
    return [
        name
        for name in detections.detections
        if regex.fullmatch(name) and (pattern.startswith("_") or not name.startswith("_"))
    ]


def _expand_n_of(condition: str, detections: SigmaDetections, named: dict[str, Node]) -> str:
    """Replace ``N of pattern`` (N >= 2) by a synthetic identifier bound to "at least N of them"."""

    def replace(match: re.Match[str]) -> str:
        count, pattern = int(match.group(1)), match.group(2)
        if count == 1:
            return match.group(0)
        names = _selection_names(pattern, detections)
        if count > len(names):
            raise BrokenRuleError(
                f"'{count} of {pattern}' needs {count} detections but only {len(names)} match"
            )
        if math.comb(len(names), count) > MAX_N_OF_COMBINATIONS:
            raise LoweringError(f"'{count} of {pattern}' expands to too many combinations")
        if count == len(names):
            node: Node = _and([named[n] for n in names])
        else:
            node = Or(tuple(_and([named[n] for n in combo]) for combo in combinations(names, count)))
        synthetic = f"nof{len(named)}x{count}"
        while synthetic in named:
            synthetic += "_"
        named[synthetic] = node
        return synthetic

    return _N_OF.sub(replace, condition)


def lower_detections(detections: SigmaDetections) -> Node:
    """Lower the whole detection section: every condition (OR-ed when several are given)."""
    named = {name: lower_detection(det) for name, det in detections.detections.items()}
    nodes = []
    for condition in detections.parsed_condition:
        text = condition.condition
        if _N_OF.search(text):
            condition = SigmaCondition(_expand_n_of(text, detections, named), detections, condition.source)
        tree = condition.parse(postprocess=False)
        nodes.append(lower_condition(tree, detections, named))
    return _or(nodes)


def lower_rule(rule: SigmaRule) -> Node:
    """Lower a SigmaRule's detection to one IR tree (not simplified)."""
    return lower_detections(rule.detection)
