"""Compile Sigma rule documents (path, YAML text) into CompiledRules, Correlations and SigmaFilters.

Two phases so that the expensive one can run in worker processes:

* ``parse_document`` (per file): YAML -> pySigma objects -> pipelines -> IR (picklable ``ParsedDocument``);
* ``finalize`` (whole ruleset): resolve rule names, apply filters, simplify, route through the logsource
  map and intern identical subtrees across all rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compiler.errors import RuleError, UnsupportedError
from compiler.ir import Node
from compiler.logsource import NONE_MAP, LogsourceMap
from compiler.model import CompiledRule, CompileResult, Correlation, RuleMeta, SigmaFilter
from compiler.passes.apply_filters import apply_filters
from compiler.passes.dedupe import DedupeStats, Interner, dedupe
from compiler.passes.simplify import simplify

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class LoweredRule:
    """A detection rule after lowering, before filters and routing."""

    meta: RuleMeta
    detection: Node
    name: str | None = None


@dataclass(slots=True)
class ParsedDocument:
    """What one rule file yields (picklable, so workers can produce it)."""

    path: str
    rules: list[LoweredRule] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    filters: list[SigmaFilter] = field(default_factory=list)
    #: (name, id) pairs of rules and correlations that have a ``name``.
    names: list[tuple[str, str]] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)


@dataclass(slots=True)
class FinalizeStats:
    """Figures from the whole-ruleset passes."""

    dedupe: DedupeStats = field(default_factory=DedupeStats)
    filters_applied: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------- locating problems in the YAML text


class _Locator:
    """Finds the line/column of a rule or of an offending key in a file's text."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def find(self, needle: str, start: int = 1) -> tuple[int, int] | None:
        for index in range(max(start, 1) - 1, len(self.lines)):
            col = self.lines[index].find(needle)
            if col >= 0:
                return index + 1, col + 1
        return None

    def rule_start(self, rule_id: str | None, title: str | None) -> int:
        """Return the line of the rule's ``id:`` (or ``title:``); 1 if neither is found."""
        for needle in (rule_id, title):
            if needle:
                hit = self.find(needle)
                if hit:
                    return hit[0]
        return 1

    def locate(self, message: str, start: int) -> tuple[int, int]:
        """Best position for an error message inside the rule starting at ``start``."""
        candidates: list[str] = []
        modifier = re.search(r"[Uu]nknown modifier '?\"?([\w-]+)", message)
        if modifier:
            candidates.append("|" + modifier.group(1))
        for class_name in re.findall(r"\b(Sigma\w+Modifier)\b", message):
            candidates.extend("|" + m for m in _modifier_ids(class_name))
        for phrase, key in _MESSAGE_KEYS:
            if phrase in message:
                candidates.append(key)
        quoted = re.findall(r"'([^']{1,80})'", message)
        if "condition" in message.lower() or "Detection" in message:
            candidates.extend(f"{q}" for q in quoted if not q.startswith(" "))
            candidates.append("condition:")
        else:
            candidates.extend(quoted)
        for needle in candidates:
            hit = self.find(needle, start)
            if hit:
                return hit
        return start, 1

    def error(
        self,
        message: str,
        *,
        rule_id: str | None,
        start: int,
        status: str = "error",
        exact: tuple[int, int] | None = None,
    ) -> RuleError:
        line, col = exact or self.locate(message, start)
        cls = UnsupportedError if status == "unsupported" else RuleError
        return cls(message, path=self.path, line=line, col=col, rule_id=rule_id, status=status)


_MESSAGE_KEYS = (
    ("Regular expression modifier", "|re"),
    ("CIDR", "|cidr"),
    ("Base64", "|base64"),
    ("Wide modifier", "|wide"),
    ("Field references", "|fieldref"),
    ("Exists modifier", "|exists"),
    ("Null value", "null"),
    ("condition", "condition:"),
    ("logsource", "logsource:"),
    ("No detections", "detection:"),
)


def _modifier_ids(class_name: str) -> list[str]:
    from sigma.modifiers import modifier_mapping

    return [mid for mid, cls in modifier_mapping.items() if cls.__name__ == class_name]


def _yaml_position(exc: yaml.YAMLError) -> tuple[int, int] | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return None
    return mark.line + 1, mark.column + 1


# ---------------------------------------------------------------- pySigma objects -> model


def _enum_name(value: Any, default: str = "") -> str:
    return value.name.lower() if value is not None and hasattr(value, "name") else default


def _meta(rule: Any, path: str, rule_id: str) -> RuleMeta:
    logsource = getattr(rule, "logsource", None)
    return RuleMeta(
        id=rule_id,
        title=rule.title or "",
        level=_enum_name(rule.level, "informational"),
        status=_enum_name(rule.status),
        tags=tuple(str(t) for t in rule.tags),
        product=getattr(logsource, "product", None),
        category=getattr(logsource, "category", None),
        service=getattr(logsource, "service", None),
        path=path,
        description=(rule.description or "").strip(),
    )


def _rule_id(rule: Any, path: str, index: int) -> str:
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return str(rule.name)
    return f"{path}#{index}"


def _correlation(rule: Any, meta: RuleMeta) -> Correlation:
    condition = rule.condition.to_dict()
    cond_items: tuple[tuple[str, object], ...]
    if isinstance(condition, dict):
        cond_items = tuple((str(k), v) for k, v in condition.items())
    else:
        cond_items = (("expression", str(condition)),)
    aliases = tuple(
        (alias.alias, tuple((ref.reference, str(name)) for ref, name in alias.mapping.items()))
        for alias in rule.aliases
    )
    timespan = getattr(rule.timespan, "seconds", None) if rule.timespan is not None else None
    return Correlation(
        meta=meta,
        type=_enum_name(rule.type),
        rules=tuple(ref.reference for ref in (rule.rules or [])),
        group_by=tuple(rule.group_by or ()),
        timespan_seconds=float(timespan) if timespan is not None else None,
        condition=cond_items,
        aliases=aliases,
        generate=bool(rule.generate),
    )


def _combine_pipelines(pipelines: Sequence[Any]) -> Any:
    if not pipelines:
        return None
    ordered = sorted(pipelines, key=lambda p: p.priority)
    combined = ordered[0]
    for extra in ordered[1:]:
        combined = combined + extra
    return combined


def parse_document(path: str, text: str, pipelines: Sequence[Any] = ()) -> ParsedDocument:
    """Parse and lower every rule, correlation and filter of one YAML file (errors are collected)."""
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    from sigma.exceptions import (
        SigmaConditionError,
        SigmaError,
        SigmaRuleLocation,
        SigmaTransformationError,
    )
    from sigma.filters import SigmaFilter as PySigmaFilter
    from sigma.rule import SigmaRule

    from compiler.lower import LoweringError, lower_detections

    result = ParsedDocument(path)
    where = _Locator(path, text)
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        result.errors.append(
            where.error(f"YAML error: {problem}", rule_id=None, start=1, exact=_yaml_position(exc))
        )
        return result
    documents = [d for d in documents if d is not None]
    if not documents:
        result.errors.append(where.error("no Sigma rule in file", rule_id=None, start=1, exact=(1, 1)))
        return result
    bad = [i for i, d in enumerate(documents) if not isinstance(d, dict)]
    if bad:
        result.errors.append(
            where.error(f"YAML document {bad[0] + 1} is not a map", rule_id=None, start=1, exact=(1, 1))
        )
        return result
    try:
        collection = SigmaCollection.from_dicts(
            documents,
            collect_errors=True,
            source=SigmaRuleLocation(Path(path)),
            collect_filters=True,
            resolve_references=False,
        )
    except Exception as exc:  # pySigma raises plain Python errors on some malformed input
        result.errors.append(where.error(f"cannot parse rule file: {exc}", rule_id=None, start=1))
        return result
    for error in collection.errors:
        if not _error_owned_by_rule(error, collection):
            result.errors.append(where.error(str(_plain(error)), rule_id=None, start=1))
    pipeline = _combine_pipelines(pipelines)
    items: list[Any] = [*collection.rules, *collection.filters]
    for index, item in enumerate(items):
        rule_id = _rule_id(item, path, index)
        start = where.rule_start(str(item.id) if item.id else None, item.title)
        if item.errors:
            for error in item.errors[:1]:
                result.errors.append(where.error(_plain(error), rule_id=rule_id, start=start))
            continue
        try:
            if pipeline is not None and not isinstance(item, PySigmaFilter):
                pipeline.apply(item)
            meta = _meta(item, path, rule_id)
            if item.name:
                result.names.append((str(item.name), rule_id))
            if isinstance(item, SigmaCorrelationRule):
                result.correlations.append(_correlation(item, meta))
            elif isinstance(item, PySigmaFilter):
                refs = item.filter.rules
                targets = () if isinstance(refs, str) else tuple(r.reference for r in refs)
                detection = simplify(lower_detections(item.filter))
                result.filters.append(SigmaFilter(meta=meta, targets=targets, detection=detection))
            elif isinstance(item, SigmaRule):
                detection = lower_detections(item.detection)
                result.rules.append(LoweredRule(meta, detection, str(item.name) if item.name else None))
            else:  # pragma: no cover - pySigma only yields the three kinds above
                raise LoweringError(f"unknown rule kind {type(item).__name__}")
        except LoweringError as exc:
            result.errors.append(where.error(exc.message, rule_id=rule_id, start=start, status=exc.status))
        except SigmaTransformationError as exc:  # a pipeline declares it cannot handle this rule
            message = f"pipeline: {_plain(exc)}"
            result.errors.append(where.error(message, rule_id=rule_id, start=start, status="unsupported"))
        except SigmaConditionError as exc:
            hit = where.find("condition:", start)
            result.errors.append(where.error(_plain(exc), rule_id=rule_id, start=start, exact=hit))
        except SigmaError as exc:
            result.errors.append(where.error(_plain(exc), rule_id=rule_id, start=start))
        except Exception as exc:  # a pipeline or pySigma bug must not take the other rules down
            result.errors.append(where.error(f"{type(exc).__name__}: {exc}", rule_id=rule_id, start=start))
    return result


def _plain(error: Exception) -> str:
    """Return a pySigma error message without its (absolute path) location suffix."""
    text = error.args[0] if error.args else str(error)
    return str(text)


def _error_owned_by_rule(error: Exception, collection: Any) -> bool:
    items = [*collection.rules, *collection.filters]
    return any(any(e is error for e in item.errors) for item in items)


# ---------------------------------------------------------------- whole-ruleset passes


def finalize(
    parsed: Iterable[ParsedDocument],
    logsource_map: LogsourceMap = NONE_MAP,
    stats: FinalizeStats | None = None,
) -> CompileResult:
    """Resolve names, apply filters, simplify, route and intern identical subtrees across the ruleset."""
    stats = stats if stats is not None else FinalizeStats()
    result = CompileResult()
    lowered: list[LoweredRule] = []
    names: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    for doc in parsed:
        result.errors.extend(doc.errors)
        names.update(doc.names)
        for rule in doc.rules:
            if rule.meta.id in seen_ids:
                result.errors.append(
                    RuleError(
                        f"duplicate rule id (first defined in {seen_ids[rule.meta.id]})",
                        path=rule.meta.path,
                        rule_id=rule.meta.id,
                    )
                )
                continue
            seen_ids[rule.meta.id] = rule.meta.path
            lowered.append(rule)
        result.filters.extend(doc.filters)
        result.correlations.extend(doc.correlations)
    known = set(seen_ids) | {c.meta.id for c in result.correlations}
    resolved: list[Correlation] = []
    for corr in result.correlations:
        refs = tuple(names.get(r, r) for r in corr.rules)
        missing = [r for r, ref in zip(corr.rules, refs, strict=True) if ref not in known]
        if missing:
            failed = {e.rule_id for e in result.errors if e.rule_id}
            broken = [m for m in missing if names.get(m, m) in failed]
            detail = f" ({', '.join(broken)} failed to load)" if broken else ""
            result.errors.append(
                RuleError(
                    f"correlation references unknown rule(s): {', '.join(missing)}{detail}",
                    path=corr.meta.path,
                    rule_id=corr.meta.id,
                )
            )
            continue
        aliases = tuple(
            (alias, tuple((names.get(ref, ref), fld) for ref, fld in mapping))
            for alias, mapping in corr.aliases
        )
        resolved.append(
            Correlation(
                meta=corr.meta,
                type=corr.type,
                rules=refs,
                group_by=corr.group_by,
                timespan_seconds=corr.timespan_seconds,
                condition=corr.condition,
                aliases=aliases,
                generate=corr.generate,
            )
        )
    result.correlations = resolved
    filtered = apply_filters([(r.meta, r.detection) for r in lowered], result.filters, names)
    stats.filters_applied = filtered.applied
    interner = Interner()
    for meta, detection in filtered.rules:
        detection = dedupe(simplify(detection), interner)
        routes = logsource_map.routes(meta.product, meta.category, meta.service, detection)
        # Route conditions come simplified from the map; renaming keeps a simplified tree simplified.
        routes = tuple(type(r)(dedupe(r.condition, interner), dedupe(r.detection, interner)) for r in routes)
        result.rules.append(CompiledRule(meta=meta, detection=detection, routes=routes))
    result.filters = [
        SigmaFilter(meta=f.meta, targets=f.targets, detection=dedupe(f.detection, interner))
        for f in result.filters
    ]
    stats.dedupe = interner.stats
    return result


def compile_documents(
    docs: Sequence[tuple[str, str]],
    pipelines: Sequence[Any] = (),
    logsource_map: LogsourceMap = NONE_MAP,
) -> CompileResult:
    """Compile (path, yaml_text) documents with pySigma ``pipelines`` and a logsource map."""
    return finalize((parse_document(path, text, pipelines) for path, text in docs), logsource_map)
