"""Time the per-rule expression backends on one typical rule over a synthetic process_creation batch.

Run: python bench/backends_bench.py [rows]   (prints seconds and events/s per backend; no assertions)
"""

from __future__ import annotations

import random
import sys
import time

import datafusion
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from compiler import reference
from compiler.backends import datafusion_expr, polars_expr, pyarrow_expr, sql
from compiler.backends.context import Context
from compiler.ir import And, Cidr, Compare, Not, Or, Regex, StrMatch, Wildcard

RULE = And(
    (
        StrMatch("EventID", "equals", "1"),
        Or(
            (
                StrMatch("Image", "endswith", "\\powershell.exe"),
                StrMatch("OriginalFileName", "equals", "PowerShell.EXE"),
            )
        ),
        Or(
            (
                StrMatch("CommandLine", "contains", " -enc "),
                Wildcard("CommandLine", "*-e* JAB*"),
                Regex("CommandLine", r"frombase64string\(", "i"),
            )
        ),
        Not(StrMatch("ParentImage", "endswith", "\\explorer.exe")),
        Not(Cidr("SourceIp", "10.0.0.0/8")),
        Not(Compare("ProcessId", "lt", 4)),
    )
)


def make_batch(rows: int) -> pa.Table:
    rng = random.Random(7)
    images = [
        "C:\\Windows\\System32\\cmd.exe",
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
    ]
    lines = [
        "cmd /c whoami",
        "powershell -nop -enc JABzAD0AbgBlAHcA",
        "powershell [Convert]::FromBase64String('x')",
    ]
    return pa.table(
        {
            "EventID": pa.array([rng.choice([1, 1, 3, 4688]) for _ in range(rows)], pa.int64()),
            "Image": [rng.choice(images) for _ in range(rows)],
            "OriginalFileName": [rng.choice(["Cmd.Exe", "PowerShell.EXE"]) for _ in range(rows)],
            "CommandLine": [rng.choice(lines) + f" {i}" for i in range(rows)],
            "ParentImage": [rng.choice(["C:\\Windows\\explorer.exe", "C:\\x\\svc.exe"]) for _ in range(rows)],
            "SourceIp": [rng.choice(["10.1.2.3", "192.168.1.4", "fe80::1"]) for _ in range(rows)],
            "ProcessId": [str(rng.randint(0, 9000)) for _ in range(rows)],
        }
    )


def timed(name: str, rows: int, run: object) -> int:
    assert callable(run)
    start = time.perf_counter()
    hits = int(run())
    elapsed = time.perf_counter() - start
    print(f"{name:>12}: {elapsed:7.3f} s  {rows / elapsed:12,.0f} events/s  ({hits} hits)")
    return hits


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    table = make_batch(rows)
    ctx = Context.from_arrow(table.schema)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    session = datafusion.SessionContext()
    session.from_arrow(table, name="t")
    counts = {
        "pyarrow": timed(
            "pyarrow", rows, lambda: ds.dataset(table).count_rows(filter=pyarrow_expr.translate(RULE, ctx))
        ),
        "polars": timed("polars", rows, lambda: frame.filter(polars_expr.translate(RULE, ctx)).height),
        "datafusion": timed(
            "datafusion",
            rows,
            lambda: session.table("t").filter(datafusion_expr.translate(RULE, ctx)).count(),
        ),
        "sql": timed(
            "sql",
            rows,
            lambda: session.sql(f"SELECT count(*) AS c FROM t WHERE {sql.translate(RULE, ctx)}").to_pydict()[
                "c"
            ][0],
        ),
    }
    sample = table.slice(0, min(rows, 20_000)).to_pylist()
    counts_ref = timed("reference", len(sample), lambda: sum(reference.evaluate(RULE, r) for r in sample))
    print(
        f"hits agree: {len(set(counts.values())) == 1}; reference on first {len(sample)} rows: {counts_ref}"
    )


if __name__ == "__main__":
    main()
