"""load_rules: file walking, collections, correlations, filters, pipelines, logsource maps, cache, errors."""

from __future__ import annotations

import os
import textwrap
import warnings
from pathlib import Path

import pytest

from compiler.errors import InputError, RuleError
from compiler.ir import Const, to_text, walk
from sigma_arrow import cache as ruleset_cache
from sigma_arrow.loader import RuleWarning, find_rule_files, load_rules


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SIGMA_ARROW_CACHE_DIR", str(directory))
    return directory


def rule(
    rule_id: str,
    detection: str = "sel:\n  Image|endswith: '\\cmd.exe'",
    *,
    logsource: str = "",
    name: str = "",
) -> str:
    logsource = logsource or "{product: windows, category: process_creation}"
    body = textwrap.indent(detection.strip("\n"), "  ")
    extra = f"name: {name}\n" if name else ""
    return (
        f"title: Rule {rule_id}\nid: {rule_id}\n{extra}status: test\nlevel: high\ntags: [attack.t1059]\n"
        f"logsource: {logsource}\ndetection:\n{body}\n  condition: sel\n"
    )


def uid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- files


def test_walks_files_dirs_and_globs(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    write(tmp_path, "sub/deeper/b.yaml", rule(uid(2)))
    write(tmp_path, "sub/notes.txt", "not a rule")
    assert [p.name for p in find_rule_files([tmp_path])] == ["a.yml", "b.yaml"]
    assert [p.name for p in find_rule_files(str(tmp_path / "**" / "*.yaml"))] == ["b.yaml"]
    assert [p.name for p in find_rule_files([tmp_path / "a.yml", tmp_path / "a.yml"])] == ["a.yml"]
    rules = load_rules([tmp_path])
    assert sorted(r.id for r in rules) == [uid(1), uid(2)]
    assert {r.meta.path for r in rules} == {str(tmp_path / "a.yml"), str(tmp_path / "sub/deeper/b.yaml")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"paths": ["/nonexistent/rules"]}, "no such file"),
        ({"paths": ["/nonexistent/*.yml"]}, "no file matches"),
        ({"pipelines": ["no-such-pipeline"]}, "unknown pipeline"),
        ({"logsource_map": "no-such-map"}, "unknown logsource map"),
    ],
)
def test_usage_errors_raise_input_error(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    args: dict[str, object] = {"paths": [tmp_path], "cache": False, **kwargs}
    with pytest.raises(InputError, match=message):
        load_rules(**args)  # type: ignore[arg-type]


def test_metadata(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    (compiled,) = load_rules([tmp_path], cache=False)
    meta = compiled.meta
    assert (meta.title, meta.level, meta.status, meta.tags) == (
        f"Rule {uid(1)}",
        "high",
        "test",
        ("attack.t1059",),
    )
    assert (meta.product, meta.category, meta.service) == ("windows", "process_creation", None)


# ---------------------------------------------------------------- errors


def test_broken_rule_is_reported_and_others_load(tmp_path: Path) -> None:
    write(tmp_path, "good.yml", rule(uid(1)))
    write(tmp_path, "bad_modifier.yml", rule(uid(2), "sel:\n  Image|bogus: x"))
    write(tmp_path, "bad_yaml.yml", "title: x\ndetection: [unclosed\n")
    write(tmp_path, "not_utf8.yml", "")
    (tmp_path / "not_utf8.yml").write_bytes(b"title: \xff\xfe\n")
    rules = load_rules([tmp_path], cache=False)
    assert [r.id for r in rules] == [uid(1)]
    by_path = {Path(e.path).name: e for e in rules.errors}
    assert set(by_path) == {"bad_modifier.yml", "bad_yaml.yml", "not_utf8.yml"}
    modifier = by_path["bad_modifier.yml"]
    assert str(modifier) == f"{tmp_path / 'bad_modifier.yml'}:9:10: rule {uid(2)}: Unknown modifier 'bogus'"
    assert by_path["bad_yaml.yml"].line == 3
    assert "UTF-8" in by_path["not_utf8.yml"].message


def test_on_error_raise_and_warn(tmp_path: Path) -> None:
    write(tmp_path, "bad.yml", rule(uid(2), "sel:\n  Image|bogus: x"))
    write(tmp_path, "good.yml", rule(uid(1)))
    with pytest.raises(RuleError, match="Unknown modifier"):
        load_rules([tmp_path], on_error="raise", cache=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rules = load_rules([tmp_path], on_error="warn", cache=False)
    assert len(rules) == 1
    assert [w.category for w in caught] == [RuleWarning]


def test_duplicate_ids_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    write(tmp_path, "b.yml", rule(uid(1)))
    rules = load_rules([tmp_path], cache=False)
    assert len(rules) == 1
    assert "duplicate rule id" in rules.errors[0].message


# ---------------------------------------------------------------- collections, correlations, filters


def test_multi_document_and_global_action(tmp_path: Path) -> None:
    text = textwrap.dedent(
        f"""\
        action: global
        title: Shared
        status: test
        logsource: {{product: windows, category: process_creation}}
        detection:
          common:
            User: admin
          condition: common and sel
        ---
        id: {uid(1)}
        detection:
          sel:
            Image|endswith: '\\a.exe'
        ---
        id: {uid(2)}
        detection:
          sel:
            Image|endswith: '\\b.exe'
        """
    )
    write(tmp_path, "multi.yml", text)
    rules = load_rules([tmp_path], logsource_map="none", cache=False)
    assert not rules.errors
    got = {r.id: to_text(r.detection) for r in rules}
    assert got == {
        uid(1): r'(and (eq User "admin") (endswith Image "\\a.exe"))',
        uid(2): r'(and (eq User "admin") (endswith Image "\\b.exe"))',
    }


def test_correlations_are_parsed_and_resolved(tmp_path: Path) -> None:
    base = rule(
        uid(1),
        "sel:\n  EventID: 4625",
        logsource="{product: windows, service: security}",
        name="failed_logon",
    )
    other = rule(
        uid(2), "sel:\n  EventID: 4624", logsource="{product: windows, service: security}", name="logon"
    )
    correlations = textwrap.dedent(
        f"""\
        title: Many failed logons
        id: {uid(10)}
        level: high
        correlation:
          type: event_count
          rules: [failed_logon]
          group-by: [TargetUserName]
          timespan: 5m
          condition:
            gte: 10
        ---
        title: Failed then success
        id: {uid(11)}
        correlation:
          type: temporal_ordered
          rules: [failed_logon, {uid(2)}]
          group-by: [user]
          timespan: 1h
          aliases:
            user:
              failed_logon: TargetUserName
              logon: SubjectUserName
        ---
        title: Distinct hosts
        id: {uid(12)}
        correlation:
          type: value_count
          rules: [logon]
          group-by: [TargetUserName]
          timespan: 1d
          condition:
            field: Computer
            gt: 3
        """
    )
    write(tmp_path, "base.yml", base + "---\n" + other)
    write(tmp_path, "corr.yml", correlations)
    rules = load_rules([tmp_path], cache=False)
    assert not rules.errors, [str(e) for e in rules.errors]
    assert len(rules) == 2
    by_id = {c.meta.id: c for c in rules.correlations}
    count = by_id[uid(10)]
    assert (count.type, count.rules, count.group_by, count.timespan_seconds) == (
        "event_count",
        (uid(1),),
        ("TargetUserName",),
        300.0,
    )
    assert count.condition == (("gte", 10),)
    ordered = by_id[uid(11)]
    assert ordered.type == "temporal_ordered"
    assert ordered.rules == (uid(1), uid(2))
    assert ordered.aliases == (("user", ((uid(1), "TargetUserName"), (uid(2), "SubjectUserName"))),)
    assert dict(by_id[uid(12)].condition) == {"gt": 3, "field": "Computer"}


def test_correlation_with_unknown_rule_is_an_error(tmp_path: Path) -> None:
    text = (
        f"title: c\nid: {uid(10)}\ncorrelation:\n  type: event_count\n  rules: [nope]\n"
        "  timespan: 5m\n  condition: {gte: 2}\n"
    )
    write(tmp_path, "corr.yml", text)
    rules = load_rules([tmp_path], cache=False)
    assert not rules.correlations
    assert "unknown rule" in rules.errors[0].message


def test_filters_apply_to_their_targets(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    write(tmp_path, "b.yml", rule(uid(2), "sel:\n  Image|endswith: '\\ps.exe'"))
    write(
        tmp_path,
        "filter.yml",
        textwrap.dedent(
            f"""\
            title: Not for admins
            id: {uid(20)}
            logsource: {{product: windows, category: process_creation}}
            filter:
              rules: [{uid(1)}]
              admin:
                User: admin
              condition: not admin
            """
        ),
    )
    rules = load_rules([tmp_path], logsource_map="none", cache=False)
    assert not rules.errors
    got = {r.id: to_text(r.detection) for r in rules}
    assert got[uid(1)] == r'(and (endswith Image "\\cmd.exe") (not (eq User "admin")))'
    assert got[uid(2)] == r'(endswith Image "\\ps.exe")'
    (flt,) = rules.filters
    assert flt.targets == (uid(1),)


def test_filter_for_any_rule_of_its_logsource(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    write(tmp_path, "b.yml", rule(uid(2), logsource="{product: linux, category: process_creation}"))
    write(
        tmp_path,
        "filter.yml",
        f"title: f\nid: {uid(20)}\nlogsource: {{product: windows}}\nfilter:\n  rules: any\n"
        "  x:\n    User: admin\n  condition: not x\n",
    )
    rules = {r.id: to_text(r.detection) for r in load_rules([tmp_path], logsource_map="none", cache=False)}
    assert rules[uid(1)].endswith('(not (eq User "admin")))')
    assert "admin" not in rules[uid(2)]


# ---------------------------------------------------------------- pipelines


def test_pipeline_file_resolves_placeholders(tmp_path: Path) -> None:
    write(tmp_path, "rules/a.yml", rule(uid(1), "sel:\n  User|expand: '%admins%'"))
    pipeline = write(
        tmp_path,
        "pipeline.yml",
        "name: admins\npriority: 10\nvars:\n  admins: [alice, bob]\n"
        "transformations:\n  - id: placeholders\n    type: value_placeholders\n",
    )
    without = load_rules([tmp_path / "rules"], cache=False)
    assert not len(without)
    assert without.errors[0].status == "unsupported"
    assert "%admins%" in without.errors[0].message
    with_pipeline = load_rules(
        [tmp_path / "rules"], pipelines=[str(pipeline)], logsource_map="none", cache=False
    )
    assert to_text(with_pipeline.rules[0].detection) == '(or (eq User "alice") (eq User "bob"))'
    assert with_pipeline.pipelines == (str(pipeline),)


def test_named_plugin_pipeline(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    rules = load_rules([tmp_path], pipelines=["windows-audit"], logsource_map="none", cache=False)
    text = to_text(rules.rules[0].detection)
    assert '(eq EventID "4688")' in text
    assert "NewProcessName" in text
    assert rules.rules[0].meta.service == "security"


# ---------------------------------------------------------------- logsource maps


def routes_text(rules_dir: Path, logsource_map: str) -> list[tuple[str, str]]:
    (compiled,) = load_rules([rules_dir], logsource_map=logsource_map, cache=False)
    return [(to_text(r.condition), to_text(r.detection)) for r in compiled.routes]


SYSMON = '(or (eq Channel "Microsoft-Windows-Sysmon/Operational") (null Channel))'

MAP_CASES = [
    (
        "process_creation: sysmon 1 and security 4688 with renames",
        "{product: windows, category: process_creation}",
        "sel:\n  Image|endswith: '\\x.exe'\n  ParentProcessId: 4",
        "windows",
        [
            (
                f'(and {SYSMON} (eq EventID "1"))',
                r'(and (endswith Image "\\x.exe") (eq ParentProcessId "4"))',
            ),
            (
                '(and (or (eq Channel "Security") (null Channel)) (eq EventID "4688"))',
                r'(and (endswith NewProcessName "\\x.exe") (eq ProcessId "4"))',
            ),
        ],
    ),
    (
        "registry_set",
        "{product: windows, category: registry_set}",
        "sel:\n  TargetObject|contains: Run",
        "windows",
        [(f'(and {SYSMON} (eq EventID "13"))', '(contains TargetObject "Run")')],
    ),
    (
        "registry_delete uses EventType",
        "{product: windows, category: registry_delete}",
        "sel:\n  TargetObject|contains: Run",
        "windows",
        [
            (
                f'(and {SYSMON} (eq EventID "12")'
                ' (or (eq EventType "DeleteKey") (eq EventType "DeleteValue")))',
                '(contains TargetObject "Run")',
            )
        ],
    ),
    (
        "ps_script",
        "{product: windows, category: ps_script}",
        "sel:\n  ScriptBlockText|contains: iex",
        "windows",
        [
            (
                '(and (or (eq Channel "Microsoft-Windows-PowerShell/Operational")'
                ' (eq Channel "PowerShellCore/Operational") (null Channel)) (eq EventID "4104"))',
                '(contains ScriptBlockText "iex")',
            )
        ],
    ),
    (
        "service security",
        "{product: windows, service: security}",
        "sel:\n  EventID: 4624",
        "windows",
        [('(eq Channel "Security")', '(eq EventID "4624")')],
    ),
    (
        "non-windows rule runs on events with neither Channel nor Provider_Name",
        "{category: proxy}",
        "sel:\n  c-uri|contains: evil",
        "windows",
        [("(and (null Channel) (null Provider_Name))", '(contains c-uri "evil")')],
    ),
    (
        "linux auditd",
        "{product: linux, service: auditd}",
        "sel:\n  type: EXECVE",
        "linux",
        [("(and (null Channel) (exists type))", '(eq type "EXECVE")')],
    ),
    (
        "linux process_creation: sysmon for linux or channel-less",
        "{product: linux, category: process_creation}",
        "sel:\n  Image|endswith: /bash",
        "linux",
        [
            ('(and (eq Channel "Linux-Sysmon/Operational") (eq EventID "1"))', '(endswith Image "/bash")'),
            ("(null Channel)", '(endswith Image "/bash")'),
        ],
    ),
    (
        "none",
        "{product: windows, category: process_creation}",
        "sel:\n  A: 1",
        "none",
        [("true", '(eq A "1")')],
    ),
]


@pytest.mark.parametrize(
    ("logsource", "detection", "map_name", "expected"),
    [c[1:] for c in MAP_CASES],
    ids=[c[0] for c in MAP_CASES],
)
def test_logsource_maps(
    tmp_path: Path, logsource: str, detection: str, map_name: str, expected: list[tuple[str, str]]
) -> None:
    write(tmp_path, "r.yml", rule(uid(1), detection, logsource=logsource))
    assert routes_text(tmp_path, map_name) == expected


def test_custom_map_file(tmp_path: Path) -> None:
    write(tmp_path, "rules/r.yml", rule(uid(1), logsource="{product: acme, service: fw}"))
    write(tmp_path, "rules/other.yml", rule(uid(2), logsource="{product: other}"))
    mapping = write(
        tmp_path,
        "acme.yml",
        "name: acme\nentries:\n  - match: {product: acme, service: [fw, firewall]}\n    routes:\n"
        "      - when: {source: acme-fw}\n        rename: {Image: proc}\n",
    )
    rules = {r.id: r for r in load_rules([tmp_path / "rules"], logsource_map=str(mapping), cache=False)}
    (route,) = rules[uid(1)].routes
    assert to_text(route.condition) == '(eq source "acme-fw")'
    assert to_text(route.detection) == r'(endswith proc "\\cmd.exe")'
    assert rules[uid(2)].routes == ()  # no entry and no default: never matches
    assert rules[uid(2)].predicate == Const(False)


def test_bad_map_file(tmp_path: Path) -> None:
    write(tmp_path, "rules/r.yml", rule(uid(1)))
    mapping = write(tmp_path, "bad.yml", "entries:\n  - match: {vendor: x}\n    routes: [{when: {a: 1}}]\n")
    with pytest.raises(InputError, match="match key 'vendor'"):
        load_rules([tmp_path / "rules"], logsource_map=str(mapping), cache=False)


# ---------------------------------------------------------------- whole-ruleset passes


def test_identical_subtrees_are_shared_across_rules(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1), "sel:\n  CommandLine|contains: [mimikatz, sekurlsa]\n  User: x"))
    write(tmp_path, "b.yml", rule(uid(2), "sel:\n  CommandLine|contains: [mimikatz, sekurlsa]\n  User: y"))
    first, second = load_rules([tmp_path], cache=False)
    shared = [n for n in walk(first.detection) if any(n is m for m in walk(second.detection))]
    assert any(
        to_text(n) == '(or (contains CommandLine "mimikatz") (contains CommandLine "sekurlsa"))'
        for n in shared
    )
    assert first.routes[0].condition is second.routes[0].condition


# ---------------------------------------------------------------- cache


def test_cache_hit_and_invalidation(tmp_path: Path, private_cache: Path) -> None:
    path = write(tmp_path, "a.yml", rule(uid(1)))
    first = load_rules([tmp_path])
    assert len(list(private_cache.glob("*.pickle"))) == 1
    again = load_rules([tmp_path])
    assert [to_text(r.predicate) for r in again] == [to_text(r.predicate) for r in first]
    path.write_text(rule(uid(1), "sel:\n  Image|endswith: '\\other.exe'"), encoding="utf-8")
    changed = load_rules([tmp_path])
    assert "other.exe" in to_text(changed.rules[0].detection)
    assert len(list(private_cache.glob("*.pickle"))) == 2
    other_map = load_rules([tmp_path], logsource_map="none")
    assert other_map.rules[0].routes[0].condition == Const(True)
    assert other_map.logsource_map == "none"


def test_cache_disabled_writes_nothing(tmp_path: Path, private_cache: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    load_rules([tmp_path], cache=False)
    assert not list(private_cache.glob("*.pickle"))


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, private_cache: Path) -> None:
    write(tmp_path, "a.yml", rule(uid(1)))
    load_rules([tmp_path])
    (entry,) = private_cache.glob("*.pickle")
    entry.write_bytes(b"garbage")
    assert len(load_rules([tmp_path])) == 1
    assert ruleset_cache.cache_dir() == Path(os.environ["SIGMA_ARROW_CACHE_DIR"])


def test_cached_errors_survive(tmp_path: Path) -> None:
    write(tmp_path, "bad.yml", rule(uid(2), "sel:\n  Image|bogus: x"))
    write(tmp_path, "good.yml", rule(uid(1)))
    load_rules([tmp_path])
    warm = load_rules([tmp_path])
    (error,) = warm.errors
    assert (error.line, error.col, error.rule_id, error.status) == (9, 10, uid(2), "error")


def test_parallel_parse_gives_the_same_ruleset(tmp_path: Path) -> None:
    from sigma_arrow.loader import PARALLEL_MIN_FILES

    for n in range(PARALLEL_MIN_FILES + 10):
        detection = f"sel:\n  CommandLine|contains: 'needle{n % 37}'\n  User: u{n}"
        if n % 97 == 0:
            detection = "sel:\n  Image|bogus: x"
        write(tmp_path, f"d{n % 7}/r{n:04d}.yml", rule(uid(n + 1), detection))
    serial = load_rules([tmp_path], cache=False, workers=1)
    parallel = load_rules([tmp_path], cache=False, workers=2)
    assert [r.id for r in parallel] == [r.id for r in serial]
    assert [to_text(r.predicate) for r in parallel] == [to_text(r.predicate) for r in serial]
    assert [str(e) for e in parallel.errors] == [str(e) for e in serial.errors]
    assert len(parallel.errors) == 5
