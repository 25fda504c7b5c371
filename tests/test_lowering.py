"""Rule YAML -> expected IR text (compiler.ir.to_text): cases per modifier, value expansion and condition."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.compile import compile_documents
from compiler.errors import RuleError
from compiler.ir import to_text
from compiler.logsource import NONE_MAP
from compiler.model import CompileResult

RULE_ID = "11111111-2222-3333-4444-555555555555"


def rule_yaml(detection: str, condition: str = "sel", logsource: str = "{product: windows}") -> str:
    """A rule whose detection (given unindented) starts on line 7 and whose condition is the last line."""
    body = "\n".join("  " + line for line in detection.strip("\n").splitlines())
    return (
        f"title: Fixture\nid: {RULE_ID}\nstatus: test\nlevel: high\nlogsource: {logsource}\n"
        f"detection:\n{body}\n  condition: {condition}\n"
    )


def compile_one(detection: str, condition: str = "sel") -> CompileResult:
    return compile_documents([("fixture.yml", rule_yaml(detection, condition))], logsource_map=NONE_MAP)


def lowered(detection: str, condition: str = "sel") -> str:
    result = compile_one(detection, condition)
    assert not result.errors, [str(e) for e in result.errors]
    assert len(result.rules) == 1
    return to_text(result.rules[0].detection)


# (case id, detection YAML (indented under "detection:"), condition, expected IR text)
CASES = [
    # ---- plain values, wildcards, escapes
    ("equals", "sel:\n  Image: 'C:\\Windows\\x.exe'", "sel", r'(eq Image "C:\\Windows\\x.exe")'),
    ("contains", "sel:\n  CommandLine|contains: mimikatz", "sel", '(contains CommandLine "mimikatz")'),
    ("startswith", "sel:\n  Image|startswith: 'C:\\Temp'", "sel", r'(startswith Image "C:\\Temp")'),
    ("endswith", "sel:\n  Image|endswith: '\\cmd.exe'", "sel", r'(endswith Image "\\cmd.exe")'),
    ("leading star", "sel:\n  Image: '*\\cmd.exe'", "sel", r'(endswith Image "\\cmd.exe")'),
    ("trailing star", "sel:\n  Image: 'C:\\Temp*'", "sel", r'(startswith Image "C:\\Temp")'),
    ("both stars", "sel:\n  Image: '*temp*'", "sel", '(contains Image "temp")'),
    ("inner star", "sel:\n  Image: 'foo*bar'", "sel", '(glob Image "foo*bar")'),
    ("question mark", "sel:\n  Image: 'a?c'", "sel", '(glob Image "a?c")'),
    ("bare star", "sel:\n  Image: '*'", "sel", '(contains Image "")'),
    ("escaped star", "sel:\n  CommandLine: 'a\\*b'", "sel", '(eq CommandLine "a*b")'),
    ("escaped star + leading", "sel:\n  CommandLine: '*a\\*b'", "sel", '(endswith CommandLine "a*b")'),
    ("escaped star + inner", "sel:\n  CommandLine: 'a\\*b*c'", "sel", r'(glob CommandLine "a\\*b*c")'),
    ("escaped question", "sel:\n  CommandLine: 'why\\?'", "sel", '(eq CommandLine "why?")'),
    ("escaped backslash", "sel:\n  CommandLine: 'a\\\\*'", "sel", r'(startswith CommandLine "a\\")'),
    ("backslash-star is a literal star", "sel:\n  Image: 'C:\\dir\\*'", "sel", r'(eq Image "C:\\dir*")'),
    ("trailing backslash", "sel:\n  Image|endswith: 'dir\\'", "sel", r'(endswith Image "dir\\")'),
    (
        "glob keeps backslash escaped",
        "sel:\n  Image: '*\\\\x\\\\*\\\\y.exe'",
        "sel",
        r'(glob Image "*\\\\x\\\\*\\\\y.exe")',
    ),
    ("empty string", "sel:\n  Field: ''", "sel", '(eq Field "")'),
    ("null", "sel:\n  Field: null", "sel", "(null Field)"),
    ("empty list is null", "sel:\n  Field: []", "sel", "(null Field)"),
    ("unicode", "sel:\n  Title|contains: 'Ünïcödé ☃'", "sel", '(contains Title "Ünïcödé ☃")'),
    ("number", "sel:\n  EventID: 4688", "sel", '(eq EventID "4688")'),
    ("number as string", "sel:\n  EventID: '4688'", "sel", '(eq EventID "4688")'),
    ("float", "sel:\n  Version: 1.5", "sel", '(eq Version "1.5")'),
    ("integral float", "sel:\n  Version: 2.0", "sel", '(eq Version "2")'),
    ("boolean", "sel:\n  Enabled: true", "sel", '(eq Enabled "true")'),
    (
        "quote in value",
        "sel:\n  CommandLine|contains: 'say \"hi\"'",
        "sel",
        r'(contains CommandLine "say \"hi\"")',
    ),
    # ---- lists and maps
    (
        "list is or",
        "sel:\n  Image|endswith: ['\\a.exe', '\\b.exe']",
        "sel",
        r'(or (endswith Image "\\a.exe") (endswith Image "\\b.exe"))',
    ),
    (
        "all",
        "sel:\n  CommandLine|contains|all: [a, b]",
        "sel",
        '(and (contains CommandLine "a") (contains CommandLine "b"))',
    ),
    ("map is and", "sel:\n  A: 1\n  B: 2", "sel", '(and (eq A "1") (eq B "2"))'),
    (
        "list of maps is or",
        "sel:\n  - A: 1\n  - B: 2\n    C: null\n  - D: ''",
        "sel",
        '(or (eq A "1") (and (eq B "2") (null C)) (eq D ""))',
    ),
    # ---- modifiers
    ("cased", "sel:\n  CommandLine|cased: Foo", "sel", '(eq:cased CommandLine "Foo")'),
    (
        "contains cased",
        "sel:\n  CommandLine|contains|cased: Foo",
        "sel",
        '(contains:cased CommandLine "Foo")',
    ),
    ("re", "sel:\n  CommandLine|re: 'a.b'", "sel", '(re CommandLine "a.b")'),
    ("re flags", "sel:\n  CommandLine|re|s|m|i: 'a.b'", "sel", '(re CommandLine "a.b" ims)'),
    (
        "re ignorecase long name",
        "sel:\n  CommandLine|re|ignorecase: '^x$'",
        "sel",
        '(re CommandLine "^x$" i)',
    ),
    ("re contains", "sel:\n  CommandLine|re|contains: 'a.b'", "sel", '(re CommandLine ".*a.b.*")'),
    (
        "cidr v4 and v6",
        "sel:\n  DestinationIp|cidr: ['10.0.0.0/8', 'fe80::/10']",
        "sel",
        '(or (cidr DestinationIp "10.0.0.0/8") (cidr DestinationIp "fe80::/10"))',
    ),
    (
        "cidr single host",
        "sel:\n  DestinationIp|cidr: '192.168.1.1/32'",
        "sel",
        '(cidr DestinationIp "192.168.1.1/32")',
    ),
    ("lt", "sel:\n  Count|lt: 5", "sel", "(lt Count 5)"),
    ("lte float", "sel:\n  Count|lte: 2.5", "sel", "(lte Count 2.5)"),
    ("gt", "sel:\n  Count|gt: 10", "sel", "(gt Count 10)"),
    ("gte", "sel:\n  Count|gte: 0", "sel", "(gte Count 0)"),
    ("neq", "sel:\n  User|neq: admin", "sel", '(not (eq User "admin"))'),
    (
        "neq list (pySigma: not any)",
        "sel:\n  User|neq: [a, b]",
        "sel",
        '(not (or (eq User "a") (eq User "b")))',
    ),
    ("exists true", "sel:\n  Field|exists: true", "sel", "(exists Field)"),
    ("exists false", "sel:\n  Field|exists: false", "sel", "(not (exists Field))"),
    ("fieldref", "sel:\n  Target|fieldref: Source", "sel", "(ref-eq Target Source)"),
    ("fieldref contains", "sel:\n  Target|fieldref|contains: Source", "sel", "(ref-contains Target Source)"),
    (
        "fieldref startswith",
        "sel:\n  Target|fieldref|startswith: Source",
        "sel",
        "(ref-startswith Target Source)",
    ),
    ("fieldref endswith", "sel:\n  Target|fieldref|endswith: Source", "sel", "(ref-endswith Target Source)"),
    ("minute", "sel:\n  T|minute: 30", "sel", "(minute T 30)"),
    ("hour", "sel:\n  T|hour: 3", "sel", "(hour T 3)"),
    ("day", "sel:\n  T|day: 31", "sel", "(day T 31)"),
    ("week", "sel:\n  T|week: 5", "sel", "(week T 5)"),
    ("month", "sel:\n  T|month: 12", "sel", "(month T 12)"),
    ("year", "sel:\n  T|year: 2024", "sel", "(year T 2024)"),
    # ---- value expansions
    (
        "windash with unicode dashes",
        "sel:\n  CommandLine|windash|contains: ' -enc '",
        "sel",
        '(or (contains CommandLine " -enc ") (contains CommandLine " /enc ")'
        ' (contains CommandLine " \u2013enc ") (contains CommandLine " \u2014enc ")'
        ' (contains CommandLine " \u2015enc "))',
    ),
    (
        "windash slash first",
        "sel:\n  CommandLine|windash|contains: '/s'",
        "sel",
        '(or (contains CommandLine "-s") (contains CommandLine "/s") (contains CommandLine "\u2013s")'
        ' (contains CommandLine "\u2014s") (contains CommandLine "\u2015s"))',
    ),
    ("windash leaves inner dashes", "sel:\n  CommandLine|windash: 'a-b'", "sel", '(eq CommandLine "a-b")'),
    ("base64", "sel:\n  CommandLine|base64: 'abc'", "sel", '(eq CommandLine "YWJj")'),
    ("base64 contains", "sel:\n  CommandLine|base64|contains: 'abc'", "sel", '(contains CommandLine "YWJj")'),
    (
        "base64offset",
        "sel:\n  CommandLine|base64offset|contains: 'http://'",
        "sel",
        '(or (contains CommandLine "aHR0cDovL") (contains CommandLine "h0dHA6Ly")'
        ' (contains CommandLine "odHRwOi8v"))',
    ),
    (
        "wide base64offset",
        "sel:\n  CommandLine|wide|base64offset|contains: 'ping'",
        "sel",
        '(or (contains CommandLine "cABpAG4AZw") (contains CommandLine "AAaQBuAGcA")'
        ' (contains CommandLine "wAGkAbgBnA"))',
    ),
    (
        "utf16le alias of wide",
        "sel:\n  CommandLine|utf16le|base64: 'ab'",
        "sel",
        '(eq CommandLine "YQBiAA==")',
    ),
    ("utf16 has a BOM", "sel:\n  CommandLine|utf16|base64: 'ab'", "sel", '(eq CommandLine "77u/YQBiAA==")'),
    ("utf16be", "sel:\n  CommandLine|utf16be|base64: 'ab'", "sel", '(eq CommandLine "AGEAYg==")'),
    (
        "all with expansion keeps the expansion or-ed",
        "sel:\n  CommandLine|windash|contains|all: ['-a', 'x']",
        "sel",
        '(and (or (contains CommandLine "-a") (contains CommandLine "/a") (contains CommandLine "\u2013a")'
        ' (contains CommandLine "\u2014a") (contains CommandLine "\u2015a")) (contains CommandLine "x"))',
    ),
    # ---- keywords
    (
        "keywords are substring matches",
        "keywords:\n  - mimikatz\n  - 'foo*bar'\n  - 4688",
        "keywords",
        '(or (keyword (contains * "mimikatz")) (keyword (glob * "*foo*bar*")) (keyword (contains * "4688")))',
    ),
    ("keyword startswith", "keywords:\n  '|startswith': abc", "keywords", '(keyword (startswith * "abc"))'),
    ("keyword re", "keywords:\n  '|re': 'a+b'", "keywords", '(keyword (re * "a+b"))'),
    (
        "keyword all",
        "keywords:\n  '|all': [a, b]",
        "keywords",
        '(and (keyword (contains * "a")) (keyword (contains * "b")))',
    ),
    # ---- conditions
    ("and not", "sel:\n  A: 1\nfilter:\n  B: 2", "sel and not filter", '(and (eq A "1") (not (eq B "2")))'),
    ("or", "sel:\n  A: 1\nother:\n  B: 2", "sel or other", '(or (eq A "1") (eq B "2"))'),
    (
        "parentheses",
        "a:\n  A: 1\nb:\n  B: 2\nc:\n  C: 3",
        "(a or b) and c",
        '(and (or (eq A "1") (eq B "2")) (eq C "3"))',
    ),
    (
        "precedence: and binds tighter",
        "a:\n  A: 1\nb:\n  B: 2\nc:\n  C: 3",
        "a or b and c",
        '(or (eq A "1") (and (eq B "2") (eq C "3")))',
    ),
    ("not not", "a:\n  A: 1", "not not a", '(eq A "1")'),
    (
        "1 of sel*",
        "sel_a:\n  A: 1\nsel_b:\n  B: 2\nother:\n  C: 3",
        "1 of sel_* and not other",
        '(and (or (eq A "1") (eq B "2")) (not (eq C "3")))',
    ),
    ("any of", "sel_a:\n  A: 1\nsel_b:\n  B: 2", "any of sel_*", '(or (eq A "1") (eq B "2"))'),
    (
        "all of sel*",
        "sel_a:\n  A: 1\nsel_b:\n  B: 2\nother:\n  C: 3",
        "all of sel_*",
        '(and (eq A "1") (eq B "2"))',
    ),
    ("1 of them", "a:\n  A: 1\nb:\n  B: 2\n_hidden:\n  C: 3", "1 of them", '(or (eq A "1") (eq B "2"))'),
    ("all of them", "a:\n  A: 1\nb:\n  B: 2", "all of them", '(and (eq A "1") (eq B "2"))'),
    (
        "2 of them",
        "a:\n  A: 1\nb:\n  B: 2\nc:\n  C: 3",
        "2 of them",
        '(or (and (eq A "1") (eq B "2")) (and (eq A "1") (eq C "3")) (and (eq B "2") (eq C "3")))',
    ),
    ("N of all = all", "a:\n  A: 1\nb:\n  B: 2", "2 of them", '(and (eq A "1") (eq B "2"))'),
    ("duplicates dropped", "a:\n  A: 1\nb:\n  A: 1", "a or b", '(eq A "1")'),
    (
        "nested and flattened",
        "a:\n  A: 1\n  B: 2\nb:\n  C: 3",
        "a and b",
        '(and (eq A "1") (eq B "2") (eq C "3"))',
    ),
]


@pytest.mark.parametrize(
    ("detection", "condition", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_lowering(detection: str, condition: str, expected: str) -> None:
    assert lowered(detection, condition) == expected


@pytest.mark.parametrize("text", ["http://", "a", "ab", "abc", "abcd", "Invoke-Mimikatz", "ünï"])
def test_base64offset_matches_pysigma(text: str) -> None:
    """Our lowered literals are exactly pySigma's own base64offset expansion (and the textbook formula)."""
    from sigma.modifiers import SigmaBase64OffsetModifier
    from sigma.types import SigmaString

    expansion = SigmaBase64OffsetModifier(None, [], None).modify(SigmaString(text))  # type: ignore[arg-type]
    pysigma_values = [str(v) for v in expansion.values]
    raw = text.encode()
    textbook = []
    for shift in range(3):
        encoded = base64.b64encode(b" " * shift + raw).decode()
        start = (0, 2, 3)[shift]
        end = (None, -3, -2)[(len(raw) + shift) % 3]
        textbook.append(encoded[start:end])
    if text.isascii():  # pySigma offsets by characters, not bytes: the formula only holds for ASCII
        assert pysigma_values == textbook
    unique = list(dict.fromkeys(pysigma_values))
    expected = "(or " + " ".join(f'(contains CommandLine "{v}")' for v in unique) + ")"
    if len(unique) == 1:
        expected = f'(contains CommandLine "{unique[0]}")'
    assert lowered(f"sel:\n  CommandLine|base64offset|contains: '{text}'") == expected


def test_windash_matches_pysigma() -> None:
    from sigma.modifiers import SigmaWindowsDashModifier
    from sigma.types import SigmaString

    values = [str(v) for v in SigmaWindowsDashModifier(None, [], None).modify(SigmaString("-a /b")).values]  # type: ignore[arg-type]
    expected = "(or " + " ".join(f'(eq CommandLine "{v}")' for v in values) + ")"
    assert lowered("sel:\n  CommandLine|windash: '-a /b'") == expected
    assert len(values) == 25  # 5 dash forms at each of the two positions


# (case id, detection, condition, expected status, expected line, text the message must contain)
ERROR_CASES = [
    ("unknown modifier", "sel:\n  A|foo: 1", "sel", "error", 8, "Unknown modifier"),
    ("undefined selection", "sel:\n  A: 1", "sel and missing", "error", 9, "missing"),
    ("bad condition syntax", "sel:\n  A: 1", "sel and (", "error", 9, "Expected"),
    ("selector matching nothing", "sel:\n  A: 1", "1 of x*", "error", 9, "matches no detection"),
    ("pipe aggregation", "sel:\n  A: 1", "sel | count() > 5", "error", 9, "pipe syntax"),
    ("not enough selections for N of", "a:\n  A: 1", "2 of them", "error", 9, "2 of them"),
    ("unresolved placeholder", "sel:\n  User|expand: '%admins%'", "sel", "unsupported", 8, "%admins%"),
    ("gte on a string", "sel:\n  N|gte: 'x'", "sel", "error", 8, "incompatible"),
    ("re after contains", "sel:\n  A|contains|re: 'x'", "sel", "error", 8, "Regular expression"),
    ("bad cidr", "sel:\n  Ip|cidr: '10.0.0.300/8'", "sel", "error", 8, "CIDR"),
    ("bad regex", "sel:\n  A|re: '('", "sel", "error", 8, "invalid"),
]


@pytest.mark.parametrize(
    ("detection", "condition", "status", "line", "fragment"),
    [c[1:] for c in ERROR_CASES],
    ids=[c[0] for c in ERROR_CASES],
)
def test_broken_rules_report_precisely(
    detection: str, condition: str, status: str, line: int, fragment: str
) -> None:
    result = compile_one(detection, condition)
    assert not result.rules
    assert len(result.errors) == 1
    error = result.errors[0]
    assert isinstance(error, RuleError)
    assert error.status == status
    assert error.rule_id == RULE_ID
    assert error.path == "fixture.yml"
    assert fragment in error.message
    assert error.line == line, str(error)
    assert str(error).startswith(f"fixture.yml:{error.line}:{error.col}: rule {RULE_ID}: ")


def test_yaml_error_position() -> None:
    text = "title: x\nid: 1\ndetection:\n  sel: [a, b\n  condition: sel\n"
    result = compile_documents([("broken.yml", text)])
    assert not result.rules
    (error,) = result.errors
    assert error.status == "error"
    assert error.line >= 4
    assert str(error).startswith(f"broken.yml:{error.line}:{error.col}: rule -: YAML error")


def test_one_broken_rule_does_not_stop_the_others() -> None:
    good = rule_yaml("sel:\n  A: 1")
    bad = good.replace("A: 1", "A|nope: 1").replace(RULE_ID, "99999999-2222-3333-4444-555555555555")
    result = compile_documents(
        [("good.yml", good), ("bad.yml", bad), ("good2.yml", good.replace("1111", "7777"))]
    )
    assert [r.meta.path for r in result.rules] == ["good.yml", "good2.yml"]
    assert [e.path for e in result.errors] == ["bad.yml"]


# ---------------------------------------------------------------- property: wildcard/escape lowering


def _pysigma_regex(raw: str) -> re.Pattern[str]:
    """pySigma's own reading of a value (its parsed parts), as an anchored regex."""
    from sigma.types import SigmaString, SpecialChars

    pattern = []
    for part in SigmaString(raw).s:
        if part is SpecialChars.WILDCARD_MULTI:
            pattern.append(".*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            pattern.append(".")
        else:
            pattern.append(re.escape(str(part)))
    return re.compile("".join(pattern), re.IGNORECASE | re.DOTALL)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.text(alphabet="aAb*?\\.", max_size=8),
    texts=st.lists(st.text(alphabet="aAb*?\\.", max_size=8), max_size=8),
)
def test_lowered_value_matches_like_pysigma_reads_it(raw: str, texts: list[str]) -> None:
    from sigma.types import SigmaString

    from compiler.lower import lower_string
    from compiler.reference import evaluate

    node = lower_string("F", SigmaString(raw))
    regex = _pysigma_regex(raw)
    for text in [*texts, raw, raw.replace("\\", "")]:
        assert evaluate(node, {"F": text}) == bool(regex.fullmatch(text)), (raw, text, to_text(node))
