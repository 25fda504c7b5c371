"""Intern identical nodes across a ruleset so equal subtrees are one shared object."""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.ir import And, Keyword, Node, Not, Or


@dataclass(slots=True)
class DedupeStats:
    """How much sharing interning found."""

    nodes: int = 0
    unique: int = 0
    leaves: int = 0
    unique_leaves: int = 0

    @property
    def shared(self) -> int:
        """Nodes that were replaced by an already interned equal node."""
        return self.nodes - self.unique


@dataclass(slots=True)
class Interner:
    """A table of canonical nodes; ``intern`` returns the shared instance of a tree."""

    table: dict[Node, Node] = field(default_factory=dict)
    stats: DedupeStats = field(default_factory=DedupeStats)
    #: id(input node) -> (input node, canonical node): shared input subtrees are visited once.
    seen: dict[int, tuple[Node, Node]] = field(default_factory=dict)

    def intern(self, node: Node) -> Node:
        """Return the canonical instance of ``node`` (children interned first)."""
        hit = self.seen.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        canonical = self._intern(node)
        self.seen[id(node)] = (node, canonical)
        return canonical

    def _intern(self, node: Node) -> Node:
        if isinstance(node, And | Or):
            kids = tuple(self.intern(c) for c in node.children)
            candidate: Node = type(node)(kids)
        elif isinstance(node, Not):
            candidate = Not(self.intern(node.child))
        elif isinstance(node, Keyword):
            candidate = Keyword(self.intern(node.match))
        else:
            candidate = node
            self.stats.leaves += 1
        self.stats.nodes += 1
        existing = self.table.get(candidate)
        if existing is not None:
            return existing
        self.table[candidate] = candidate
        self.stats.unique += 1
        if not isinstance(candidate, And | Or | Not | Keyword):
            self.stats.unique_leaves += 1
        return candidate


def dedupe(node: Node, interner: Interner) -> Node:
    """Return ``node`` with every subtree replaced by the interner's shared equal instance."""
    return interner.intern(node)
