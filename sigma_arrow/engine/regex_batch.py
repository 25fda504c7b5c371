r"""Regex leaves over many values at once: one RE2 pass in Arrow instead of a Python ``re`` call each.

The engine answers a regex leaf per distinct value. With thousands of them (long command lines that
rarely repeat, as on the realistic lane) a Python ``search`` per value costs ~0.3-3 µs; Arrow's
``match_substring_regex`` runs RE2 over the whole array in C++ (2-15x less CPU measured on the
realistic lane's CommandLine values). The pattern is first rewritten by
``compiler.textform.portable_regex`` so RE2 gives Python's answers (``\s``, ``\w``, ``\d``
classes, IGNORECASE's Turkish i, ``$``, flags); a pattern it cannot rewrite exactly, or that RE2
will not compile, stays with Python ``re``.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from compiler import textform
from compiler.errors import UnsupportedError
from compiler.ir import Regex

#: Fewer values than this are searched in Python (RE2 compiles the pattern on every call).
MIN_VALUES = 256


@functools.lru_cache(maxsize=4096)
def re2_pattern(pattern: str, flags: str) -> str | None:
    """Return the RE2 form of a Python pattern with the same meaning (None when there is none)."""
    try:
        return textform.portable_regex(pattern, flags, "re2")
    except (UnsupportedError, ValueError, KeyError):  # not expressible, or not a valid pattern
        return None


#: Patterns Arrow refused to compile (e.g. past RE2's memory budget): Python ``re`` answers them.
_REFUSED: set[str] = set()


def regex_hits(node: Regex, values: pa.Array) -> npt.NDArray[np.bool_] | None:
    """Whether each (non-null) string value contains a match of ``node``; None: ask Python ``re``.

    Null values answer False, as a leaf on a missing value does.
    """
    if len(values) < MIN_VALUES:
        return None
    pattern = re2_pattern(node.pattern, node.flags)
    if pattern is None or pattern in _REFUSED:
        return None
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    try:
        found = pc.match_substring_regex(values, pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        _REFUSED.add(pattern)
        return None
    hits: npt.NDArray[np.bool_] = pc.fill_null(found, False).to_numpy(zero_copy_only=False)
    return hits
