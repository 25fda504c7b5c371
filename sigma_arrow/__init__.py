"""sigma-arrow: Sigma detection rules over Arrow record batches, whole ruleset at once.

Public API (DESIGN.md §4)::

    import sigma_arrow as sa
    rules = sa.load_rules(["rules/"], pipelines=[], logsource_map="windows")
    engine = sa.Engine(rules)
    masks = engine.evaluate(batch)
    matches = engine.matches(batch)
    for m in sa.scan(["logs/"], rules): ...
    sa.register(ctx, rules)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from compiler.errors import InputError, RuleError, SigmaArrowError, UnsupportedError
from sigma_arrow.ruleset import RuleSet

if TYPE_CHECKING:
    from sigma_arrow.engine import Engine
    from sigma_arrow.loader import load_rules
    from sigma_arrow.scanning import scan
    from sigma_arrow.sql import register, to_sql

__version__ = "0.1.0"

# Heavy modules (engines, DataFusion) load on first use so that `sigma-arrow --help` stays instant.
_LAZY = {
    "Engine": "sigma_arrow.engine",
    "load_rules": "sigma_arrow.loader",
    "scan": "sigma_arrow.scanning",
    "register": "sigma_arrow.sql",
    "to_sql": "sigma_arrow.sql",
}

__all__ = [
    "Engine",
    "InputError",
    "RuleError",
    "RuleSet",
    "SigmaArrowError",
    "UnsupportedError",
    "load_rules",
    "register",
    "scan",
    "to_sql",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sigma_arrow' has no attribute {name!r}")
