"""The DuckDB peer: SigmaHQ rules -> pySigma DuckDB backend SQL -> one query per rule over the Parquet.

This is what a DuckDB user does today: convert every rule with ``pysigma-backend-duckdb`` (with the
Sysmon + Windows-logsource pipelines, which add the ``EventID``/``Channel`` conditions), load the
events into a table named ``logs`` and run each rule's ``SELECT * FROM logs WHERE ...``.

Columns a query names but the data lacks are added as NULL text columns before timing (a real
lake table has a wide schema; otherwise those queries would fail to bind). Queries that still fail
(e.g. a text column compared with a number) are counted and excluded. Correlation rules are skipped:
the peer measures per-event detection, as our engine does.

Run standalone (one JSON line on stdout)::

    python -m bench.duckdb_peer --parquet bench/data/attack-....parquet --rows 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.datasets import DEFAULT_DATA_DIR, DEFAULT_SHARED

MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')


def default_rule_dirs(shared: Path = DEFAULT_SHARED) -> list[Path]:
    """The SigmaHQ corpus: rules, rules-emerging-threats, rules-threat-hunting."""
    sigma = shared / "sigma"
    return [sigma / "rules", sigma / "rules-emerging-threats", sigma / "rules-threat-hunting"]


def _rule_files(rule_dirs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for root in rule_dirs:
        files.extend(sorted(root.rglob("*.yml")) if root.is_dir() else [root])
    return files


def _cache_key(files: list[Path]) -> str:
    digest = hashlib.sha1()
    for name in ("pysigma", "pysigma-backend-duckdb", "pysigma-pipeline-sysmon", "pysigma-pipeline-windows"):
        digest.update(metadata.version(name).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def convert_rules(rule_dirs: Sequence[Path], cache_dir: Path = DEFAULT_DATA_DIR) -> dict[str, Any]:
    """Convert every detection rule to DuckDB SQL (cached): queries plus what could not be converted."""
    files = _rule_files(rule_dirs)
    cache = cache_dir / f"duckdb-queries-{_cache_key(files)}.json"
    if cache.exists():
        cached: dict[str, Any] = json.loads(cache.read_text())
        cached["conversion_cached"] = True
        return cached

    from sigma.collection import SigmaCollection
    from sigma.pipelines.sysmon import sysmon_pipeline
    from sigma.pipelines.windows import windows_logsource_pipeline
    from sigma.rule import SigmaRule
    from sigma_backend_duckdb import DuckDBBackend

    started = time.perf_counter()
    backend = DuckDBBackend(processing_pipeline=sysmon_pipeline() + windows_logsource_pipeline())
    queries: list[dict[str, str]] = []
    failures: Counter[str] = Counter()
    detection_rules = 0
    for path in files:
        try:
            collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"))
        except Exception as error:
            failures[f"parse: {type(error).__name__}"] += 1
            continue
        for rule in collection.rules:
            if not isinstance(rule, SigmaRule):
                continue  # correlation rules: not per-event detection
            detection_rules += 1
            try:
                converted = backend.convert_rule(rule)
            except Exception as error:
                failures[type(error).__name__] += 1
                continue
            for number, sql in enumerate(converted):
                queries.append({"id": f"{rule.id}#{number}" if number else str(rule.id), "sql": str(sql)})
    result = {
        "rule_files": len(files),
        "detection_rules": detection_rules,
        "converted_rules": len({q["id"].split("#")[0] for q in queries}),
        "queries": queries,
        "conversion_failures": dict(failures.most_common()),
        "conversion_seconds": round(time.perf_counter() - started, 2),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    result["conversion_cached"] = False
    return result


def _case_unique_columns(names: Sequence[str]) -> list[str]:
    """DuckDB identifiers are case-insensitive: keep the first of names differing only in case."""
    seen: set[str] = set()
    keep: list[str] = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            keep.append(name)
    return keep


def run_peer(
    parquet: Path,
    rows: int | None,
    rule_dirs: Sequence[Path],
    threads: int | None = None,
    count_only: bool = False,
) -> dict[str, Any]:
    """Load ``rows`` events (a prefix; all when None) into DuckDB and run every converted rule's query.

    ``count_only`` runs ``SELECT count(*)`` instead of the backend's ``SELECT *`` (no matched rows are
    fetched; on a wide table this is several times faster).
    """
    import duckdb
    import pyarrow.parquet as pq

    conversion = convert_rules(rule_dirs)
    queries: list[dict[str, str]] = conversion.pop("queries")
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")

    names = _case_unique_columns(pq.read_schema(parquet).names)
    select = ", ".join('"' + n.replace('"', '""') + '"' for n in names)
    source = f"read_parquet('{parquet}')"
    limit = f" LIMIT {int(rows)}" if rows else ""

    # Schema preparation (untimed): bind every query on an empty table, adding columns it names.
    con.execute(f"CREATE TABLE logs AS SELECT {select} FROM {source} LIMIT 0")
    added: set[str] = set()
    runnable: list[dict[str, str]] = []
    bind_failures: Counter[str] = Counter()
    for query in queries:
        for _ in range(50):
            try:
                con.execute(f"EXPLAIN {query['sql']}")
                runnable.append(query)
                break
            except duckdb.BinderException as error:
                missing = MISSING_COLUMN.search(str(error))
                if not missing or missing.group(1).lower() in {a.lower() for a in added}:
                    bind_failures["binder"] += 1
                    break
                column = missing.group(1)
                con.execute(f'ALTER TABLE logs ADD COLUMN "{column}" VARCHAR')
                added.add(column)
            except duckdb.Error as error:
                bind_failures[type(error).__name__] += 1
                break

    started = time.perf_counter()
    con.execute(f"INSERT INTO logs BY NAME SELECT {select} FROM {source}{limit}")
    loaded = time.perf_counter()
    row_count = con.execute("SELECT count(*) FROM logs").fetchone()[0]

    matches = 0
    rules_matched = 0
    runtime_failures: Counter[str] = Counter()
    ran = 0
    query_started = time.perf_counter()
    for query in runnable:
        try:
            if count_only:
                found = con.execute(query["sql"].replace("SELECT *", "SELECT count(*)", 1)).fetchone()[0]
            else:  # the matched events, as a user fetches them
                found = con.execute(query["sql"]).to_arrow_table().num_rows
        except duckdb.Error as error:
            runtime_failures[type(error).__name__] += 1
            continue
        ran += 1
        matches += found
        rules_matched += found > 0
    finished = time.perf_counter()

    total = finished - started
    backend_version = metadata.version("pysigma-backend-duckdb")
    return {
        "engine": f"duckdb {duckdb.__version__}, pysigma-backend-duckdb {backend_version}",
        "rows": row_count,
        "select": "count(*)" if count_only else "*",
        "rule_files": conversion["rule_files"],
        "detection_rules": conversion["detection_rules"],
        "converted_rules": conversion["converted_rules"],
        "queries": len(queries),
        "queries_ran": ran,
        "conversion_failures": conversion["conversion_failures"],
        "conversion_seconds": conversion["conversion_seconds"],
        "conversion_cached": conversion["conversion_cached"],
        "bind_failures": dict(bind_failures),
        "runtime_failures": dict(runtime_failures),
        "columns_added": len(added),
        "load_seconds": round(loaded - started, 3),
        "query_seconds": round(finished - query_started, 3),
        "seconds": round(total, 3),
        "events_per_second": row_count / total if total > 0 else 0.0,
        "matches": matches,
        "rules_matched": rules_matched,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the peer once and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.duckdb_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--parquet", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=None, help="use only the first N events")
    parser.add_argument("--rules", type=Path, action="append", help="rule file/dir (default: SigmaHQ corpus)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--count", action="store_true", help="SELECT count(*) instead of SELECT *")
    args = parser.parse_args(argv)
    result = run_peer(args.parquet, args.rows, args.rules or default_rule_dirs(), args.threads, args.count)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
