"""Parquet reader: pruning never changes results, unreferenced columns are not read, positions are exact."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from compiler import reference
from compiler.ir import And, Const, Exists, IsNull, Keyword, Node, Not, Or, StrMatch
from compiler.model import CompiledRule, Route, RuleMeta
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.readers.parquet import ParquetReader, RulePlan, ScanStats, resolve
from sigma_arrow.readers.prune import case_range
from sigma_arrow.schema import INDEX_COLUMN, SOURCE_COLUMN

# ---------------------------------------------------------------- helpers


class CountingHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """A local filesystem that counts the bytes read from each file (to prove columns are not read)."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()
        self.bytes_read: dict[str, int] = {}
        self.lock = threading.Lock()

    def count(self, path: str, n: int) -> None:
        with self.lock:
            self.bytes_read[path] = self.bytes_read.get(path, 0) + n

    def get_type_name(self) -> str:
        return "counting"

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.local.get_file_info(paths)  # type: ignore[no-any-return]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.local.get_file_info(selector)  # type: ignore[no-any-return]

    def open_input_file(self, path: str) -> Any:
        handler = self

        class Counting:
            def __init__(self) -> None:
                self.raw = open(path, "rb")  # noqa: SIM115
                self.closed = False

            def read(self, n: int = -1) -> bytes:
                data = self.raw.read(n)
                handler.count(path, len(data))
                return data

            def seek(self, pos: int, whence: int = 0) -> int:
                return self.raw.seek(pos, whence)

            def tell(self) -> int:
                return self.raw.tell()

            def close(self) -> None:
                self.closed = True
                self.raw.close()

            def readable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return True

            def size(self) -> int:
                return os.path.getsize(path)

        return pa.PythonFile(Counting(), mode="r")

    def open_input_stream(self, path: str) -> Any:
        return self.open_input_file(path)

    def normalize_path(self, path: str) -> str:
        return path

    def create_dir(self, *a: Any) -> None:
        raise NotImplementedError

    copy_file = delete_dir = delete_dir_contents = delete_file = move = create_dir
    delete_root_dir_contents = open_append_stream = open_output_stream = create_dir


def rule(rule_id: str, condition: Node, detection: Node) -> CompiledRule:
    return CompiledRule(RuleMeta(rule_id, rule_id), detection, (Route(condition, detection),))


def read_all(reader: ParquetReader, path: str, batch_size: int = 100) -> pa.Table:
    errors = ErrorLog()
    batches = list(reader.read(path, batch_size=batch_size, errors=errors))
    assert errors.total == 0, errors.examples
    if not batches:
        return pa.table({INDEX_COLUMN: pa.array([], pa.int64())})
    return pa.Table.from_batches(batches).unify_dictionaries() if len(batches) else pa.table({})


def matches(rules: list[CompiledRule], table: pa.Table) -> set[tuple[str, str, int]]:
    """(rule id, source, index) for every row the reference evaluator says a rule matches."""
    found = set()
    for row in table.to_pylist():
        for r in rules:
            if reference.evaluate_rule(r, row):
                found.add((r.id, row[SOURCE_COLUMN], row[INDEX_COLUMN]))
    return found


def reference_prefilter(rules: list[CompiledRule]) -> Any:
    def select(batch: pa.RecordBatch) -> pa.Array:
        return pa.array([any(reference.evaluate_rule(r, row) for r in rules) for row in batch.to_pylist()])

    return select


EVENT_IDS = [1, 1, 4688, 4688, 7, 7, 1, 4624] * 25  # 200 rows; row groups of 25 rows = 8 groups


def events_table(event_id_type: pa.DataType) -> pa.Table:
    n = len(EVENT_IDS)
    ids = pa.array(EVENT_IDS, pa.int64())
    if event_id_type != pa.int64():
        ids = ids.cast(event_id_type)
    return pa.table(
        {
            "EventID": ids,
            "Channel": [
                ("Security" if e in (4688, 4624) else "Microsoft-Windows-Sysmon/Operational")
                for e in EVENT_IDS
            ],
            "Image": [f"C:\\Windows\\x{i % 13}.exe" for i in range(n)],
            "CommandLine": [None if i % 5 == 0 else f"run {i}" for i in range(n)],
            "Other": [f"o{i}" for i in range(n)],
        }
    )


def sorted_by_event_id(table: pa.Table) -> pa.Table:
    return table.sort_by("EventID")


# ---------------------------------------------------------------- pruning never changes results

SYSMON_1 = And(
    (
        StrMatch("EventID", "equals", "1"),
        StrMatch("Channel", "equals", "microsoft-windows-sysmon/operational"),
    )
)
RULE_CASES: list[tuple[str, list[CompiledRule]]] = [
    ("sysmon-1", [rule("a", SYSMON_1, StrMatch("Image", "endswith", "x3.exe"))]),
    (
        "eid-4688-or-4624",
        [
            rule(
                "b",
                Or((StrMatch("EventID", "equals", "4688"), StrMatch("EventID", "equals", "4624"))),
                StrMatch("CommandLine", "contains", "1"),
            )
        ],
    ),
    ("eid-not-present", [rule("c", StrMatch("EventID", "equals", "9999"), Const(True))]),
    ("non-canonical-int-text", [rule("d", StrMatch("EventID", "equals", "01"), Const(True))]),
    ("unconditional", [rule("e", Const(True), StrMatch("Image", "endswith", "x1.exe"))]),
    ("missing-field", [rule("f", StrMatch("Provider_Name", "equals", "x"), Const(True))]),
    (
        "not-missing",
        [rule("g", Not(StrMatch("Provider_Name", "equals", "x")), StrMatch("Image", "endswith", "x2.exe"))],
    ),
    ("isnull-missing", [rule("h", IsNull("Provider_Name"), StrMatch("EventID", "equals", "7"))]),
    ("exists-null-column", [rule("i", Exists("CommandLine"), StrMatch("EventID", "equals", "4624"))]),
    (
        "channel-case",
        [rule("j", StrMatch("Channel", "equals", "SECURITY"), StrMatch("EventID", "equals", "4624"))],
    ),
    (
        "channel-cased-mismatch",
        [rule("k", StrMatch("Channel", "equals", "SECURITY", cased=True), Const(True))],
    ),
    ("keyword", [rule("l", Const(True), Keyword(StrMatch("*", "contains", "run 17")))]),
    (
        "two-rules",
        [rule("m", StrMatch("EventID", "equals", "7"), Const(True)), rule("n", SYSMON_1, Const(True))],
    ),
]
COLUMN_TYPES = [pa.int64(), pa.int32(), pa.string(), pa.uint16()]


@pytest.mark.parametrize("event_id_type", COLUMN_TYPES, ids=str)
@pytest.mark.parametrize(("case", "rules"), RULE_CASES, ids=[c for c, _ in RULE_CASES])
@pytest.mark.parametrize("include_event", [False, True])
def test_pruning_never_changes_matches(
    tmp_path: Path, event_id_type: pa.DataType, case: str, rules: list[CompiledRule], include_event: bool
) -> None:
    path = tmp_path / "events.parquet"
    # Sorted by EventID so row groups have narrow statistics (the case pruning is for).
    pq.write_table(sorted_by_event_id(events_table(event_id_type)), path, row_group_size=25)
    everything = read_all(ParquetReader(), str(path))
    expected = matches(rules, everything)

    stats = ScanStats()
    reader = ParquetReader(
        rules=rules, include_event=include_event, prefilter=reference_prefilter(rules), stats=stats
    )
    pruned = read_all(reader, str(path))
    assert matches(rules, pruned) == expected
    if include_event and "Other" not in stats.columns_read:  # late materialisation: matching rows only
        assert pruned.num_rows == len({(s, i) for _, s, i in expected})
        if expected:
            assert set(pruned.column_names) >= set(everything.column_names)
    assert stats.row_groups_read + stats.row_groups_pruned == stats.row_groups_total == 8


PRUNED_GROUPS = [
    # (rules, EventID type, row groups skipped out of 8: 75 rows of EID 1, 25 x 4624, 50 x 4688, 50 x 7)
    ([rule("x", StrMatch("EventID", "equals", "4624"), Const(True))], pa.int64(), 7),
    ([rule("x", StrMatch("EventID", "equals", "4624"), Const(True))], pa.string(), 7),
    ([rule("x", StrMatch("EventID", "equals", "9999"), Const(True))], pa.int64(), 8),
    ([rule("x", StrMatch("EventID", "equals", "01"), Const(True))], pa.int64(), 8),
    # Case-insensitive: "Microsoft-..." sorts below "SECURITY", so Sysmon-only groups are skipped ...
    ([rule("x", StrMatch("Channel", "equals", "security"), Const(True))], pa.int64(), 5),
    # ... but "Security" lies between "MICROSOFT-..." and "microsoft-...": nothing can be skipped.
    (
        [rule("x", StrMatch("Channel", "equals", "microsoft-windows-sysmon/operational"), Const(True))],
        pa.int64(),
        0,
    ),
    (
        [rule("x", StrMatch("Channel", "equals", "Microsoft-Windows-Sysmon/Operational", True), Const(True))],
        pa.int64(),
        3,
    ),
    ([rule("x", StrMatch("Provider_Name", "equals", "x"), Const(True))], pa.int64(), 8),
    ([rule("x", Const(True), Const(True))], pa.int64(), 0),
]


@pytest.mark.parametrize(("rules", "event_id_type", "skipped"), PRUNED_GROUPS)
def test_statistics_skip_row_groups(
    tmp_path: Path, rules: list[CompiledRule], event_id_type: pa.DataType, skipped: int
) -> None:
    path = tmp_path / "events.parquet"
    table = events_table(event_id_type)
    pq.write_table(
        table.take(pa.compute.sort_indices(table.column("EventID").cast(pa.int64()))), path, row_group_size=25
    )
    stats = ScanStats()
    read_all(ParquetReader(rules=rules, include_event=False, stats=stats), str(path))
    assert stats.row_groups_pruned == skipped
    assert stats.rows_read == (8 - skipped) * 25


def test_counting_filesystem_proves_skipped_row_groups_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    n = 4000
    pq.write_table(
        pa.table(
            {"EventID": [1] * (n // 2) + [2] * (n // 2), "Payload": [os.urandom(500).hex() for _ in range(n)]}
        ),
        path,
        row_group_size=n // 2,
    )
    results = {}
    for event_id in ("1", "3"):
        handler = CountingHandler()
        reader = ParquetReader(
            rules=[rule("x", StrMatch("EventID", "equals", event_id), Const(True))],
            filesystem=pafs.PyFileSystem(handler),
        )
        rows = sum(b.num_rows for b in reader.read(str(path), batch_size=500, errors=ErrorLog()))
        results[event_id] = (rows, handler.bytes_read[str(path)])
    size = path.stat().st_size
    assert results["1"][0] == n // 2 and results["3"][0] == 0
    assert results["1"][1] < 0.7 * size  # one of two row groups
    assert results["3"][1] < 0.05 * size  # footer only


# ---------------------------------------------------------------- column pruning


def big_column_file(path: Path) -> None:
    n = 2000
    pq.write_table(
        pa.table(
            {
                "EventID": [1, 4688] * (n // 2),
                "Image": [f"c:\\x{i}.exe" for i in range(n)],
                "SystemTime": [f"2024-01-01T00:00:{i % 60:02d}Z" for i in range(n)],
                "Huge": [os.urandom(2000).hex() for _ in range(n)],  # ~8 MB, incompressible
            }
        ),
        path,
        row_group_size=500,
        compression="zstd",
    )


@pytest.mark.parametrize(
    ("include_event", "with_prefilter", "huge_read"),
    [(False, False, False), (True, True, False), (True, False, True)],
)
def test_unreferenced_column_is_not_read(
    tmp_path: Path, include_event: bool, with_prefilter: bool, huge_read: bool
) -> None:
    path = tmp_path / "big.parquet"
    big_column_file(path)
    # endswith: the detection cannot prune by Image statistics, so every row group is read.
    rules = [rule("x", StrMatch("EventID", "equals", "1"), StrMatch("Image", "endswith", "\\x10.exe"))]
    handler = CountingHandler()
    stats = ScanStats()
    reader = ParquetReader(
        rules=rules,
        include_event=include_event,
        prefilter=reference_prefilter(rules) if with_prefilter else None,
        filesystem=pafs.PyFileSystem(handler),
        stats=stats,
    )
    table = read_all(reader, str(path), batch_size=256)
    size = path.stat().st_size
    read = handler.bytes_read[str(path)]
    assert ("Huge" in stats.columns_read) == huge_read
    if huge_read:
        assert read > 0.9 * size
    else:
        # The one matching row's row group is re-read in full for its event (late materialisation).
        assert read < (0.3 * size if with_prefilter else 0.05 * size)
    if with_prefilter:
        assert table.column(INDEX_COLUMN).to_pylist() == [10]
        assert "Huge" in table.column_names
    if not include_event:
        assert "Huge" not in table.column_names and "SystemTime" in table.column_names


def test_plan_collects_fields_and_keywords() -> None:
    plan = RulePlan.from_rules(
        [
            rule(
                "a",
                StrMatch("EventID", "equals", "1"),
                And((StrMatch("Image", "endswith", "x"), Exists("User"))),
            ),
            rule("b", Const(True), Keyword(StrMatch("*", "contains", "evil"))),
        ]
    )
    assert plan.fields == {"EventID", "Image", "User"}
    assert plan.keywords


# ---------------------------------------------------------------- positions, sources, layouts


def test_positions_are_file_positions_and_original_columns_win(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    table = events_table(pa.int64())
    pq.write_table(table, plain, row_group_size=30)
    archived = tmp_path / "archived.parquet"
    original = table.append_column(
        SOURCE_COLUMN, pa.array(["C:/logs/a.evtx"] * table.num_rows)
    ).append_column(INDEX_COLUMN, pa.array(range(1000, 1000 + table.num_rows), pa.int64()))
    pq.write_table(original, archived, row_group_size=30)
    rules = [rule("x", StrMatch("EventID", "equals", "4624"), Const(True))]
    expected = [i for i, e in enumerate(EVENT_IDS) if e == 4624]

    got = read_all(ParquetReader(rules=rules, prefilter=reference_prefilter(rules)), str(plain), batch_size=7)
    assert got.column(INDEX_COLUMN).to_pylist() == expected
    assert set(got.column(SOURCE_COLUMN).to_pylist()) == {str(plain)}

    got = read_all(
        ParquetReader(rules=rules, prefilter=reference_prefilter(rules)), str(archived), batch_size=7
    )
    assert got.column(INDEX_COLUMN).to_pylist() == [1000 + i for i in expected]
    assert set(got.column(SOURCE_COLUMN).to_pylist()) == {"C:/logs/a.evtx"}


@pytest.mark.parametrize("dictionary", [False, True])
def test_a_rewritten_file_is_read_anew(tmp_path: Path, dictionary: bool) -> None:
    """Footers are kept between reads of a file, but never past a change of the file."""
    path = tmp_path / "events.parquet"
    for values in (["a", "b", "c"], ["d", "e"], ["f", "g", "h", "i"]):
        pq.write_table(pa.table({"Image": values}), path)
        os.utime(path, ns=(0, 0))  # the same modification time each time: the size must tell
        for _ in range(2):
            got = read_all(ParquetReader(dictionary=dictionary), str(path), batch_size=10)
            assert got.column("Image").to_pylist() == values


def test_hive_partitions_are_columns_and_prune(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    layout = {
        ("Security", "4688"): 3,
        ("Security", "4624"): 4,
        ("Microsoft-Windows-Sysmon%2FOperational", "1"): 5,
    }
    for (channel, event_id), n in layout.items():
        directory = root / f"Channel={channel}" / f"EventID={event_id}"
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"Image": [f"x{i}.exe" for i in range(n)]}), directory / "part-0.parquet")
    (root / "_SUCCESS").write_text("")
    rules = [rule("x", StrMatch("Channel", "equals", "microsoft-windows-sysmon/operational"), Const(True))]
    stats = ScanStats()
    got = read_all(ParquetReader(rules=rules, stats=stats), str(root))
    assert stats.files == 3 and stats.row_groups_pruned == 2
    assert got.num_rows == 5
    assert set(got.column("Channel").to_pylist()) == {"Microsoft-Windows-Sysmon/Operational"}
    assert set(got.column("EventID").to_pylist()) == {"1"}
    everything = read_all(ParquetReader(), str(root))
    assert everything.num_rows == 12
    assert matches(rules, everything) == matches(rules, got)


def test_globs_uris_and_directories_resolve(tmp_path: Path) -> None:
    for name in ("a.parquet", "b.parquet", "sub/c.parquet", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            pq.write_table(pa.table({"x": [1]}), tmp_path / name)
        else:
            (tmp_path / name).write_text("hi")
    cases = {
        str(tmp_path): ["a.parquet", "b.parquet", "sub/c.parquet"],
        str(tmp_path / "*.parquet"): ["a.parquet", "b.parquet"],
        str(tmp_path / "**" / "*.parquet"): ["a.parquet", "b.parquet", "sub/c.parquet"],
        "file://" + str(tmp_path / "sub"): ["sub/c.parquet"],
        str(tmp_path / "b.parquet"): ["b.parquet"],
    }
    for path, expected in cases.items():
        _, files = resolve(path)
        assert [os.path.relpath(f.display, tmp_path) for f in files] == expected, path


def test_bad_file_is_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    errors = ErrorLog()
    rows = sum(b.num_rows for b in ParquetReader().read(str(tmp_path), batch_size=10, errors=errors))
    assert rows == 2
    assert errors.counts["parquet"] == 1 and errors.examples[0].source.endswith("b.parquet")


@pytest.mark.parametrize(
    ("value", "variants"),
    [
        ("EventID", ["eventid", "EVENTID", "EventId"]),
        ("4688", ["4688"]),
        ("kernel", ["\u212aernel", "KERNEL"]),
    ],
)
def test_case_range_contains_every_case_variant(value: str, variants: list[str]) -> None:
    low, high = case_range(value)
    assert low is not None and high is not None
    for variant in variants:
        assert low <= variant <= high


def test_columns_null_in_a_row_group_are_not_decoded_but_come_back_null(tmp_path: Path) -> None:
    # "Sparse" holds values in the second row group only, "Empty" nowhere: their all-null row
    # groups are skipped by the footer's null counts, yet every batch has every column, in order.
    rows = 60
    table = pa.table(
        {
            "EventID": [str(i % 3) for i in range(rows)],
            "Sparse": [None] * 30 + [f"v{i}" for i in range(30)],
            "Empty": pa.nulls(rows, pa.string()),
            "Count": pa.array([None] * 30 + list(range(30)), pa.int64()),
        }
    )
    path = tmp_path / "sparse.parquet"
    pq.write_table(table, path, row_group_size=30)
    assert pq.ParquetFile(path).metadata.row_group(0).column(1).statistics.null_count == 30
    stats = ScanStats()
    reader = ParquetReader(stats=stats)
    got = read_all(reader, str(path), batch_size=30)
    assert got.select(table.column_names).equals(table)
    assert got.column_names[: len(table.column_names)] == table.column_names
    metadata = pq.ParquetFile(path).metadata
    empty_chunks = sum(
        metadata.row_group(g).column(c).total_compressed_size for g, c in ((0, 1), (0, 2), (1, 2), (0, 3))
    )
    assert stats.bytes_read == stats.bytes_total - empty_chunks
