"""Distributed scans on a Dask LocalCluster give exactly the local scan's matches, in a fixed order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from click.testing import CliRunner

import sigma_arrow as sa
from sigma_arrow.cli import cli
from sigma_arrow.convert import convert
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers.parquet import ScanStats

distributed = pytest.importorskip("distributed")

RULES = {
    "encoded.yml": """
title: Encoded PowerShell
id: 22222222-0000-0000-0000-000000000001
level: high
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\\powershell.exe'
    CommandLine|contains: ' -enc '
  condition: selection
""",
    "logon.yml": """
title: Network logon
id: 22222222-0000-0000-0000-000000000002
level: low
logsource: {product: windows, service: security}
detection:
  selection:
    EventID: 4624
    LogonType: 3
  condition: selection
""",
    "any_powershell.yml": """
title: Any PowerShell
id: 22222222-0000-0000-0000-000000000003
level: informational
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\\powershell.exe'
  condition: selection
""",
}


def write_events(path: Path, n: int, seed: int) -> None:
    lines = []
    for i in range(n):
        if (i + seed) % 4 == 0:
            event: dict[str, Any] = {"EventID": 4624, "Channel": "Security", "LogonType": (i + seed) % 7}
        else:
            image = ["C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "C:\\x.exe"][i % 2]
            event = {
                "EventID": 1,
                "Channel": "Microsoft-Windows-Sysmon/Operational",
                "Image": image,
                "CommandLine": f"{image} -enc QQ{i}" if i % 3 == 0 else image,
            }
        event["SystemTime"] = f"2024-05-0{1 + i % 2}T00:00:{i % 60:02d}Z"
        lines.append(json.dumps(event))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dask")
    rules_dir = root / "rules"
    rules_dir.mkdir()
    for name, text in RULES.items():
        (rules_dir / name).write_text(text)
    ruleset = sa.load_rules([rules_dir])
    assert len(ruleset) == 3, ruleset.errors
    first, second = root / "a.jsonl", root / "b.jsonl"
    write_events(first, 700, 0)
    write_events(second, 300, 1)
    archive = root / "archive"
    convert([str(first)], archive, partition_by=["Channel"], row_group_size=100)
    return {"rules": ruleset, "rules_dir": rules_dir, "archive": archive, "jsonl": second}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


def records(batches: Iterable[pa.RecordBatch]) -> list[dict[str, Any]]:
    """Match records with the event's null fields dropped (batches may carry other events' columns)."""
    out = []
    for batch in batches:
        for row in batch.to_pylist():
            if "event" in row:
                row["event"] = {k: v for k, v in row["event"].items() if v is not None}
            out.append(row)
    return out


def key(rules: sa.RuleSet, row: dict[str, Any]) -> tuple[str, int, int]:
    order = [r.id for r in rules.rules]
    return (row["source"], row["event_index"], order.index(row["rule_id"]))


@pytest.mark.parametrize("include_event", [True, False])
def test_dask_scan_equals_local_scan(data: dict[str, Any], client: Any, include_event: bool) -> None:
    inputs = [str(data["archive"]), str(data["jsonl"])]
    rules = data["rules"]
    local = records(sa.scan(inputs, rules, include_event=include_event))
    stats = ScanStats()
    errors = ErrorLog()
    remote = records(
        sa_dask(
            inputs,
            rules,
            client,
            include_event=include_event,
            stats=stats,
            errors=errors,
            row_groups_per_task=1,
        )
    )
    assert errors.total == 0
    assert len(remote) == len(local) > 50
    assert sorted(remote, key=lambda r: key(rules, r)) == sorted(local, key=lambda r: key(rules, r))
    assert remote == sorted(remote, key=lambda r: key(rules, r))  # deterministic order
    assert stats.rows_read == 1000 and stats.rows_total == 700  # rows_total: the archive's rows
    assert stats.files == 2 and stats.row_groups_total == 8
    assert {r["source"] for r in remote} == {str(data["archive"].parent / "a.jsonl"), str(data["jsonl"])}


def sa_dask(*args: Any, **kwargs: Any) -> Iterator[pa.RecordBatch]:
    from sigma_arrow.distributed import scan_dask

    return scan_dask(*args, **kwargs)


def test_scan_cli_with_dask_scheduler_address(data: dict[str, Any], client: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["scan", "-r", str(data["rules_dir"]), str(data["archive"]), "--no-event"]
    local = runner.invoke(cli, base)
    remote = runner.invoke(cli, [*base, "--dask", client.scheduler.address])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    local_rows = [orjson.loads(line) for line in local.stdout.splitlines() if line.startswith("{")]
    remote_rows = [orjson.loads(line) for line in remote.stdout.splitlines() if line.startswith("{")]
    assert len(remote_rows) > 50
    assert sorted(map(str, remote_rows)) == sorted(map(str, local_rows))


def test_local_cluster_from_spec_and_missing_scheduler(data: dict[str, Any]) -> None:
    from compiler.errors import InputError

    inputs = [str(data["archive"])]
    local = records(sa.scan(inputs, data["rules"], include_event=False))
    remote = records(sa_dask(inputs, data["rules"], "local[1]", include_event=False))
    assert sorted(map(str, remote)) == sorted(map(str, local))
    with pytest.raises(InputError):
        list(sa_dask(inputs, data["rules"], "tcp://127.0.0.1:1", connect_timeout=2))
