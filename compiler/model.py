"""Compiled rules: what the compiler hands to the runtime (all frozen, picklable, hashable)."""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.errors import RuleError
from compiler.ir import And, Const, Node, Or


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """A rule's metadata, as it goes into match records and the ``sigma_rules`` table."""

    id: str
    title: str
    level: str = "informational"
    status: str = ""
    tags: tuple[str, ...] = ()
    product: str | None = None
    category: str | None = None
    service: str | None = None
    path: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """One kind of event a rule's logsource covers, with the detection as it reads on those events.

    For example windows/process_creation has two routes: Sysmon EventID 1 (fields as in the rule) and
    Security 4688 (``Image`` renamed to ``NewProcessName`` and so on inside ``detection``).
    """

    condition: Node
    detection: Node


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A detection rule ready to evaluate: metadata, the rule's own condition, and its routes."""

    meta: RuleMeta
    detection: Node
    routes: tuple[Route, ...]

    @property
    def id(self) -> str:
        """The rule id."""
        return self.meta.id

    @property
    def predicate(self) -> Node:
        """The whole per-event predicate: any route whose condition and detection both hold."""
        branches: list[Node] = []
        for route in self.routes:
            if route.condition == Const(True):
                branches.append(route.detection)
            else:
                branches.append(And((route.condition, route.detection)))
        if not branches:
            return Const(False)
        return branches[0] if len(branches) == 1 else Or(tuple(branches))


@dataclass(frozen=True, slots=True)
class Correlation:
    """A Sigma correlation rule (parsed; evaluation is a later issue)."""

    meta: RuleMeta
    type: str
    rules: tuple[str, ...]
    group_by: tuple[str, ...] = ()
    timespan_seconds: float | None = None
    condition: tuple[tuple[str, object], ...] = ()
    aliases: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    generate: bool = False


@dataclass(frozen=True, slots=True)
class SigmaFilter:
    """A Sigma filter (meta rule) and the rule ids it applies to."""

    meta: RuleMeta
    targets: tuple[str, ...]
    detection: Node


@dataclass(slots=True)
class CompileResult:
    """Everything compiled from a set of rule documents, plus what failed and why."""

    rules: list[CompiledRule] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    filters: list[SigmaFilter] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
