"""Query Sigma detections with SQL in a DataFusion session.

    python examples/sql_session.py                      # built-in demo rules and events
    python examples/sql_session.py RULES EVENTS         # your rules; EVENTS: Parquet, .jsonl, .evtx, ...

Shows sigma_matches (match records), a join with an asset table, detections per host and level,
sigma_annotate, the scalar sigma_rule_ids, the sigma_rules table and to_sql.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pyarrow as pa
from datafusion import SessionConfig, SessionContext

import sigma_arrow as sa
from sigma_arrow.sql import register_path

DEMO_RULE = """
title: Whoami Execution
id: 6f0e5b8e-0000-4000-8000-000000000001
status: test
level: medium
logsource: {product: windows, category: process_creation}
detection:
  selection: {Image|endswith: '\\\\whoami.exe'}
  condition: selection
"""

DEMO_EVENTS = [
    {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": "1", "Computer": "ws1",
     "Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami /all"},
    {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": "1", "Computer": "ws2",
     "Image": "C:\\Windows\\explorer.exe", "CommandLine": "explorer.exe"},
    {"Channel": "Security", "EventID": "4688", "Computer": "dc1",
     "NewProcessName": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "whoami"},
]  # fmt: skip


def show(ctx: SessionContext, title: str, sql: str) -> None:
    print(f"-- {title}\n{sql.strip()}")
    for row in ctx.sql(sql).to_pylist():
        print("  ", row)
    print()


def main(argv: list[str]) -> None:
    # Mixed-case Sigma field names (Computer, EventID) without double quotes; plain (non-view) strings.
    config = (
        SessionConfig()
        .set("datafusion.sql_parser.enable_ident_normalization", "false")
        .set("datafusion.execution.parquet.schema_force_view_types", "false")
    )
    ctx = SessionContext(config)
    if len(argv) >= 2:
        rules = sa.load_rules([argv[0]])
        register_path(ctx, "events", argv[1])  # flattened exactly like `sigma-arrow scan`
    else:
        folder = Path(tempfile.mkdtemp())
        (folder / "whoami.yml").write_text(DEMO_RULE)
        rules = sa.load_rules([folder])
        names = sorted({key for event in DEMO_EVENTS for key in event})
        events = pa.RecordBatch.from_pylist(DEMO_EVENTS, schema=pa.schema([(n, pa.string()) for n in names]))
        ctx.register_record_batches("events", [[events]])
    print(f"{len(rules)} rules loaded ({len(rules.errors)} not loaded)\n")

    sa.register(ctx, rules)  # sigma_matches, sigma_annotate, sigma_rule_ids, sigma_rules
    ctx.register_record_batches(
        "assets",
        [[pa.RecordBatch.from_pylist([
            {"host": "ws1", "owner": "alice", "criticality": "low"},
            {"host": "ws2", "owner": "bob", "criticality": "low"},
            {"host": "dc1", "owner": "it", "criticality": "high"},
        ])]],
    )  # fmt: skip

    show(
        ctx,
        "hits per rule",
        """
        SELECT rule_id, rule_title, count(*) AS hits
        FROM sigma_matches('events') GROUP BY rule_id, rule_title ORDER BY hits DESC LIMIT 10""",
    )
    show(
        ctx,
        "detections per host and level",
        """
        SELECT event['Computer'] AS host, rule_level, count(*) AS hits
        FROM sigma_matches('events') GROUP BY 1, 2 ORDER BY hits DESC LIMIT 10""",
    )
    show(
        ctx,
        "join with an asset table: hits per owner",
        """
        SELECT a.owner, a.criticality, count(*) AS hits, count(DISTINCT m.rule_id) AS rules
        FROM sigma_matches('events') AS m
        JOIN assets AS a ON a.host = m.event['Computer']
        GROUP BY a.owner, a.criticality ORDER BY hits DESC""",
    )
    show(
        ctx,
        "every event with its matching rule ids",
        """
        SELECT Computer, rule_ids FROM sigma_annotate('events') WHERE cardinality(rule_ids) > 0 LIMIT 5""",
    )
    show(
        ctx,
        "the scalar function on named columns",
        """
        SELECT Computer, sigma_rule_ids(['Channel', 'EventID', 'Image', 'NewProcessName'],
                                        [Channel, EventID, Image, NewProcessName]) AS ids
        FROM events LIMIT 5"""
        if len(argv) < 2
        else "SELECT 1 AS skipped",
    )
    show(ctx, "rules by level", "SELECT level, count(*) AS n FROM sigma_rules GROUP BY level ORDER BY n DESC")

    rule = next(iter(rules))
    schema = ctx.table("events").schema()
    try:
        predicate = sa.to_sql(rule, schema=schema)
    except sa.UnsupportedError as exc:
        print(f"-- {rule.id} has no SQL form: {exc}")
        return
    show(
        ctx, f"rule {rule.id} as a plain SQL predicate", f"SELECT count(*) AS n FROM events WHERE {predicate}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
