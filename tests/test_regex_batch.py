"""Regex leaves answered by one RE2 pass (sigma_arrow/engine/regex_batch.py) equal Python ``re``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from compiler import textform
from compiler.ir import Regex, walk
from sigma_arrow.engine.regex_batch import MIN_VALUES, re2_pattern, regex_hits
from sigma_arrow.loader import load_rules

#: Values where Python's and RE2's defaults differ: Unicode classes, the Turkish i, line ends.
TRICKY = [
    "",
    "plain ascii text",
    "tab\there",
    "vertical\x0btab",
    "file\x1cseparator",
    "nbsp\xa0space",
    "ideographic\u3000space",
    "em\u2003space",
    "line\nbreak",
    "ends with newline\n",
    "ünïcödé wörds",
    "İstanbul",
    "ıi Iİ",
    "digits ١٢٣ arabic",
    "C:\\Windows\\System32\\cmd.exe /c whoami",
    "powershell -enc SQBFAFgA",
    "a`b`c",
    "emoji 😀 text",
    "\x00nul",
]

PATTERNS = [
    ("\\s", ""),
    ("\\S+\\s\\S+", ""),
    ("\\w+", ""),
    ("^\\w+$", ""),
    ("\\d", ""),
    ("\\D\\d", ""),
    ("[^\\s]x", ""),
    ("istanbul", "i"),
    ("[i]", "i"),
    ("newline$", ""),
    ("newline$", "m"),
    ("^break", "m"),
    ("line.break", ""),
    ("line.break", "s"),
    ("(?i)CMD\\.EXE", ""),
    ("\\\\[a-zA-Z0-9]{1,32}\\.[a-zA-Z0-9]{1,6}", ""),
    ("\\w+`(?:\\w+|-|.)`[\\w+|\\s]", ""),
    ("ü|ö", "i"),
    ("\\x00", ""),
]


def _python(pattern: str, flags: str, values: list[str | None]) -> list[bool]:
    search = textform.python_regex(pattern, flags).search
    return [value is not None and search(value) is not None for value in values]


def _repeated(values: list[str | None]) -> list[str | None]:
    return (values * (MIN_VALUES // len(values) + 1))[: max(MIN_VALUES, len(values))]


@pytest.mark.parametrize(("pattern", "flags"), PATTERNS)
@pytest.mark.parametrize("large", [False, True])
def test_same_answers_as_python(pattern: str, flags: str, large: bool) -> None:
    values = _repeated([*TRICKY, None])
    array = pa.array(values, type=pa.large_string() if large else pa.string())
    hits = regex_hits(Regex("x", pattern, flags), array)
    assert hits is not None, "this pattern has an exact RE2 form"
    assert hits.tolist() == _python(pattern, flags, values)


@pytest.mark.parametrize(
    "pattern",
    ["(?=x)y", "(a)\\1", "\\bword\\b", "a$b", "(?a)\\w", "(unclosed"],
)
def test_patterns_without_an_exact_re2_form_stay_with_python(pattern: str) -> None:
    assert re2_pattern(pattern, "") is None
    assert regex_hits(Regex("x", pattern, ""), pa.array(_repeated(TRICKY))) is None


def test_few_values_stay_with_python() -> None:
    assert regex_hits(Regex("x", "a", ""), pa.array(["a"] * (MIN_VALUES - 1))) is None


def test_non_string_values_stay_with_python() -> None:
    assert regex_hits(Regex("x", "1", ""), pa.array(list(range(MIN_VALUES)))) is None


def _strings(value: object, out: set[str]) -> None:
    if isinstance(value, str):
        out.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


@pytest.mark.shared
def test_every_corpus_regex_on_real_values(sigma_rule_dirs: list[Path], regression_data: Path) -> None:
    """Every regex of the SigmaHQ corpus, on every string of the regression events: RE2 == Python."""
    texts: set[str] = set()
    decoder = json.JSONDecoder()
    for path in sorted(regression_data.rglob("*.json")):
        text, position = path.read_text(errors="replace"), 0
        while position < len(text):  # one or more (pretty-printed) documents per file
            if text[position].isspace():
                position += 1
                continue
            try:
                document, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                break
            _strings(document, texts)
    values: list[str | None] = sorted(texts)
    array = pa.array(values, type=pa.string())
    regexes = {
        node
        for rule in load_rules([str(d) for d in sigma_rule_dirs], logsource_map="windows")
        for route in rule.routes
        for node in walk(route.detection)
        if isinstance(node, Regex)
    }
    assert len(regexes) > 100 and len(values) > 1000
    answered = 0
    for node in sorted(regexes, key=lambda n: (n.pattern, n.flags)):
        hits = regex_hits(node, array)
        if hits is None:
            continue
        answered += 1
        assert hits.tolist() == _python(node.pattern, node.flags, values), (node.pattern, node.flags)
    assert answered > 0.8 * len(regexes)
