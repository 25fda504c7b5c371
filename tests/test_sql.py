"""DataFusion SQL session: sigma_matches / sigma_annotate / sigma_rule_ids / sigma_rules / to_sql / CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionConfig, SessionContext

import sigma_arrow as sa
from sigma_arrow.cli.sql_cmd import split_statements
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN, match_schema
from sigma_arrow.sql import error_message, register, register_path, rule_table

# ---------------------------------------------------------------- fixture data

RULES = {
    "cmd_whoami.yml": """
title: Whoami Execution
id: 00000000-0000-0000-0000-000000000001
status: test
level: medium
tags: [attack.discovery, attack.t1033]
logsource: {product: windows, category: process_creation}
detection:
  selection: {Image|endswith: '\\whoami.exe'}
  condition: selection
""",
    "encoded_ps.yml": """
title: Encoded PowerShell
id: 00000000-0000-0000-0000-000000000002
status: experimental
level: high
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\\powershell.exe'
    CommandLine|contains: [' -enc ', ' -EncodedCommand ']
  condition: selection
""",
    "logon_failure.yml": """
title: Failed Logon
id: 00000000-0000-0000-0000-000000000003
status: stable
level: low
logsource: {product: windows, service: security}
detection:
  selection: {EventID: 4625}
  filter: {TargetUserName|endswith: '$'}
  condition: selection and not filter
""",
    "keyword.yml": """
title: Mimikatz Keyword
id: 00000000-0000-0000-0000-000000000004
status: test
level: critical
logsource: {product: windows, category: process_creation}
detection:
  keywords: [mimikatz]
  condition: keywords
""",
}

PROJECT = Path(__file__).resolve().parents[1]
SYSMON = "Microsoft-Windows-Sysmon/Operational"
HOSTS = ["ws1", "ws2", "dc1"]


def _events(n: int) -> list[dict[str, Any]]:
    """A deterministic mix of process creations and logons across three hosts."""
    shapes: list[dict[str, Any]] = [
        {
            "Channel": SYSMON,
            "EventID": 1,
            "Image": "C:\\Windows\\System32\\whoami.exe",
            "CommandLine": "whoami",
        },
        {"Channel": SYSMON, "EventID": 1, "Image": "C:\\x\\powershell.exe", "CommandLine": "ps -enc AAAA"},
        {"Channel": SYSMON, "EventID": 1, "Image": "C:\\x\\powershell.exe", "CommandLine": "ps -nop"},
        {"Channel": SYSMON, "EventID": 1, "Image": "C:\\tools\\m.exe", "CommandLine": "MIMIKATZ sekurlsa"},
        {"Channel": "Security", "EventID": 4625, "TargetUserName": "bob"},
        {"Channel": "Security", "EventID": 4625, "TargetUserName": "WS1$"},
        {"Channel": SYSMON, "EventID": 3, "Image": "C:\\Windows\\System32\\whoami.exe"},
    ]
    rows = []
    for i in range(n):
        row = {
            "Image": None,
            "CommandLine": None,
            "TargetUserName": None,
            **shapes[(i * 7 + i // 5) % len(shapes)],
        }
        row["Computer"] = HOSTS[i % len(HOSTS)]
        row["SystemTime"] = f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory: pytest.TempPathFactory) -> sa.RuleSet:
    folder = tmp_path_factory.mktemp("rules")
    for name, text in RULES.items():
        (folder / name).write_text(text)
    rules = sa.load_rules([folder], cache=False)
    assert len(rules) == len(RULES), rules.errors
    return rules


@pytest.fixture(scope="module")
def engine(ruleset: sa.RuleSet) -> Any:
    return sa.Engine(ruleset)


EVENTS = _events(700)


@pytest.fixture(scope="module")
def event_batches() -> list[pa.RecordBatch]:
    table = pa.Table.from_pylist(EVENTS)
    return table.to_batches(max_chunksize=128)


@pytest.fixture(scope="module")
def data_files(
    tmp_path_factory: pytest.TempPathFactory, event_batches: list[pa.RecordBatch]
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    parquet = folder / "events.parquet"
    pq.write_table(pa.Table.from_batches(event_batches), parquet, row_group_size=100)
    ndjson = folder / "events.jsonl"
    ndjson.write_bytes(
        b"".join(orjson.dumps({k: v for k, v in e.items() if v is not None}) + b"\n" for e in EVENTS)
    )
    return {"parquet": parquet, "ndjson": ndjson}


def _context() -> SessionContext:
    # One partition per file scan keeps row order (event_index) deterministic.
    config = SessionConfig().set("datafusion.optimizer.repartition_file_scans", "false")
    return SessionContext(config)


def _session(
    source: str, ruleset: sa.RuleSet, engine: Any, batches: list[pa.RecordBatch], files: dict[str, Path]
) -> SessionContext:
    ctx = _context()
    if source == "memory":
        ctx.register_record_batches("events", [batches])
    else:
        register_path(ctx, "events", str(files[source]))
    register(ctx, ruleset, engine=engine)
    return ctx


def _engine_matches(engine: Any, batches: list[pa.RecordBatch]) -> pa.Table:
    """Match records straight from the engine, rows numbered across the batches like the SQL table."""
    found = []
    start = 0
    for batch in batches:
        with_index = batch.append_column(SOURCE_COLUMN, pa.array(["events"] * batch.num_rows)).append_column(
            INDEX_COLUMN, pa.array(range(start, start + batch.num_rows), pa.int64())
        )
        found.append(engine.matches(with_index, include_event=False))
        start += batch.num_rows
    return pa.Table.from_batches(found)


SOURCES = ["memory", "parquet", "ndjson"]


# ---------------------------------------------------------------- the table function


@pytest.mark.parametrize("source", SOURCES)
def test_matches_per_rule_counts_equal_the_engine(source, ruleset, engine, event_batches, data_files):
    ctx = _session(source, ruleset, engine, event_batches, data_files)
    got = ctx.sql("SELECT rule_id, count(*) AS n FROM sigma_matches('events') GROUP BY rule_id").to_pylist()
    expected = Counter(_engine_matches(engine, event_batches).column("rule_id").to_pylist())
    assert {r["rule_id"]: r["n"] for r in got} == dict(expected)
    assert len(expected) == len(RULES)  # every fixture rule fires somewhere


@pytest.mark.parametrize("source", SOURCES)
def test_matches_records_point_at_their_events(source, ruleset, engine, event_batches, data_files):
    ctx = _session(source, ruleset, engine, event_batches, data_files)
    table = ctx.sql("SELECT * FROM sigma_matches('events')").to_arrow_table()
    assert table.schema.names == match_schema(pa.null()).names
    assert table.schema.field("event").type.get_field_index("Computer") >= 0
    expected = {(r["rule_id"], r["event_index"]) for r in _engine_matches(engine, event_batches).to_pylist()}
    rows = table.to_pylist()
    got = {(r["rule_id"], r["event_index"]) for r in rows}
    if source == "ndjson":  # the NDJSON reader numbers records itself, from 0 per file: same numbers
        assert {r["source"] for r in rows} == {str(data_files["ndjson"])}
    else:
        assert {r["source"] for r in rows} == {"events"}
    assert got == expected
    for r in rows:
        assert r["event"]["Computer"] == EVENTS[r["event_index"]]["Computer"]
        assert r["timestamp"] == EVENTS[r["event_index"]]["SystemTime"]


def test_matches_streams_batch_by_batch(ruleset, engine, event_batches):
    """A LIMIT query stops pulling the table: the engine sees a few batches, not all of them."""

    class Counting:
        def __init__(self) -> None:
            self.batches = 0
            self.rows = 0

        def evaluate(self, batch: pa.RecordBatch) -> pa.RecordBatch:
            self.batches += 1
            self.rows += batch.num_rows
            return engine.evaluate(batch)

    many = [b for _ in range(200) for b in event_batches]  # 1,200 batches
    ctx = _context()
    ctx.register_record_batches("events", [many])
    counting = Counting()
    register(ctx, ruleset, engine=counting)
    assert ctx.sql("SELECT rule_id FROM sigma_matches('events') LIMIT 1").to_pylist()
    assert 1 <= counting.batches < len(many) // 10
    # A fresh session and counter: the LIMIT query's stream may still finish a batch it had started.
    ctx = _context()
    ctx.register_record_batches("events", [many])
    counting = Counting()
    register(ctx, ruleset, engine=counting)
    assert ctx.sql("SELECT count(*) AS n FROM sigma_matches('events')").to_pylist()[0]["n"] > 0
    assert counting.rows == sum(b.num_rows for b in many)


def test_prefix_names_everything(ruleset, engine, event_batches):
    ctx = _context()
    ctx.register_record_batches("events", [event_batches])
    register(ctx, ruleset, prefix="det", engine=engine)
    assert ctx.sql("SELECT count(*) AS n FROM det_matches('events')").to_pylist()[0]["n"] > 0
    assert ctx.sql("SELECT count(*) AS n FROM det_rules").to_pylist()[0]["n"] == len(RULES)
    with pytest.raises(Exception, match="sigma_matches"):
        ctx.sql("SELECT * FROM sigma_matches('events')").collect()


# ---------------------------------------------------------------- scalar function and annotate


@pytest.mark.parametrize("source", SOURCES)
def test_rule_ids_agrees_row_by_row_with_evaluate(source, ruleset, engine, event_batches, data_files):
    ctx = _session(source, ruleset, engine, event_batches, data_files)
    names = ["Channel", "EventID", "Image", "CommandLine", "TargetUserName", "Computer"]
    values = ", ".join(f'CAST("{n}" AS VARCHAR)' for n in names)
    quoted = ", ".join(f"'{n}'" for n in names)
    sql = f"SELECT sigma_rule_ids([{quoted}], [{values}]) AS ids FROM events"
    got = [sorted(r["ids"]) for r in ctx.sql(sql).to_pylist()]
    expected = []
    for batch in event_batches:
        masks = engine.evaluate(batch.select(names))
        for row in masks.to_pylist():
            expected.append(sorted(k for k, v in row.items() if v))
    assert len(got) == len(EVENTS)
    if source == "parquet":  # file order is row order with one partition
        assert got == expected
    else:
        assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
    assert any(got)


def test_annotate_gives_every_row_its_rule_ids(ruleset, engine, event_batches, data_files):
    ctx = _session("parquet", ruleset, engine, event_batches, data_files)
    rows = ctx.sql("SELECT \"Computer\", rule_ids FROM sigma_annotate('events')").to_pylist()
    expected = []
    for batch in event_batches:
        expected.extend(sorted(k for k, v in row.items() if v) for row in engine.evaluate(batch).to_pylist())
    assert [sorted(r["rule_ids"]) for r in rows] == expected
    assert [r["Computer"] for r in rows] == [e["Computer"] for e in EVENTS]


def test_rules_table(ruleset, engine):
    ctx = _context()
    register(ctx, ruleset, engine=engine)
    rows = {r["id"]: r for r in ctx.sql("SELECT * FROM sigma_rules").to_pylist()}
    assert rows.keys() == {r.id for r in ruleset}
    whoami = rows["00000000-0000-0000-0000-000000000001"]
    assert whoami["title"] == "Whoami Execution"
    assert (whoami["level"], whoami["status"], whoami["product"], whoami["category"]) == (
        "medium",
        "test",
        "windows",
        "process_creation",
    )
    assert whoami["tags"] == ["attack.discovery", "attack.t1033"]
    assert whoami["path"].endswith("cmd_whoami.yml")
    assert "Image" in whoami["fields"]
    assert rows["00000000-0000-0000-0000-000000000003"]["service"] == "security"
    assert rule_table(ruleset).num_rows == len(RULES)


# ---------------------------------------------------------------- composition


def test_join_and_aggregate(ruleset, engine, event_batches, data_files):
    ctx = _session("parquet", ruleset, engine, event_batches, data_files)
    ctx.register_record_batches(
        "assets",
        [
            [
                pa.record_batch(
                    {"host": ["ws1", "ws2", "dc1"], "owner": ["alice", "bob", "it"], "tier": [2, 2, 0]}
                )
            ]
        ],
    )
    sql = """
        SELECT a.owner, m.rule_level, count(*) AS hits, count(DISTINCT m.rule_id) AS rules
        FROM sigma_matches('events') AS m
        JOIN assets AS a ON a.host = m.event['Computer']
        JOIN sigma_rules AS r ON r.id = m.rule_id
        WHERE r.status <> 'deprecated'
        GROUP BY a.owner, m.rule_level
        ORDER BY a.owner, m.rule_level
    """
    got = ctx.sql(sql).to_pylist()
    owner = {"ws1": "alice", "ws2": "bob", "dc1": "it"}
    level = {r.id: r.meta.level for r in ruleset}
    hits: Counter[tuple[str, str]] = Counter()
    rules: dict[tuple[str, str], set[str]] = {}
    for m in _engine_matches(engine, event_batches).to_pylist():
        key = (owner[EVENTS[m["event_index"]]["Computer"]], level[m["rule_id"]])
        hits[key] += 1
        rules.setdefault(key, set()).add(m["rule_id"])
    expected = [
        {"owner": o, "rule_level": lv, "hits": hits[(o, lv)], "rules": len(rules[(o, lv)])}
        for o, lv in sorted(hits)
    ]
    assert got == expected


# ---------------------------------------------------------------- errors


ERRORS = [
    ("SELEC 1", "SQL error"),
    ("SELECT * FROM nope", "table 'datafusion.public.nope' not found"),
    ("SELECT * FROM sigma_matches('nope')", "no table named 'nope'"),
    ("SELECT * FROM sigma_matches(1 + 1)", "expected a table name"),
    ("SELECT sigma_rule_ids(['a', 'b'], ['x']) FROM events", "each values list must have 2 items"),
]


@pytest.mark.parametrize(("sql", "message"), ERRORS)
def test_errors_are_one_clear_line(sql, message, ruleset, engine, event_batches):
    ctx = _context()
    ctx.register_record_batches("events", [event_batches])
    register(ctx, ruleset, engine=engine)
    with pytest.raises(Exception) as caught:
        ctx.sql(sql).collect()
    text = error_message(caught.value)
    assert message in text
    assert "\n" not in text and "Traceback" not in text and "PyErr" not in text


# ---------------------------------------------------------------- CLI


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from sigma_arrow.cli import main; main()", *args],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def rules_dir(ruleset: sa.RuleSet) -> str:
    return str(Path(next(iter(ruleset)).meta.path).parent)


OUTPUTS = ["jsonl", "json", "csv", "parquet"]


@pytest.mark.parametrize("fmt", OUTPUTS)
def test_cli_writes_results(fmt, tmp_path, rules_dir, data_files, engine, event_batches):
    out = tmp_path / f"out.{fmt}"
    query = (
        "SELECT rule_id, count(*) AS n, min(event_index) AS first "
        "FROM sigma_matches('events') GROUP BY rule_id ORDER BY rule_id"
    )
    done = _cli(
        "sql", "-r", rules_dir, "--table", f"events={data_files['parquet']}", "-e", query, "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    elif fmt == "json":
        rows = json.loads(out.read_text())
    elif fmt == "csv":
        import csv

        rows = [
            {k: int(v) if k != "rule_id" else v for k, v in r.items()} for r in csv.DictReader(out.open())
        ]
    else:
        rows = pq.read_table(out).to_pylist()
    expected = Counter(_engine_matches(engine, event_batches).column("rule_id").to_pylist())
    assert {r["rule_id"]: r["n"] for r in rows} == dict(expected)


def test_cli_prints_a_table_and_reads_ndjson(rules_dir, data_files):
    query = (
        "SELECT event['Computer'] AS host, count(*) AS hits FROM sigma_matches('ev') GROUP BY 1 ORDER BY 1"
    )
    done = _cli("sql", "-r", rules_dir, "-t", f"ev={data_files['ndjson']}", "-e", query)
    assert done.returncode == 0, done.stderr
    for host in HOSTS:
        assert host in done.stdout
    assert "3 row(s)" in done.stderr


def test_cli_runs_a_script_from_stdin(rules_dir, data_files):
    script = (
        "CREATE VIEW hits AS SELECT * FROM sigma_matches('events');\nSELECT count(*) AS total FROM hits;\n"
    )
    done = _cli("sql", "-r", rules_dir, "-t", f"events={data_files['parquet']}", stdin=script)
    assert done.returncode == 0, done.stderr
    assert "total" in done.stdout


CLI_ERRORS = [
    (["-e", "SELEC 1"], 1, "SQL error"),
    (["-e", "SELECT * FROM missing"], 1, "not found"),
    (["-e", "SELECT * FROM sigma_matches('missing')"], 1, "no table named 'missing'"),
    (["-t", "x=/nonexistent/file.parquet", "-e", "SELECT 1"], 1, "no such file"),
    (["-t", "nopath", "-e", "SELECT 1"], 2, "NAME=PATH"),
]


@pytest.mark.parametrize(("args", "code", "message"), CLI_ERRORS)
def test_cli_errors_are_one_line(args, code, message, rules_dir):
    done = _cli("sql", "-r", rules_dir, *args)
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    lines = [
        line for line in done.stderr.splitlines() if line.startswith("error") or line.startswith("Error")
    ]
    assert len(lines) == 1, done.stderr


SPLITS = [
    ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
    ("SELECT ';' AS x;", ["SELECT ';' AS x"]),
    ("-- comment; here\nSELECT 1", ["SELECT 1"]),
    (".tables\nSELECT 1;", [".tables", "SELECT 1"]),
    ("SELECT a.b FROM t", ["SELECT a.b FROM t"]),
]


@pytest.mark.parametrize(("text", "expected"), SPLITS)
def test_split_statements(text, expected):
    assert list(split_statements(text)) == expected


# ---------------------------------------------------------------- SigmaHQ rules on the EVTX attack samples

CHUNK = 40  # small predicates per SQL query in the to_sql comparison
SMALL_SQL = 5_000  # predicates up to this many characters are batched CHUNK to a query
# DataFusion's planning and evaluation grow steeply with predicate size (an 80 kB predicate: ~55 s on
# 8k rows), so predicates above this are not compared here (the report counts them).
MAX_SQL = 30_000
KEYWORD_TABLE_COLUMNS = 16  # string columns kept in the narrowed table keyword rules are compared on


@pytest.fixture(scope="module")
def sigmahq(sigma_rule_dirs: list[Path]) -> sa.RuleSet:
    return sa.load_rules(sigma_rule_dirs)


@pytest.fixture(scope="module")
def sigmahq_engine(sigmahq: sa.RuleSet) -> Any:
    return sa.Engine(sigmahq)


@pytest.fixture(scope="module")
def samples_parquet(evtx_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The EVTX attack samples, flattened by our readers, as one Parquet file (row order = read order)."""
    from sigma_arrow.errorlog import ErrorLog
    from sigma_arrow.readers.registry import expand_inputs, reader_for
    from sigma_arrow.sql import unify_batches

    errors = ErrorLog()
    batches = [
        batch
        for path in expand_inputs([str(evtx_samples)])
        for batch in reader_for(path).read(path, batch_size=65_536, errors=errors)
        if batch.num_rows
    ]
    out = tmp_path_factory.mktemp("samples") / "samples.parquet"
    pq.write_table(pa.Table.from_batches(unify_batches(batches)), out)
    return out


def _masks(engine: Any, table: pa.Table) -> dict[str, Any]:
    """Engine masks (rule id -> numpy bool array over the table's rows)."""
    import numpy as np

    parts = [engine.evaluate(batch) for batch in table.to_batches(max_chunksize=65_536)]
    return {
        name: np.concatenate([p.column(name).to_numpy(zero_copy_only=False) for p in parts])
        for name in parts[0].schema.names
    }


@pytest.fixture(scope="module")
def samples_masks(sigmahq_engine: Any, samples_parquet: Path) -> dict[str, Any]:
    return _masks(sigmahq_engine, pq.read_table(samples_parquet))


@pytest.mark.shared
@pytest.mark.slow
def test_sigmahq_matches_counts_equal_the_engine(sigmahq, sigmahq_engine, samples_parquet, samples_masks):
    ctx = _context()
    ctx.register_parquet("events", str(samples_parquet))
    register(ctx, sigmahq, engine=sigmahq_engine)
    got = ctx.sql("SELECT rule_id, count(*) AS n FROM sigma_matches('events') GROUP BY rule_id").to_pylist()
    expected = {rule_id: int(mask.sum()) for rule_id, mask in samples_masks.items() if mask.any()}
    assert {r["rule_id"]: r["n"] for r in got} == expected
    events = len(next(iter(samples_masks.values())))
    print(f"\n{len(expected)} rules fire, {sum(expected.values())} matches on {events} events")


@pytest.mark.shared
@pytest.mark.slow
def test_sigmahq_to_sql_selects_the_rows_the_engine_matches(
    sigmahq, sigmahq_engine, samples_parquet, samples_masks
):
    """Every rule's to_sql predicate, run by DataFusion, selects exactly the engine's rows."""
    import numpy as np

    from compiler.ir import has_keywords

    table = pq.read_table(samples_parquet)
    plain = [r for r in sigmahq if not has_keywords(r.predicate)]
    keyword = [r for r in sigmahq if has_keywords(r.predicate)]
    # Keyword rules search every string column (414 here: SQL predicates of up to 380 kB that take
    # a minute each), so they are compared on a narrower table, with the engine run on that same table.
    needed = {f for r in keyword for f in referenced_fields_of(r)}
    strings = sorted(
        (n for n in table.column_names if n not in (SOURCE_COLUMN, INDEX_COLUMN)),
        key=lambda n: -table.column(n).drop_null().__len__(),
    )
    narrow = table.select(
        [
            n
            for n in table.column_names
            if n in needed or n in strings[:KEYWORD_TABLE_COLUMNS] or n in (SOURCE_COLUMN, INDEX_COLUMN)
        ]
    )
    narrow_masks = _masks(sa.Engine(sa.RuleSet(rules=keyword)), narrow) if keyword else {}

    ctx = _context()
    ctx.register_parquet("events", str(samples_parquet))
    ctx.register_record_batches("narrow", [narrow.to_batches()])
    unsupported: Counter[str] = Counter()
    compared = too_large = 0
    mismatches: list[str] = []
    keys = zip(table.column(SOURCE_COLUMN).to_pylist(), table.column(INDEX_COLUMN).to_pylist(), strict=True)
    position = {key: row for row, key in enumerate(keys)}
    for name, rules, masks, arrow_table in (
        ("events", plain, samples_masks, table),
        ("narrow", keyword, narrow_masks, narrow),
    ):
        schema = ctx.table(name).schema()
        predicates: list[tuple[str, str]] = []
        for rule in rules:
            try:
                predicates.append((rule.id, sa.to_sql(rule, schema=schema)))
            except sa.UnsupportedError as exc:
                unsupported[exc.message.split(":")[0]] += 1
        small = [p for p in predicates if len(p[1]) <= SMALL_SQL]
        large = [p for p in predicates if SMALL_SQL < len(p[1]) <= MAX_SQL]
        too_large += len(predicates) - len(small) - len(large)
        groups = [small[i : i + CHUNK] for i in range(0, len(small), CHUNK)] + [[p] for p in large]
        for chunk in groups:
            columns = ", ".join(f"({sql}) AS c{i}" for i, (_, sql) in enumerate(chunk))
            result = ctx.sql(
                f'SELECT "{INDEX_COLUMN}", "{SOURCE_COLUMN}", {columns} FROM {name}'
            ).to_arrow_table()
            keys = list(
                zip(
                    result.column(SOURCE_COLUMN).to_pylist(),
                    result.column(INDEX_COLUMN).to_pylist(),
                    strict=True,
                )
            )
            order = np.array([position[key] for key in keys])  # DataFusion may return rows in any order
            assert sorted(order.tolist()) == list(range(arrow_table.num_rows))
            for i, (rule_id, _) in enumerate(chunk):
                got = np.zeros(arrow_table.num_rows, dtype=bool)
                got[order] = np.asarray(result.column(f"c{i}").to_numpy(zero_copy_only=False), dtype=bool)
                compared += 1
                if not np.array_equal(got, masks[rule_id]):
                    mismatches.append(
                        f"{rule_id}: sql {int(got.sum())} rows, engine {int(masks[rule_id].sum())}"
                    )
    print(
        f"\nto_sql compared on {compared} rules "
        f"({len(keyword)} keyword rules on {narrow.num_columns} columns); "
        f"{too_large} skipped (SQL text over {MAX_SQL} characters); "
        f"{sum(unsupported.values())} not supported by the SQL backend: {dict(unsupported)}"
    )
    assert not mismatches, mismatches[:20]
    assert compared > 0.9 * len(sigmahq)
    assert too_large < 0.02 * len(sigmahq)


def referenced_fields_of(rule: Any) -> frozenset[str]:
    from compiler.ir import referenced_fields

    return referenced_fields(rule.predicate)
