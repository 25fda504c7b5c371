"""Simplify a tree: flatten nested and/or, fold constants, drop duplicate children, not(not x) -> x."""

from __future__ import annotations

from compiler.ir import And, Const, Keyword, Node, Not, Or

TRUE = Const(True)
FALSE = Const(False)


def simplify(node: Node) -> Node:
    """Return an equivalent, flatter tree (children order is kept; the first duplicate wins)."""
    if isinstance(node, Not):
        child = simplify(node.child)
        if isinstance(child, Not):
            return child.child
        if isinstance(child, Const):
            return Const(not child.value)
        return Not(child)
    if isinstance(node, Keyword):
        match = simplify(node.match)
        return node if match == node.match else Keyword(match)
    if isinstance(node, And | Or):
        is_and = isinstance(node, And)
        absorbing, neutral = (FALSE, TRUE) if is_and else (TRUE, FALSE)
        kind = type(node)
        flat: list[Node] = []
        seen: set[Node] = set()
        stack = [simplify(c) for c in node.children]
        for child in stack:
            parts = child.children if isinstance(child, kind) else (child,)
            for part in parts:
                if part == absorbing:
                    return absorbing
                if part == neutral or part in seen:
                    continue
                seen.add(part)
                flat.append(part)
        if not flat:
            return neutral
        if len(flat) == 1:
            return flat[0]
        return kind(tuple(flat))
    return node
