"""RuleSet: the loaded, compiled rules the engine, SQL and Kafka job run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from compiler.errors import RuleError
from compiler.model import CompiledRule, Correlation, SigmaFilter


@dataclass(slots=True)
class RuleSet:
    """Compiled detection rules; ``errors`` lists every rule that could not be used, and why."""

    rules: list[CompiledRule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    filters: list[SigmaFilter] = field(default_factory=list)
    #: Name (or path) of the logsource map the routes came from.
    logsource_map: str = "windows"
    pipelines: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[CompiledRule]:
        return iter(self.rules)

    def by_id(self) -> dict[str, CompiledRule]:
        """Rules keyed by id."""
        return {rule.id: rule for rule in self.rules}
