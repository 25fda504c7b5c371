"""Pure helpers shared by the reference evaluator and every backend (stdlib only).

Everything here pins down one corner of the IR semantics (``compiler.ir``) precisely enough that a
vectorised backend can reproduce it:

* :func:`text_of` -- the *text form* of a value;
* :func:`fold` -- case folding (Python ``str.lower``);
* :func:`parse_glob` / :func:`glob_to_regex` / :func:`glob_to_like` -- Sigma wildcard patterns;
* :func:`portable_regex` -- a Python ``re`` pattern rewritten for Rust ``regex`` / RE2 so that it means
  the same thing there, or :class:`~compiler.errors.UnsupportedError` when it cannot (fail closed);
* :func:`in_network` / :func:`cidr_regex` -- CIDR membership (``ipaddress`` rules, as a regex);
* :func:`parse_number` / :data:`NUMBER_REGEX` -- the numeric grammar of ``Compare``;
* :func:`parse_timestamp` / :func:`timestamp_part` / :data:`TIMESTAMP_REGEX` -- ``TimestampPart``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import ipaddress
import math
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal

try:  # Python >= 3.11 moved the parser; 3.10 still has sre_parse
    sre_c: Any = importlib.import_module("re._constants")
    sre_parse: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - Python 3.10
    sre_c = importlib.import_module("sre_constants")
    sre_parse = importlib.import_module("sre_parse")

from compiler.errors import UnsupportedError

Dialect = Literal["rust", "re2"]

#: Columns every sigma-arrow reader adds (``sigma_arrow.schema``); not event fields, so keywords skip them.
RESERVED_COLUMNS = frozenset({"__source", "__event_index"})

# ---------------------------------------------------------------- text form


def text_of(value: object) -> str | None:
    """Return the IR text form of a value, or None when it has none (null, lists, dicts, bytes, dates...).

    Strings are themselves; ``bool`` is ``true``/``false``; ``int`` is its decimal digits; a ``float``
    that is integral (``4688.0``) is written as the integer (``4688``), any other float as ``repr``
    (``1.5``, ``nan``, ``inf``, ``1e-07``).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    return None


def fold(text: str, cased: bool) -> str:
    """Case folding of the IR: Python ``str.lower`` (full lowercasing, final sigma) unless ``cased``."""
    return text if cased else text.lower()


@lru_cache(maxsize=1)
def final_sigma_rewrite() -> tuple[str, str]:
    r"""Return an RE2 / Rust regex and replacement that turn each final capital sigma into ``ς``.

    For engines whose lowercasing is the simple mapping (Arrow ``utf8_lower`` gives ``σ`` for every
    ``Σ``): rewrite first, then lowercase, and the result is Python's ``str.lower``. Python's rule
    (CPython ``handle_capital_sigma``): ``Σ`` is final when, skipping case-ignorable characters, a
    cased character comes before it and none comes after it. The character classes are read off
    Python's own ``str.lower``, so they follow the running Python's Unicode database exactly.
    """
    cased_only: list[int] = []  # cased and not case-ignorable
    ignorable: list[int] = []
    for cp in range(0x110000):
        char = chr(cp)
        if unicodedata.category(char) in ("Cn", "Co", "Cs"):
            continue  # unassigned, private use, surrogates: neither cased nor case-ignorable
        if (char + "\u03a3").lower()[-1] == "\u03c2":
            cased_only.append(cp)
        elif ("\u0391" + char + "\u03a3").lower()[-1] == "\u03c2" and ("\u0391\u03a3" + char).lower()[
            1
        ] == "\u03c2":
            ignorable.append(cp)
    cased = _class_items(_ranges(cased_only))
    ignore = _class_items(_ranges(ignorable))
    pattern = f"([{cased}])([{ignore}]*)\u03a3([{ignore}]*)(\\z|[^{cased}{ignore}])"
    return pattern, "\\1\\2\u03c2\\3\\4"


def needs_sigma_rewrite(literal: str) -> bool:
    """Whether comparing with ``literal`` (already lowercased) can depend on σ versus ς."""
    return "\u03c3" in literal or "\u03c2" in literal


# ---------------------------------------------------------------- glob (Sigma wildcards)


class _Wild:
    """A wildcard token of a parsed glob."""

    __slots__ = ("symbol",)

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol

    def __repr__(self) -> str:
        return self.symbol


#: ``*``: any run of characters, including the empty one and newlines.
STAR = _Wild("*")
#: ``?``: exactly one character (a code point), newlines included.
QMARK = _Wild("?")
GlobToken = str | _Wild


def parse_glob(pattern: str) -> list[GlobToken]:
    r"""Split a Sigma wildcard pattern into tokens: literal runs (str), :data:`STAR` and :data:`QMARK`.

    A backslash escapes the next character whatever it is (``\\*``, ``\\?``, ``\\\\``, ``\\a`` -> ``a``);
    a lone trailing backslash is a literal backslash.
    """
    tokens: list[GlobToken] = []
    literal: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            literal.append(pattern[i + 1] if i + 1 < len(pattern) else "\\")
            i += 2
            continue
        if char in "*?":
            if literal:
                tokens.append("".join(literal))
                literal = []
            tokens.append(STAR if char == "*" else QMARK)
        else:
            literal.append(char)
        i += 1
    if literal:
        tokens.append("".join(literal))
    return tokens


def fold_glob(tokens: Iterable[GlobToken], cased: bool) -> list[GlobToken]:
    """Return the glob tokens with literal runs case-folded (wildcards kept)."""
    return [fold(t, cased) if isinstance(t, str) else t for t in tokens]


def glob_to_python_regex(tokens: Iterable[GlobToken]) -> str:
    """Build an anchored Python ``re`` pattern (use with ``re.DOTALL``) equivalent to the glob tokens."""
    body = "".join(re.escape(t) if isinstance(t, str) else (".*" if t is STAR else ".") for t in tokens)
    return rf"\A{body}\Z"


def glob_to_regex(tokens: Iterable[GlobToken]) -> str:
    """Build an anchored Rust-regex / RE2 pattern equivalent to the glob tokens."""
    tokens = list(tokens)
    start, end = 0, len(tokens)
    while start < end and tokens[start] is STAR:  # a leading/trailing star is just an unanchored end
        start += 1
    while end > start and tokens[end - 1] is STAR:
        end -= 1
    body = "".join(
        escape_literal(t) if isinstance(t, str) else (".*" if t is STAR else ".") for t in tokens[start:end]
    )
    head = "" if start > 0 else "\\A"
    tail = "" if end < len(tokens) else "\\z"
    return f"(?s:{head}{body}{tail})"


def glob_to_like(tokens: Iterable[GlobToken], escape: str = "\\") -> str:
    """Build a SQL LIKE pattern (with ``ESCAPE escape``) equivalent to the glob tokens."""
    out: list[str] = []
    for token in tokens:
        if token is STAR:
            out.append("%")
        elif token is QMARK:
            out.append("_")
        else:
            assert isinstance(token, str)
            out.append("".join(escape + c if c in ("%", "_", escape) else c for c in token))
    return "".join(out)


def glob_as_strmatch(tokens: list[GlobToken]) -> tuple[str, str] | None:
    """Return ``(kind, literal)`` when the glob is only a literal with optional leading/trailing stars."""
    start, end = 0, len(tokens)
    while start < end and tokens[start] is STAR:
        start += 1
    while end > start and tokens[end - 1] is STAR:
        end -= 1
    middle = tokens[start:end]
    if len(middle) > 1 or (middle and not isinstance(middle[0], str)):
        return None
    text = middle[0] if middle else ""
    assert isinstance(text, str)
    leading, trailing = start > 0, end < len(tokens)
    if not middle:
        return ("contains", "") if tokens else ("equals", "")
    kind = {(True, True): "contains", (True, False): "endswith", (False, True): "startswith"}.get(
        (leading, trailing), "equals"
    )
    return kind, text


# ---------------------------------------------------------------- regex portability


def escape_literal(text: str) -> str:
    r"""Escape ``text`` as a literal in Rust regex and RE2 (ASCII non-alphanumerics as ``\\x{..}``)."""
    out = []
    for char in text:
        if char.isascii() and not char.isalnum():
            out.append(f"\\x{{{ord(char):X}}}")
        else:
            out.append(char)
    return "".join(out)


def _ranges(codepoints: Iterable[int]) -> list[tuple[int, int]]:
    result: list[tuple[int, int]] = []
    for cp in sorted(codepoints):
        if result and result[-1][1] == cp - 1:
            result[-1] = (result[-1][0], cp)
        else:
            result.append((cp, cp))
    return result


def _class_items(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges)


#: Python ``\s`` on str is ``str.isspace`` (it includes \x1c-\x1f, unlike Rust/RE2 ``\s``).
_SPACE_ITEMS = _class_items(_ranges(cp for cp in range(0x3100) if chr(cp).isspace()))
#: Python ``\d`` is Unicode decimal digits (``Nd``); RE2's ``\d`` is ASCII only, so name the category.
_DIGIT_ITEMS = r"\p{Nd}"
#: Python ``\w`` is ``str.isalnum() or "_"``: letters and numbers (L*, N*), and the underscore.
_WORD_ITEMS = r"\p{L}\p{N}_"

_CATEGORY_ITEMS: dict[object, tuple[str, bool]] = {
    sre_c.CATEGORY_DIGIT: (_DIGIT_ITEMS, False),
    sre_c.CATEGORY_NOT_DIGIT: (_DIGIT_ITEMS, True),
    sre_c.CATEGORY_SPACE: (_SPACE_ITEMS, False),
    sre_c.CATEGORY_NOT_SPACE: (_SPACE_ITEMS, True),
    sre_c.CATEGORY_WORD: (_WORD_ITEMS, False),
    sre_c.CATEGORY_NOT_WORD: (_WORD_ITEMS, True),
}

#: Python's ``re`` treats i, I, İ (U+0130) and ı (U+0131) as one class under IGNORECASE.
_TURKISH_I = (0x49, 0x69, 0x130, 0x131)
_TURKISH_I_ITEMS = "iI\\x{130}\\x{131}"

_PY_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


def python_regex(pattern: str, flags: str) -> re.Pattern[str]:
    """Compile the oracle's pattern: Python ``re`` with the IR flags (a subset of "ims")."""
    value = 0
    for flag in flags:
        value |= _PY_FLAGS[flag]
    return re.compile(pattern, value)


class _Emitter:
    """Re-emits a parsed Python pattern for Rust regex / RE2, keeping Python's meaning."""

    def __init__(self, pattern: str, dialect: Dialect) -> None:
        self.pattern = pattern
        self.dialect = dialect

    def fail(self, what: str) -> UnsupportedError:
        return UnsupportedError(
            f"regex {self.pattern!r}: {what} is not supported by the {self.dialect} backend"
        )

    def seq(self, items: Any, flags: int, tail: bool) -> str:
        items = list(items)
        return "".join(
            self.item(op, av, flags, tail and i == len(items) - 1) for i, (op, av) in enumerate(items)
        )

    def char(self, cp: int) -> str:
        return escape_literal(chr(cp))

    @staticmethod
    def turkish_i(flags: int, codepoints: Iterable[tuple[int, int]]) -> bool:
        """Whether Python's IGNORECASE i/I/İ/ı equivalence (unknown to Rust and RE2) applies."""
        return bool(flags & re.IGNORECASE) and any(
            lo <= cp <= hi for lo, hi in codepoints for cp in _TURKISH_I
        )

    def klass(self, items: list[tuple[Any, Any]], flags: int) -> str:
        negate = False
        parts: list[str] = []
        negated_categories: list[str] = []
        for op, av in items:
            if op is sre_c.NEGATE:
                negate = True
            elif op is sre_c.LITERAL:
                assert isinstance(av, int)
                parts.append(self.char(av))
            elif op is sre_c.RANGE:
                lo, hi = av
                parts.append(f"{self.char(lo)}-{self.char(hi)}")
            elif op is sre_c.CATEGORY:
                text, negated = _CATEGORY_ITEMS[av]
                if negated:
                    negated_categories.append(text)
                else:
                    parts.append(text)
            else:
                raise self.fail(f"class item {op}")
        covered = [
            (av, av) if op is sre_c.LITERAL else av for op, av in items if op in (sre_c.LITERAL, sre_c.RANGE)
        ]
        if self.turkish_i(flags, covered):
            parts.append(_TURKISH_I_ITEMS)
        body = "".join(parts)
        if negated_categories and not negate:
            # a union: one alternative per negated category, plus the positive items
            options = [f"[^{text}]" for text in negated_categories] + ([f"[{body}]"] if body else [])
            return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"
        if negated_categories:
            if self.dialect == "re2":  # RE2 has no nested classes: not(x or not y) is not expressible
                raise self.fail("a negated category (\\D \\S \\W) inside a negated class")
            body += "".join(f"[^{text}]" for text in negated_categories)
        if not body:
            return "(?s:.)" if negate else "[^\\x{0}-\\x{10FFFF}]"
        return f"[^{body}]" if negate else f"[{body}]"

    def item(self, op: object, av: Any, flags: int, tail: bool) -> str:
        c = sre_c
        if op is c.LITERAL:
            assert isinstance(av, int)
            return f"[{_TURKISH_I_ITEMS}]" if self.turkish_i(flags, [(av, av)]) else self.char(av)
        if op is c.NOT_LITERAL:
            assert isinstance(av, int)
            if self.turkish_i(flags, [(av, av)]):
                return f"[^{_TURKISH_I_ITEMS}]"
            return f"[^{self.char(av)}]"
        if op is c.ANY:
            return "(?s:.)" if flags & re.DOTALL else "[^\\n]"
        if op is c.IN:
            assert isinstance(av, list)
            return self.klass(av, flags)
        if op is c.BRANCH:
            _, alternatives = av
            return "(?:" + "|".join(self.seq(alt, flags, tail) for alt in alternatives) + ")"
        if op is c.SUBPATTERN:
            _group, add, remove, sub = av
            if add & (re.ASCII | re.LOCALE):
                raise self.fail("the inline a/L flag")
            inner = (flags | add) & ~remove
            body = self.seq(sub, inner, tail)
            return self.case_group(body, inner) if (inner ^ flags) & re.IGNORECASE else f"(?:{body})"
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            lo, hi, sub = av
            body = self.seq(sub, flags, False)
            if hi is c.MAXREPEAT:
                quant = "*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}"
            elif lo == 0 and hi == 1:
                quant = "?"
            else:
                quant = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
            if lo > 1000 or (hi is not c.MAXREPEAT and hi > 1000):
                raise self.fail("a repetition count above 1000")
            return f"(?:{body}){quant}" + ("?" if op is c.MIN_REPEAT else "")
        if op is c.AT:
            return self.at(av, flags, tail)
        if op is c.CATEGORY:
            text, negated = _CATEGORY_ITEMS[av]
            return f"[^{text}]" if negated else f"[{text}]"
        names = {
            c.ASSERT: "lookahead/lookbehind",
            c.ASSERT_NOT: "negative lookahead/lookbehind",
            c.GROUPREF: "a backreference",
            c.GROUPREF_EXISTS: "a conditional group",
        }
        raise self.fail(names.get(op, f"the construct {op}"))

    def at(self, av: Any, flags: int, tail: bool) -> str:
        c = sre_c
        multiline = bool(flags & re.MULTILINE)
        if av is c.AT_BEGINNING:
            return "(?m:^)" if multiline else "\\A"
        if av is c.AT_BEGINNING_STRING:
            return "\\A"
        if av is c.AT_END_STRING:
            return "\\z"
        if av is c.AT_END:
            if multiline:
                return "(?m:$)"
            if not tail:
                # Python's "$" also matches before a final newline; without lookahead we can only
                # express that by consuming the newline, which is exact only at the pattern's end.
                raise self.fail("'$' (without the m flag) before the end of the pattern")
            return "(?:\\n?\\z)"
        if av in (c.AT_BOUNDARY, c.AT_NON_BOUNDARY):
            if self.dialect == "re2":
                raise self.fail("\\b / \\B (RE2 word boundaries are ASCII-only)")
            return "\\b" if av is c.AT_BOUNDARY else "\\B"
        raise self.fail(f"the anchor {av}")

    @staticmethod
    def case_group(body: str, flags: int) -> str:
        return f"(?i:{body})" if flags & re.IGNORECASE else f"(?-i:{body})"


def portable_regex(pattern: str, flags: str, dialect: Dialect) -> str:
    r"""Rewrite ``pattern`` (Python ``re``, IR ``flags``) for ``dialect`` with the same meaning.

    Anchors, ``.``, ``\\d``/``\\w``/``\\s`` and flags are made explicit so that no engine default
    matters. Raises :class:`UnsupportedError` for constructs the target cannot express exactly:
    lookarounds, backreferences, conditionals, possessive/atomic groups, ``$`` (non-multiline) before
    the end of the pattern, and (RE2) word boundaries.
    """
    try:
        compiled = python_regex(pattern, flags)
        parsed = sre_parse.parse(pattern, compiled.flags)
    except (re.error, KeyError) as exc:
        raise UnsupportedError(f"invalid regex {pattern!r}: {exc}") from exc
    emitter = _Emitter(pattern, dialect)
    if parsed.state.flags & (re.ASCII | re.LOCALE):
        raise emitter.fail("the inline a/L flag")
    body = emitter.seq(parsed, parsed.state.flags, True)
    return emitter.case_group(body, parsed.state.flags) if parsed.state.flags & re.IGNORECASE else body


# ---------------------------------------------------------------- cidr


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(network: str) -> IPNetwork:
    """Parse the network of a ``Cidr`` node (host bits set are allowed and cleared)."""
    try:
        return ipaddress.ip_network(network, strict=False)
    except ValueError as exc:
        raise UnsupportedError(f"invalid cidr network {network!r}: {exc}") from exc


def in_network(text: str, network: IPNetwork) -> bool:
    """Whether ``text`` is an address (``ipaddress.ip_address`` syntax) of the same version in ``network``."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == network.version and address in network


def _alternation(options: list[str]) -> str:
    return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"


_ANY_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"


def _octet(lo: int, hi: int) -> str:
    if (lo, hi) == (0, 255):
        return _ANY_OCTET
    return _alternation([str(v) for v in range(hi, lo - 1, -1)])


def _v4_regex(network: int, prefix: int) -> str:
    octets = []
    for index in range(4):
        bits = max(0, min(8, prefix - 8 * index))
        value = (network >> (24 - 8 * index)) & 0xFF
        size = 1 << (8 - bits)
        octets.append(_octet(value, value + size - 1))
    return "\\x{2E}".join(octets)


_HEX = "[0-9A-Fa-f]"


def _hextet(lo: int, hi: int) -> str:
    """Regex for a 1-4 hex digit group (leading zeros optional) whose value is in an aligned block."""
    if (lo, hi) == (0, 0xFFFF):
        return f"{_HEX}{{1,4}}"
    digits = []
    for shift in (12, 8, 4, 0):
        dlo, dhi = (lo >> shift) & 0xF, (hi >> shift) & 0xF
        chars = {f"{d:x}" for d in range(dlo, dhi + 1)} | {f"{d:X}" for d in range(dlo, dhi + 1)}
        digits.append((chars, "".join(sorted(chars))))
    options = []
    for skip in range(4):  # drop `skip` leading digits, which must then be zero
        if any("0" not in digits[k][0] for k in range(skip)):
            break
        options.append("".join(f"[{d[1]}]" if len(d[0]) > 1 else d[1] for d in digits[skip:]))
    return _alternation(options) if options else "[^\\x{0}-\\x{10FFFF}]"


def _v6_regex(network: int, prefix: int) -> str:
    def group_range(index: int) -> tuple[int, int]:
        bits = max(0, min(16, prefix - 16 * index))
        value = (network >> (112 - 16 * index)) & 0xFFFF
        return value, value + (1 << (16 - bits)) - 1

    def group(index: int) -> str:
        return _hextet(*group_range(index))

    def zero_ok(index: int) -> bool:
        return group_range(index)[0] == 0

    v4_network = network & 0xFFFFFFFF
    v4_prefix = max(0, prefix - 96)
    v4_tail = _v4_regex(v4_network, v4_prefix)
    colon = "\\x{3A}"
    options = []
    for tail_groups, tail_v4 in ((8, False), (6, True)):
        # no "::": all groups written out
        parts = [group(i) for i in range(tail_groups)]
        options.append(colon.join(parts + ([v4_tail] if tail_v4 else [])))
        # "::" standing for `gap` >= 1 zero groups between `left` and `right` explicit groups
        for left in range(tail_groups):
            for right in range(tail_groups - left):
                gap = tail_groups - left - right
                if gap < 1 or not all(zero_ok(i) for i in range(left, left + gap)):
                    continue
                lefts = [group(i) for i in range(left)]
                rights = [group(i) for i in range(left + gap, tail_groups)]
                if tail_v4:
                    rights.append(v4_tail)
                options.append(colon.join(lefts) + colon + colon + colon.join(rights))
    return _alternation(options) + "(?:%[^%]+)?"


def cidr_regex(network: str) -> str:
    """Build an anchored regex (Rust regex, RE2; ASCII classes) true exactly for :func:`in_network`."""
    net = parse_network(network)
    base = int(net.network_address)
    body = _v4_regex(base, net.prefixlen) if net.version == 4 else _v6_regex(base, net.prefixlen)
    return f"\\A{body}\\z"


# ---------------------------------------------------------------- numbers


#: The text ``Compare`` accepts as a number: optional sign, ASCII digits, optional fraction.
NUMBER_REGEX = r"\A[-+]?[0-9]+(?:\x{2E}[0-9]+)?\z"
_NUMBER_PY = re.compile(r"\A[-+]?[0-9]+(?:\.[0-9]+)?\Z")


def parse_number(value: object) -> float | None:
    """Return the float64 value ``Compare`` uses: ints/floats as float64, strings per :data:`NUMBER_REGEX`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, str) and _NUMBER_PY.match(value):
        return float(value)
    return None


def compare(number: float, op: str, value: float) -> bool:
    """Evaluate ``number <op> value`` for a Compare op name."""
    if op == "lt":
        return number < value
    if op == "lte":
        return number <= value
    if op == "gt":
        return number > value
    return number >= value


# ---------------------------------------------------------------- timestamps


#: Timestamp text ``TimestampPart`` reads (ISO 8601 / "YYYY-MM-DD HH:MM:SS.fff" / EVTX SystemTime).
#: Groups: year, month, day, hour, minute, second (absent time parts read as 0); the fraction and the
#: offset are checked for shape only.
TIMESTAMP_REGEX = (
    r"\A([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\x{2E}[0-9]+)?)?(?:Z|[-+][0-9]{2}:?[0-9]{2})?)?\z"
)
_TIMESTAMP_PY = re.compile(
    r"\A([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?(?:Z|[-+][0-9]{2}:?[0-9]{2})?)?\Z"
)


def parse_timestamp(value: object) -> dt.datetime | None:
    """Parse the wall-clock fields of a timestamp value (``datetime``, ``date`` or text per TIMESTAMP_REGEX).

    Fields are taken as written: an offset is validated but not applied. Invalid dates or times
    (February 30th, hour 24, second 60) give None.
    """
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, str):
        return None
    found = _TIMESTAMP_PY.match(value)
    if not found:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in found.groups())
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def timestamp_part(stamp: dt.datetime, part: str) -> int:
    """Return a part of a timestamp: minute, hour, day (of month), week (ISO week number), month, year."""
    if part == "week":
        return stamp.isocalendar()[1]
    return int(getattr(stamp, part))
