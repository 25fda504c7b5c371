"""Logsource maps: which events a rule's logsource selects, and how its fields are named there.

A map is data (YAML, parsed by the caller into a dict)::

    name: windows
    entries:
      - match: {product: windows, category: process_creation}   # every key must equal (case-insensitive);
        routes:                                                  # a list value means any of; null: absent
          - when: {Channel: [Microsoft-Windows-Sysmon/Operational, null], EventID: 1}
          - when: {Channel: [Security, null], EventID: 4688}
            rename: {Image: NewProcessName, ParentImage: ParentProcessName}
    default:
      routes:
        - when: {Channel: null}

``when`` is a Sigma detection (a map of ``field|modifiers: value(s)``, or a list of maps OR-ed) compiled
with normal Sigma value semantics: ``EventID: 1`` is a case-insensitive text-form equality (int and
string columns both match), ``null`` means missing/null, ``|exists`` etc. work. A missing or empty
``when`` is always true. ``rename`` maps rule field names to event field names on that route.
The entry with the most ``match`` keys wins (ties: the first in the file); rules no entry matches use
``default`` (if there is no default, such rules get no route and never match).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.errors import SigmaArrowError
from compiler.ir import Const, Node, rename_fields
from compiler.model import Route
from compiler.passes.simplify import simplify

LOGSOURCE_KEYS = ("product", "category", "service")


class LogsourceMapError(SigmaArrowError):
    """A logsource map is malformed."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route of a map entry: the event condition and the field renames."""

    condition: Node
    rename: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MapEntry:
    """A ``match`` (logsource attribute -> allowed values, ``None``: must be absent) and its routes."""

    match: tuple[tuple[str, tuple[str, ...] | None], ...]
    routes: tuple[RouteSpec, ...]

    def matches(self, logsource: Mapping[str, str | None]) -> bool:
        """Whether a rule's logsource satisfies every key of ``match``."""
        for key, allowed in self.match:
            value = logsource.get(key)
            if allowed is None:
                if value:
                    return False
            elif value is None or value.lower() not in allowed:
                return False
        return True


@dataclass(frozen=True, slots=True)
class LogsourceMap:
    """A compiled logsource map."""

    name: str
    entries: tuple[MapEntry, ...] = ()
    default: tuple[RouteSpec, ...] | None = None
    description: str = ""
    _cache: dict[tuple[str | None, ...], tuple[RouteSpec, ...] | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def route_specs(
        self, product: str | None, category: str | None, service: str | None
    ) -> tuple[RouteSpec, ...] | None:
        """Return the route specs for a logsource (``None``: nothing matched and there is no default)."""
        key = (product, category, service)
        if key in self._cache:
            return self._cache[key]
        logsource = {"product": product, "category": category, "service": service}
        best: MapEntry | None = None
        for entry in self.entries:
            if entry.matches(logsource) and (best is None or len(entry.match) > len(best.match)):
                best = entry
        specs = best.routes if best is not None else self.default
        self._cache[key] = specs
        return specs

    def routes(
        self, product: str | None, category: str | None, service: str | None, detection: Node
    ) -> tuple[Route, ...]:
        """Return the routes of a rule with this logsource and detection."""
        specs = self.route_specs(product, category, service)
        if specs is None:
            return ()
        return tuple(
            Route(spec.condition, rename_fields(detection, dict(spec.rename)) if spec.rename else detection)
            for spec in specs
        )


def compile_when(when: Any) -> Node:
    """Compile a ``when`` clause (a Sigma detection definition) to a simplified IR condition."""
    if when is None or when == {} or when == []:
        return Const(True)
    from sigma.rule import SigmaDetection

    from compiler.lower import lower_detection

    try:
        detection = SigmaDetection.from_definition(when)
    except Exception as exc:  # pySigma raises many types for bad definitions
        raise LogsourceMapError(f"bad 'when' clause {when!r}: {exc}") from exc
    return simplify(lower_detection(detection))


def _route_spec(raw: Any, where: str) -> RouteSpec:
    if not isinstance(raw, Mapping):
        raise LogsourceMapError(f"{where}: a route must be a map with 'when' and/or 'rename'")
    unknown = set(raw) - {"when", "rename"}
    if unknown:
        raise LogsourceMapError(f"{where}: unknown route keys {sorted(unknown)}")
    rename = raw.get("rename") or {}
    if not isinstance(rename, Mapping):
        raise LogsourceMapError(f"{where}: 'rename' must be a map RuleField: EventField")
    return RouteSpec(
        condition=compile_when(raw.get("when")),
        rename=tuple((str(k), str(v)) for k, v in rename.items()),
    )


def _routes(raw: Any, where: str) -> tuple[RouteSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise LogsourceMapError(f"{where}: 'routes' must be a non-empty list")
    return tuple(_route_spec(r, f"{where} route {i + 1}") for i, r in enumerate(raw))


def parse_logsource_map(data: Mapping[str, Any], name: str = "") -> LogsourceMap:
    """Build a LogsourceMap from an already parsed YAML document."""
    if not isinstance(data, Mapping):
        raise LogsourceMapError("a logsource map must be a YAML map with 'entries' and 'default'")
    unknown = set(data) - {"name", "description", "entries", "default"}
    if unknown:
        raise LogsourceMapError(f"unknown top-level keys {sorted(unknown)}")
    entries = []
    for i, raw in enumerate(data.get("entries") or []):
        where = f"entry {i + 1}"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("match"), Mapping):
            raise LogsourceMapError(f"{where}: needs a 'match' map")
        match: list[tuple[str, tuple[str, ...] | None]] = []
        for key, value in raw["match"].items():
            if key not in LOGSOURCE_KEYS:
                raise LogsourceMapError(f"{where}: match key {key!r} is not one of {LOGSOURCE_KEYS}")
            if value is None:
                match.append((key, None))
            else:
                values = value if isinstance(value, list) else [value]
                match.append((key, tuple(str(v).lower() for v in values)))
        entries.append(MapEntry(tuple(match), _routes(raw.get("routes"), where)))
    default = None
    if data.get("default") is not None:
        raw_default = data["default"]
        if not isinstance(raw_default, Mapping):
            raise LogsourceMapError("'default' must be a map with 'routes'")
        default = _routes(raw_default.get("routes"), "default")
    return LogsourceMap(
        name=str(data.get("name") or name),
        entries=tuple(entries),
        default=default,
        description=str(data.get("description") or ""),
    )


#: The map that gives every rule one always-true route.
NONE_MAP = LogsourceMap(name="none", default=(RouteSpec(Const(True)),))
