"""convert: EVTX/JSON -> Parquet archive; scanning it finds exactly what scanning the originals finds."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import sigma_arrow as sa
from sigma_arrow.cli import cli
from sigma_arrow.convert import ArchiveWriter, convert, split_by_partition
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers.parquet import ParquetReader, ScanStats
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

SAMPLE_FILES = [
    "Execution/Sysmon_Exec_CompiledHTML.evtx",
    "Defense Evasion/DE_Fake_ComputerAccount_4720.evtx",
    "Credential Access/CA_hashdump_4663_4656_lsass_access.evtx",
    "Execution/sysmon_lolbas_rundll32_zipfldr_routethecall_shell.evtx",
    "Privilege Escalation/Runas_4624_4648_Webshell_CreateProcessAsUserA.evtx",
    "Lateral Movement/LM_DCOM_MSHTA_LethalHTA_Sysmon_3_1.evtx",
    "Execution/exec_sysmon_lobin_regsvr32_sct.evtx",
    "Privilege Escalation/4624 LT3 AnonymousLogon Localhost - JuicyPotato.evtx",
]
PARTITIONINGS: list[list[str]] = [[], ["Channel", "EventID"], ["date"]]

RULES = {
    "encoded.yml": """
title: Encoded PowerShell
id: 11111111-0000-0000-0000-000000000001
level: high
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\\powershell.exe'
    CommandLine|contains: ' -enc '
  condition: selection
""",
    "whoami.yml": """
title: Whoami
id: 11111111-0000-0000-0000-000000000002
level: medium
logsource: {product: windows, category: process_creation}
detection:
  selection:
    Image|endswith: '\\whoami.exe'
  condition: selection
""",
    "late_field.yml": """
title: Field that appears only late in the input
id: 11111111-0000-0000-0000-000000000003
level: low
logsource: {product: windows, service: security}
detection:
  selection:
    EventID: 4624
    LateField: 'found'
  condition: selection
""",
}


def keys(batches: object) -> list[tuple[str, str, int]]:
    out = []
    for m in batches:  # type: ignore[attr-defined]
        out += zip(
            m.column("rule_id").to_pylist(),
            m.column("source").to_pylist(),
            m.column("event_index").to_pylist(),
            strict=True,
        )
    return sorted(out)


def write_events(path: Path, n: int = 600) -> None:
    """NDJSON events: Sysmon process creations and Security logons; a field that appears only late."""
    lines = []
    for i in range(n):
        if i % 3 == 0:
            event = {
                "EventID": 4624,
                "Channel": "Security",
                "LogonType": i % 11,
                "SystemTime": f"2024-03-0{1 + i % 3}T10:00:00Z",
            }
            if i > n - 50:
                event["LateField"] = "found" if i % 2 else "other"
        else:
            image = [
                "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                "C:\\Windows\\System32\\whoami.exe",
                "C:\\x.exe",
            ][(i // 3) % 3]
            event = {
                "EventID": 1,
                "Channel": "Microsoft-Windows-Sysmon/Operational",
                "Image": image,
                "CommandLine": f"{image} -enc AAA{i}" if i % 5 == 0 else image,
                "SystemTime": f"2024-03-0{1 + i % 3}T10:00:{i % 60:02d}Z",
            }
        lines.append(json.dumps(event))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def json_rules(tmp_path_factory: pytest.TempPathFactory) -> sa.RuleSet:
    directory = tmp_path_factory.mktemp("rules")
    for name, text in RULES.items():
        (directory / name).write_text(text)
    ruleset = sa.load_rules([directory])
    assert len(ruleset) == 3, ruleset.errors
    return ruleset


@pytest.mark.parametrize("partition_by", PARTITIONINGS, ids=lambda p: ",".join(p) or "flat")
def test_json_round_trip(tmp_path: Path, json_rules: sa.RuleSet, partition_by: list[str]) -> None:
    events = tmp_path / "events.jsonl"
    write_events(events)
    archive = tmp_path / "archive"
    stats = convert([str(events)], archive, partition_by=partition_by, batch_size=100, row_group_size=128)
    assert stats.events == 600 and stats.inputs == 1
    original = keys(sa.scan([str(events)], json_rules))
    assert any(rule_id.endswith("3") for rule_id, _, _ in original)  # the late field is in the archive
    assert len({r for r, _, _ in original}) == 3
    for include_event in (True, False):
        assert keys(sa.scan([str(archive)], json_rules, include_event=include_event)) == original
    assert keys(sa.scan([archive.as_uri()], json_rules)) == original  # pyarrow filesystem URIs
    # Matches point back to the original file and record.
    assert {source for _, source, _ in original} == {str(events)}
    files = sorted(archive.rglob("*.parquet"))
    if partition_by == ["Channel", "EventID"]:
        assert {f.parent.relative_to(archive).as_posix() for f in files} == {
            "Channel=Security/EventID=4624",
            "Channel=Microsoft-Windows-Sysmon%2FOperational/EventID=1",
        }
    if partition_by == ["date"]:
        assert {f.parent.name for f in files} == {"date=2024-03-01", "date=2024-03-02", "date=2024-03-03"}
        table = pa.Table.from_batches(
            ParquetReader().read(str(archive / "date=2024-03-01"), batch_size=1000, errors=ErrorLog())
        )
        assert "date" not in table.column_names  # derived key: not an event field


def test_partition_pruning_skips_other_partitions(tmp_path: Path, json_rules: sa.RuleSet) -> None:
    events = tmp_path / "events.jsonl"
    write_events(events)
    archive = tmp_path / "archive"
    convert([str(events)], archive, partition_by=["Channel", "EventID"], row_group_size=1000)
    only_security = sa.RuleSet(rules=[r for r in json_rules.rules if r.id.endswith("3")])
    stats = ScanStats()
    reader = ParquetReader(rules=only_security, stats=stats)
    rows = sum(b.num_rows for b in reader.read(str(archive), batch_size=1000, errors=ErrorLog()))
    assert stats.files == 2 and stats.row_groups_pruned == 1
    assert rows == 200  # the Security partition only


def test_schema_growth_rolls_files_and_keeps_every_row(tmp_path: Path) -> None:
    def batch(start: int, columns: dict[str, str]) -> pa.RecordBatch:
        data = {name: [value] * 10 for name, value in columns.items()}
        data[SOURCE_COLUMN] = ["in.json"] * 10
        data[INDEX_COLUMN] = list(range(start, start + 10))
        return pa.RecordBatch.from_pydict(data)

    with ArchiveWriter(tmp_path / "a", row_group_size=10) as writer:
        writer.write(batch(0, {"A": "1"}))
        writer.write(batch(10, {"A": "2", "B": "x"}))
        writer.write(batch(20, {"A": "3"}))
        writer.write(batch(30, {"C": "y"}))
    assert writer.stats.files == 3  # {A}, then {A, B}, then {A, B, C}
    batches = ParquetReader().read(str(tmp_path / "a"), batch_size=5, errors=ErrorLog())
    table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")
    assert sorted(table.column(INDEX_COLUMN).to_pylist()) == list(range(40))
    rows = {r[INDEX_COLUMN]: r for r in table.to_pylist()}
    assert rows[15]["B"] == "x" and rows[35]["C"] == "y" and rows[25]["A"] == "3"


def test_split_by_partition_keeps_row_order() -> None:
    batch = pa.RecordBatch.from_pydict(
        {"Channel": ["b", "a", None, "b", "a/x"], SOURCE_COLUMN: ["s"] * 5, INDEX_COLUMN: [0, 1, 2, 3, 4]}
    )
    parts = {d: b.column(INDEX_COLUMN).to_pylist() for d, b in split_by_partition(batch, ["Channel"])}
    assert parts == {
        "Channel=b": [0, 3],
        "Channel=a": [1],
        "Channel=__HIVE_DEFAULT_PARTITION__": [2],
        "Channel=a%2Fx": [4],
    }


def test_convert_cli(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    write_events(events, n=30)
    with events.open("a") as handle:
        handle.write("{not json\n")
    runner = CliRunner()
    archive = tmp_path / "archive"
    errors = tmp_path / "errors.jsonl"
    result = runner.invoke(
        cli,
        ["convert", str(events), "-o", str(archive), "--partition-by", "EventID", "--errors", str(errors)],
    )
    assert result.exit_code == 1, result.output  # one bad record: reported, the rest converted
    assert "converted 30 events" in result.output
    problem = orjson.loads(errors.read_text().splitlines()[0])
    assert problem["source"] == str(events) and problem["kind"] == "json"
    assert {p.parent.name for p in archive.rglob("*.parquet")} == {"EventID=1", "EventID=4624"}

    result = runner.invoke(cli, ["convert", str(events), "-o", str(archive)])
    assert result.exit_code == 1 and "not empty" in result.output
    result = runner.invoke(cli, ["convert", str(events), "-o", str(archive), "--append"])
    assert result.exit_code == 1 and len(list(archive.rglob("*.parquet"))) == 3


@pytest.mark.shared
@pytest.mark.parametrize("partition_by", PARTITIONINGS, ids=lambda p: ",".join(p) or "flat")
def test_evtx_round_trip(
    tmp_path: Path, evtx_samples: Path, sigma_rule_dirs: list[Path], partition_by: list[str]
) -> None:
    windows = sigma_rule_dirs[0] / "windows"
    rules = sa.load_rules([windows / "process_creation", windows / "builtin" / "security"])
    inputs = [str(evtx_samples / name) for name in SAMPLE_FILES]
    archive = tmp_path / "archive"
    stats = convert(inputs, archive, partition_by=partition_by, row_group_size=64)
    assert stats.inputs == len(inputs)
    engine = sa.Engine(rules)
    original = keys(sa.scan(inputs, rules, engine=engine))
    assert len(original) >= 10
    assert keys(sa.scan([str(archive)], rules, engine=engine)) == original
    assert keys(sa.scan([str(archive)], rules, engine=engine, include_event=False)) == original


def test_row_groups_are_full_whatever_the_input_batch_size(tmp_path: Path) -> None:
    with ArchiveWriter(tmp_path / "a", row_group_size=1000) as writer:
        for i in range(37):
            writer.write(
                pa.RecordBatch.from_pydict(
                    {
                        "A": ["x"] * 333,
                        SOURCE_COLUMN: ["s"] * 333,
                        INDEX_COLUMN: list(range(i * 333, (i + 1) * 333)),
                    }
                )
            )
    metadata = pq.ParquetFile(next((tmp_path / "a").glob("*.parquet"))).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [1000] * 12 + [37 * 333 - 12_000]
