"""Tables for the pure helpers that pin the IR semantics down (compiler/textform.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from compiler import textform
from compiler.errors import UnsupportedError
from compiler.textform import QMARK, STAR


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Abc", "Abc"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (4688, "4688"),
        (-3, "-3"),
        (4688.0, "4688"),
        (-0.0, "0"),
        (1.5, "1.5"),
        (1e-7, "1e-07"),
        (float("nan"), "nan"),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
        (b"x", None),
        (dt.datetime(2025, 1, 1), None),
    ],
)
def test_text_of(value: object, text: str | None) -> None:
    assert textform.text_of(value) == text


@pytest.mark.parametrize(
    ("pattern", "tokens"),
    [
        ("abc", ["abc"]),
        ("*a?b*", [STAR, "a", QMARK, "b", STAR]),
        ("a\\*b", ["a*b"]),
        ("a\\?", ["a?"]),
        ("a\\\\b", ["a\\b"]),
        ("\\a", ["a"]),
        ("abc\\", ["abc\\"]),
        ("", []),
        ("**", [STAR, STAR]),
    ],
)
def test_parse_glob(pattern: str, tokens: list[object]) -> None:
    assert textform.parse_glob(pattern) == tokens


@pytest.mark.parametrize(
    ("pattern", "like"),
    [("*a?b*", "%a_b%"), ("100%\\*", "100\\%*"), ("a_b", "a\\_b"), ("x\\\\y", "x\\\\y")],
)
def test_glob_to_like(pattern: str, like: str) -> None:
    assert textform.glob_to_like(textform.parse_glob(pattern)) == like


@pytest.mark.parametrize(
    ("pattern", "simple"),
    [
        ("*abc*", ("contains", "abc")),
        ("abc*", ("startswith", "abc")),
        ("*abc", ("endswith", "abc")),
        ("abc", ("equals", "abc")),
        ("*", ("contains", "")),
        ("", ("equals", "")),
        ("a*b", None),
        ("a?", None),
    ],
)
def test_glob_as_strmatch(pattern: str, simple: tuple[str, str] | None) -> None:
    assert textform.glob_as_strmatch(textform.parse_glob(pattern)) == simple


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("5", 5.0),
        ("-3.5", -3.5),
        ("+7", 7.0),
        ("007", 7.0),
        (" 5", None),
        ("1e3", None),
        ("4.", None),
        (".5", None),
        ("nan", None),
        ("", None),
        ("٣", None),
        (True, None),
        (12, 12.0),
        (1.5, 1.5),
        (float("nan"), None),
        (None, None),
    ],
)
def test_parse_number(value: object, number: float | None) -> None:
    assert textform.parse_number(value) == number


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("2025-11-27T07:40:10.165324Z", (2025, 11, 27, 7, 40, 48)),
        ("2025-11-27 07:40:10.165", (2025, 11, 27, 7, 40, 48)),
        ("2025-11-27", (2025, 11, 27, 0, 0, 48)),
        ("2021-01-03T23:59+05:30", (2021, 1, 3, 23, 59, 53)),
        ("2024-12-30T00:00:00-0100", (2024, 12, 30, 0, 0, 1)),
        (dt.date(2020, 2, 29), (2020, 2, 29, 0, 0, 9)),
        ("2025-02-29", None),
        ("2025-11-27T24:00", None),
        ("2025-11-27T10:00:60", None),
        ("0000-01-01", None),
        ("2025-11-27T07", None),
        ("2025/11/27", None),
        ("27.11.2025", None),
        (20251127, None),
    ],
)
def test_timestamp_parts(value: object, parts: tuple[int, ...] | None) -> None:
    stamp = textform.parse_timestamp(value)
    if parts is None:
        assert stamp is None
        return
    assert stamp is not None
    names = ("year", "month", "day", "hour", "minute", "week")
    assert tuple(textform.timestamp_part(stamp, n) for n in names) == parts


@pytest.mark.parametrize(
    ("pattern", "flags", "rust"),
    [
        ("abc", "", "abc"),
        ("a.c", "", "a[^\\n]c"),
        ("a.c", "s", "a(?s:.)c"),
        ("^ab$", "", "\\Aab(?:\\n?\\z)"),
        ("^ab$", "m", "(?m:^)ab(?m:$)"),
        ("\\d+", "", "(?:[\\p{Nd}])+"),
        ("x", "i", "(?i:x)"),
        ("a(?i:b)c", "", "a(?i:b)c"),
    ],
)
def test_portable_regex(pattern: str, flags: str, rust: str) -> None:
    assert textform.portable_regex(pattern, flags, "rust") == rust


@pytest.mark.parametrize(
    ("pattern", "dialect"),
    [
        ("a(?=b)", "rust"),
        ("a(?!b)", "re2"),
        ("(?<=a)b", "rust"),
        ("(a)\\1", "rust"),
        ("(a)?(?(1)b|c)", "rust"),
        ("a*+", "rust"),
        ("(?>a)", "re2"),
        ("a$b", "rust"),
        ("\\bword", "re2"),
        ("(?a)\\w", "rust"),
        ("a{2000}", "rust"),
        ("[^a\\W]", "re2"),
        ("(", "rust"),
    ],
)
def test_portable_regex_refuses(pattern: str, dialect: textform.Dialect) -> None:
    with pytest.raises(UnsupportedError):
        textform.portable_regex(pattern, "", dialect)


def test_final_sigma_rewrite_is_what_python_does() -> None:
    import re

    pattern, replacement = textform.final_sigma_rewrite()
    # the pattern uses \x{..} and \z (Rust/RE2 syntax); translate the two for Python's re to check it
    python = re.sub(r"\\x\{([0-9A-F]+)\}", lambda m: f"\\U{int(m.group(1), 16):08x}", pattern).replace(
        "\\z", "\\Z"
    )
    rewritten = re.compile(python)
    for text in ["ΑΣ", "Σ", "ΑΣΣ", "ΑΣ'Σ", "ΑΣ.", "ΑΣ̀b", "1Σ", "ΑΣ Β", "İΣ", "ΣΑ", "ΑΣ̀"]:
        lowered = rewritten.sub(replacement.replace("\\", "\\"), text).lower()
        assert lowered == text.lower(), text
