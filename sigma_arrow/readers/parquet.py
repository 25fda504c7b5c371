"""Parquet archives: column pruning, partition/statistics pruning, late materialisation, exact positions.

How a scan reads an archive (files, directories, hive partitions, globs, ``s3://``/``gs://``/``file://``):

1. Files are listed through a pyarrow filesystem; ``key=value`` directories are hive partition keys.
2. Each file's footer is read. Every row group is checked against the loaded rules with a three-valued
   evaluation of each rule's predicate (route condition and detection) over the row group's min/max
   statistics and the file's partition keys (``prune.py``): a row group is skipped only when *no* rule
   can match any of its rows, so pruning never changes results.
3. The surviving row groups are read one at a time, as the consumer pulls (``batch_size`` rows per
   batch, decoded with threads; memory stays bounded by one row group), reading only the columns the
   rules reference (plus the timestamp fields and every string column when a rule has keywords).
4. With an engine prefilter (late materialisation), each pruned batch is evaluated and only the rows
   some rule matches are re-read with all their columns, so events in the output cost nothing for the
   rows that do not match.

Positions: ``__event_index`` is the row's position in its file (row group start from the footer plus
the position inside the row group: rows inside a row group are never filtered away, only whole row
groups are skipped). When the file has ``__source``/``__event_index`` columns (an archive written by
``sigma-arrow convert``) those are kept: matches point back to the original EVTX/JSON record.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from compiler.ir import KEYWORD_FIELD, FieldRef, Keyword, Node, has_keywords, referenced_fields, walk
from compiler.model import CompiledRule
from sigma_arrow.engine.columns import IntArray
from sigma_arrow.engine.sparse import SparseBatch
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import flatten_table
from sigma_arrow.readers.prune import RowGroupFacts, could_match
from sigma_arrow.schema import INDEX_COLUMN, RESERVED_COLUMNS, SOURCE_COLUMN, TIMESTAMP_FIELDS

try:
    from sigma_arrow import _cdict
except ImportError:  # pragma: no cover - the extension is built by setup.py
    _cdict = None  # type: ignore[assignment]

#: File names a directory scan reads (others, and names starting with ``_`` or ``.``, are skipped).
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
#: Parquet key-value metadata key naming partition keys that are not event fields (e.g. ``date``).
DERIVED_KEYS_METADATA = b"sigma_arrow.derived_partition_keys"
#: Hive's marker for a null partition value.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"

#: Coalesced batches stop growing at this many bytes (wide events: memory stays bounded).
COALESCE_BYTES = 64 << 20
#: Rows per batch when a row group is re-read for the few rows a prefilter selected.
MATERIALISE_BATCH_ROWS = 8192
#: With ``dictionary``, the reader merges only batches smaller than this (small files or row groups):
#: its consumer merges bigger ones itself (``SparseBatch.concat``), without the full copy a merge of
#: record batches costs.
DICTIONARY_MERGE_ROWS = 65_536
#: A Parquet scan's string columns (``dictionary``): what the native chunk decoder gives.
_DICT_STRING = pa.dictionary(pa.int32(), pa.string())
#: Turns a pruned batch into a boolean mask of the rows some rule matches.
Prefilter = Callable[[pa.RecordBatch], pa.Array]


@dataclass
class ScanStats:
    """What a Parquet scan read and skipped (summed over every ``read`` of one reader)."""

    files: int = 0
    row_groups_total: int = 0
    row_groups_pruned: int = 0
    row_groups_read: int = 0
    rows_total: int = 0
    rows_read: int = 0
    rows_materialised: int = 0
    #: Compressed bytes of the column chunks in every file / of those actually read (both passes).
    bytes_total: int = 0
    bytes_read: int = 0
    columns_read: set[str] = field(default_factory=set)

    def merge(self, other: ScanStats) -> None:
        """Add another scan's figures to these."""
        for name in ("files", "row_groups_total", "row_groups_pruned", "row_groups_read", "rows_total"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("rows_read", "rows_materialised", "bytes_total", "bytes_read"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.columns_read |= other.columns_read

    def as_dict(self) -> dict[str, Any]:
        """Return the figures as a plain dict (columns sorted)."""
        data = asdict(self)
        data["columns_read"] = sorted(self.columns_read)
        return data


class RulePlan:
    """What a set of rules needs from an archive: the fields they read and what can prune.

    ``predicates`` (one per rule; a row group no predicate can match is skipped) are
    made at once; ``fields`` and ``keywords`` walk every rule tree, so only when column pruning asks
    for them: a scan that writes whole events never does (in a forked scan worker the walk would
    also copy the shared rule pages it touches).
    """

    def __init__(self, rules: Iterable[Any]) -> None:
        """Plan from a RuleSet (rules, filters and correlations) or an iterable of CompiledRule."""
        self._compiled: list[CompiledRule] = list(getattr(rules, "rules", rules))
        self._filters = list(getattr(rules, "filters", ()))
        self._correlations = list(getattr(rules, "correlations", ()))
        self.predicates: tuple[Node, ...] = tuple(rule.predicate for rule in self._compiled)

    @classmethod
    def from_rules(cls, rules: Iterable[Any]) -> RulePlan:
        """Plan from a RuleSet (rules, filters and correlations) or an iterable of CompiledRule."""
        return cls(rules)

    @functools.cached_property
    def _walked(self) -> tuple[frozenset[str], bool]:
        names: set[str] = set()
        keywords = False
        # A rule's routes mostly share its detection tree: each tree object is walked once.
        seen: set[int] = set()
        for rule in self._compiled:
            for tree in (rule.detection, *(n for r in rule.routes for n in (r.condition, r.detection))):
                if id(tree) in seen:
                    continue
                seen.add(id(tree))
                keywords = _add_fields(tree, names) or keywords
        for sigma_filter in self._filters:
            names |= referenced_fields(sigma_filter.detection)
            keywords = keywords or has_keywords(sigma_filter.detection)
        for correlation in self._correlations:
            names |= set(correlation.group_by)
            names |= {str(v) for k, v in correlation.condition if k == "field"}
            names |= {target for _, pairs in correlation.aliases for _, target in pairs}
        return frozenset(names), keywords

    @property
    def fields(self) -> frozenset[str]:
        """Every field some rule, filter or correlation reads."""
        return self._walked[0]

    @property
    def keywords(self) -> bool:
        """Whether some rule or filter searches keywords (every string column)."""
        return self._walked[1]


def _add_fields(tree: Node, names: set[str]) -> bool:
    """Add the fields a tree reads to ``names`` (``referenced_fields``); return whether it has keywords."""
    keywords = False
    for node in walk(tree):
        name = getattr(node, "field", None)
        if isinstance(name, str) and name != KEYWORD_FIELD:
            names.add(name)
        if isinstance(node, Keyword):
            keywords = True
        if isinstance(node, FieldRef):
            names.add(node.other)
    return keywords


_PLANS: list[tuple[Any, RulePlan]] = []


def _plan_for(rules: Iterable[Any]) -> RulePlan:
    """Plan for a rule set, cached: a scan makes one reader per input, all with the same rules."""
    for known, plan in _PLANS:
        if known is rules:
            return plan
    plan = RulePlan.from_rules(rules)
    _PLANS.insert(0, (rules, plan))
    del _PLANS[4:]
    return plan


# ---------------------------------------------------------------- locating files


@dataclass(frozen=True)
class ParquetFile:
    """One file of an archive: where it is, how to name it in matches, its hive partition keys."""

    path: str  # path inside ``filesystem``
    display: str  # what ``__source`` says when the file has no source column of its own
    keys: tuple[tuple[str, str | None], ...]


_GLOB_CHARS = re.compile(r"[*?\[]")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob with ``**`` (any depth), ``*`` and ``?`` (within one path segment)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            end = pattern.find("]", i + 1) if pattern[i] == "[" else -1
            if end > 0:
                out.append(fnmatch.translate(pattern[i : end + 1])[4:-3])
                i = end + 1
            else:
                out.append(re.escape(pattern[i]))
                i += 1
    return re.compile("".join(out) + r"\Z")


def _hive_keys(relative_dir: str) -> tuple[tuple[str, str | None], ...]:
    keys: list[tuple[str, str | None]] = []
    for segment in relative_dir.split("/"):
        name, sep, value = segment.partition("=")
        if sep and name:
            text = unquote(value)
            keys.append((unquote(name), None if text == HIVE_NULL else text))
    return tuple(keys)


def _hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) and "=" not in part for part in relative.split("/"))


def resolve(
    path: str, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, list[ParquetFile]]:
    """Return the filesystem and the Parquet files a path, directory, glob or URI names (sorted)."""
    prefix = ""
    if filesystem is None:
        if "://" in path:
            scheme = path.split("://", 1)[0]
            filesystem, inner = pafs.FileSystem.from_uri(path)
            prefix = "" if scheme == "file" else f"{scheme}://"
        else:
            filesystem, inner = pafs.LocalFileSystem(), path
    else:
        inner = path
    glob = _GLOB_CHARS.search(inner)
    if glob:
        base = inner[: glob.start()].rpartition("/")[0] or "."
        matcher = _glob_regex(inner)
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File and matcher.match(i.path)]
        base_dir = base
    else:
        info = filesystem.get_file_info(inner)
        if info.type == pafs.FileType.Directory:
            infos = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
            candidates = [
                i.path
                for i in infos
                if i.type == pafs.FileType.File and not _hidden(posixpath.relpath(i.path, inner))
            ]
            suffixed = [p for p in candidates if p.lower().endswith(PARQUET_SUFFIXES)]
            files = suffixed or candidates
            base_dir = inner
        elif info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(path)
        else:
            files = [inner]
            # A lone file: its hive keys are the ``k=v`` directories right above it.
            parts = posixpath.dirname(inner).split("/")
            depth = 0
            while depth < len(parts) and "=" in parts[len(parts) - 1 - depth]:
                depth += 1
            base_dir = "/".join(parts[: len(parts) - depth]) or "/"
    result = []
    for file_path in sorted(files):
        relative_dir = posixpath.dirname(posixpath.relpath(file_path, base_dir))
        result.append(ParquetFile(file_path, prefix + file_path, _hive_keys(relative_dir)))
    return filesystem, result


# ---------------------------------------------------------------- the reader


_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


def _is_string(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        return _is_string(data_type.value_type)
    return data_type in _STRING_TYPES


def _is_nested(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_nested(data_type))


def needed_columns(schema: pa.Schema, plan: RulePlan | None, extra: Iterable[str] = ()) -> list[str]:
    """Return the columns of ``schema`` a plan needs (conservative: a column is kept when it might be needed).

    A column is kept when a rule names it (case-insensitively, or as the last part of a dotted name
    such as ``Event.EventData.Image`` for ``Image``), when it is a timestamp field or reserved, when it
    is nested (flattening may turn it into a referenced field), and, if a rule has keywords, when it
    is a string column.
    """
    if plan is None:
        return list(schema.names)
    wanted = {name.lower() for name in (*plan.fields, *TIMESTAMP_FIELDS, *extra)}
    wanted_tails = {name.rsplit(".", 1)[-1] for name in wanted}
    keep = []
    for f in schema:
        lower = f.name.lower()
        if (
            f.name in RESERVED_COLUMNS
            or lower in wanted
            or lower.rsplit(".", 1)[-1] in wanted_tails
            or _is_nested(f.type)
            or (plan.keywords and _is_string(f.type))
        ):
            keep.append(f.name)
    return keep


class ParquetReader:
    """Reads Parquet files, directories, hive-partitioned archives, globs and URIs as event batches.

    ``rules`` (a RuleSet or CompiledRules) turns on column pruning (unless ``include_event`` without a
    ``prefilter``) and row-group pruning; ``prefilter`` (see ``engine_prefilter``) turns on late
    materialisation: only the rows it selects are read with all their columns. ``stats`` collects
    what was read. ``row_groups`` restricts a read to some row groups of one file (distributed scans).

    ``dictionary``: string columns come as dictionary arrays (``dictionary<int32, string>``), as
    Parquet stores them: the strings of every row are never materialised (about half the decoding
    CPU of wide Windows logs) and the native engine takes the codes as its distinct-value index
    instead of hashing every value. For consumers that handle dictionary columns (``SparseBatch``,
    the native engine); batches of up to ``DICTIONARY_MERGE_ROWS`` rows are merged, bigger ones left
    for the consumer to merge.

    ``sparse`` (implies ``dictionary``): yield ``SparseBatch``es, for consumers that take them (the
    scan's workers). Flat string column chunks that are dictionary-encoded (the usual Parquet
    layout) are then decoded natively (``_cdict.decode_chunk``) straight into the rows holding a
    value, their codes and the dictionary, without Arrow's dense dictionary arrays: about half the
    decoding CPU of wide sparse logs. Other columns (and chunks the decoder does not handle) are
    read by Arrow as before; the batches hold the same values either way.
    """

    name = "parquet"

    def __init__(
        self,
        *,
        rules: Iterable[Any] | RulePlan | None = None,
        include_event: bool = True,
        prefilter: Prefilter | None = None,
        prune: bool = True,
        filesystem: pafs.FileSystem | None = None,
        use_threads: bool = True,
        batch_readahead: int = 1,
        fragment_readahead: int = 1,
        max_batch_bytes: int = COALESCE_BYTES,
        stats: ScanStats | None = None,
        dictionary: bool = False,
        sparse: bool = False,
    ) -> None:
        if rules is None or isinstance(rules, RulePlan):
            self.plan = rules
        else:
            self.plan = _plan_for(rules)
        self.include_event = include_event
        self.prefilter = prefilter
        self.prune = prune
        self.filesystem = filesystem
        self.use_threads = use_threads
        self.batch_readahead = batch_readahead
        self.fragment_readahead = fragment_readahead
        self.max_batch_bytes = max_batch_bytes
        self.stats = stats if stats is not None else ScanStats()
        self.dictionary = dictionary or sparse
        self.sparse = sparse and _cdict is not None

    def read(
        self,
        path: str,
        *,
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None = None,
        row_groups: Sequence[int] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Yield event batches (flattened fields + ``__source``/``__event_index``) from ``path``."""
        try:
            filesystem, files = resolve(path, self.filesystem)
        except (OSError, ValueError, pa.ArrowException) as exc:
            errors.report(path, None, "file", f"cannot list Parquet input: {exc}")
            return
        yield from self.read_files(
            filesystem,
            [(file, row_groups) for file in files],
            batch_size=batch_size,
            errors=errors,
            columns=columns,
        )

    def read_files(
        self,
        filesystem: pafs.FileSystem,
        files: Sequence[tuple[ParquetFile, Sequence[int] | None]],
        *,
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Like ``read``, for files ``resolve`` listed, each with the row groups to read (None: all).

        Parallel scans split an archive into work units of a few row groups with this.
        """
        units = []
        for file, row_groups in files:
            unit = self._open(filesystem, file, errors, row_groups)
            if unit is not None:
                units.append(unit)
        scanned = (
            batch
            for group in _schema_groups(units)
            for batch in self._scan(filesystem, group, batch_size, errors, columns)
        )
        merge_rows = min(batch_size, DICTIONARY_MERGE_ROWS) if self.dictionary else batch_size
        yield from coalesce(scanned, merge_rows, self.max_batch_bytes)

    # ------------------------------------------------------------ planning one file

    def _open(
        self,
        filesystem: pafs.FileSystem,
        file: ParquetFile,
        errors: ErrorLog,
        only: Sequence[int] | None,
    ) -> _FileUnit | None:
        try:
            fragment, metadata, physical, scanned = footer(filesystem, file.path, self.dictionary)
        except (OSError, ValueError, StopIteration, pa.ArrowException) as exc:
            errors.report(file.display, None, "parquet", f"cannot read Parquet footer: {exc}")
            return None
        derived = set()
        if physical.metadata and DERIVED_KEYS_METADATA in physical.metadata:
            derived = set(physical.metadata[DERIVED_KEYS_METADATA].decode().split(","))
        constants = {k: v for k, v in file.keys if k not in derived and k not in physical.names}
        schema = scanned
        for key in constants:
            schema = schema.append(pa.field(key, pa.string()))
        trusted_keys = {k: v for k, v in file.keys if k not in derived}
        offsets = []
        total = 0
        for i in range(metadata.num_row_groups):
            offsets.append(total)
            total += metadata.row_group(i).num_rows
        wanted = range(metadata.num_row_groups) if only is None else only
        # A distributed task reads some row groups of a file: count the file once, by its first group.
        self.stats.files += 1 if only is None or 0 in only else 0
        keep = []
        for i in wanted:
            row_group = metadata.row_group(i)
            self.stats.row_groups_total += 1
            self.stats.rows_total += row_group.num_rows
            self.stats.bytes_total += sum(
                row_group.column(c).total_compressed_size for c in range(row_group.num_columns)
            )
            facts = RowGroupFacts.from_metadata(physical, row_group, trusted_keys)
            if self.prune and self.plan is not None and not could_match(self.plan.predicates, facts):
                self.stats.row_groups_pruned += 1
                continue
            keep.append(i)
        return _FileUnit(file, fragment, metadata, schema, constants, offsets, keep)

    # ------------------------------------------------------------ scanning

    def _scan(
        self,
        filesystem: pafs.FileSystem,
        units: list[_FileUnit],
        batch_size: int,
        errors: ErrorLog,
        columns: Sequence[str] | None,
    ) -> Iterator[pa.RecordBatch]:
        units = [u for u in units if u.row_groups]
        if not units:
            return
        schema = units[0].schema
        all_columns = [n for n in schema.names if n not in units[0].constants]
        if columns is not None:
            wanted = {c.lower() for c in (*columns, *TIMESTAMP_FIELDS)}
            first_pass = [n for n in all_columns if n in RESERVED_COLUMNS or n.lower() in wanted]
        elif self.plan is not None and (self.prefilter is not None or not self.include_event):
            first_pass = needed_columns(pa.schema([schema.field(n) for n in all_columns]), self.plan)
        else:
            first_pass = all_columns
        materialise = (
            self.prefilter is not None and self.include_event and set(first_pass) != set(all_columns)
        )
        self.stats.columns_read |= set(first_pass)

        todo = units
        while todo:
            failed = yield from self._scan_units(
                filesystem, todo, schema, batch_size, errors, all_columns, first_pass, materialise
            )
            # A file that cannot be read is reported; the files after it are still scanned.
            todo = todo[todo.index(failed) + 1 :] if failed is not None else []

    def _scan_units(
        self,
        filesystem: pafs.FileSystem,
        units: list[_FileUnit],
        schema: pa.Schema,
        batch_size: int,
        errors: ErrorLog,
        all_columns: list[str],
        first_pass: list[str],
        materialise: bool,
    ) -> Generator[pa.RecordBatch, None, _FileUnit | None]:
        """Scan some files' surviving row groups; returns the file that failed to read, if any.

        Row groups are read one at a time, pulled by the consumer: a dataset scanner over many row
        groups decodes ahead of a slow consumer (the engine) without bound in practice (a whole 1M-row
        file, ~1.5 GB of Arrow data, measured), which dominated the scan's peak memory.
        """
        dataset_schema = pa.schema([schema.field(n) for n in all_columns])
        native = self.sparse and not materialise and not any(_is_nested(t) for t in dataset_schema.types)
        local = isinstance(filesystem, pafs.LocalFileSystem)
        for unit in units:
            chunks = _native_chunks(unit, dataset_schema) if native else {}
            handle: Any = None
            try:
                for group in unit.row_groups:
                    current = (unit, group)
                    # Columns the footer says hold no value in this row group are not decoded (wide logs:
                    # hundreds of them, each costing as much to read as a small column with data); they
                    # come back as null columns in their place, so batches look exactly as before.
                    empty = _all_null_columns(unit.metadata.row_group(group), first_pass)
                    reading = [n for n in first_pass if n not in empty] if empty else first_pass
                    self._count_read(current, reading)
                    group_rows = unit.metadata.row_group(group).num_rows
                    if chunks and first_pass and 0 < group_rows <= batch_size:
                        try:
                            if handle is None:
                                handle = filesystem.open_input_file(unit.file.path)
                            sparse_batch = self._read_sparse(
                                current,
                                handle,
                                local,
                                chunks,
                                reading,
                                first_pass,
                                dataset_schema,
                                batch_size,
                            )
                        except (OSError, pa.ArrowException) as exc:
                            errors.report(
                                unit.file.display, None, "parquet", f"cannot read Parquet data: {exc}"
                            )
                            return unit
                        self.stats.rows_read += sparse_batch.num_rows
                        yield sparse_batch
                        continue
                    batches = self._row_group_batches(unit, group, dataset_schema, reading, batch_size)
                    seen = 0
                    pending: list[pa.Array] = []
                    while True:
                        try:
                            record_batch = next(batches)
                        except StopIteration:
                            break
                        except (OSError, pa.ArrowException) as exc:
                            errors.report(
                                unit.file.display, None, "parquet", f"cannot read Parquet data: {exc}"
                            )
                            return unit
                        if empty:
                            record_batch = _with_null_columns(record_batch, first_pass, dataset_schema)
                        batch = self._finish(record_batch, unit, unit.offsets[group] + seen)
                        seen += batch.num_rows
                        self.stats.rows_read += batch.num_rows
                        if not materialise or self.prefilter is None:
                            # Every column is read anyway: a prefilter would only evaluate the rows twice.
                            yield batch
                            continue
                        mask = self.prefilter(batch)
                        positions = pc.indices_nonzero(mask)
                        if len(positions):
                            pending.append(pc.add(positions, pa.scalar(seen - batch.num_rows, pa.uint64())))
                    if pending:
                        yield from self._materialise(
                            current, pending, batch_size, all_columns, first_pass, errors
                        )
            finally:
                if handle is not None:
                    handle.close()
        return None

    def _read_sparse(
        self,
        current: tuple[_FileUnit, int],
        handle: Any,
        local: bool,
        chunks: dict[str, tuple[int, int]],
        reading: list[str],
        first_pass: list[str],
        dataset_schema: pa.Schema,
        batch_size: int,
    ) -> SparseBatch:
        """Read one row group as a SparseBatch: flat dictionary string chunks natively, the rest by Arrow."""
        unit, group = current
        row_group = unit.metadata.row_group(group)
        n = row_group.num_rows
        decoded: dict[str, tuple[IntArray | None, pa.Array]] = {}
        spans: list[tuple[str, int, int, int, int]] = []  # (column, max def, start, bytes, codec)
        for name in reading:
            known = chunks.get(name)
            if known is None:
                continue
            index, max_def = known
            chunk = row_group.column(index)
            codec = _NATIVE_CODECS.get(chunk.compression)
            if codec is None or (codec == _ZSTD and not _zstd_ready()):
                continue
            # Where the chunk starts: its dictionary page when it has one (as Arrow's reader finds it).
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                start = chunk.dictionary_page_offset
            spans.append((name, max_def, start, chunk.total_compressed_size, codec))
        whole: memoryview | None = None
        first = min((span[2] for span in spans), default=0)
        if spans and not local:
            # Object stores: one request for the row group's chunks, not one per column.
            last = max(span[2] + span[3] for span in spans)
            whole = memoryview(handle.read_at(last - first, first))
        for name, max_def, start, size, codec in spans:
            data = (
                handle.read_at(size, start) if whole is None else whole[start - first : start - first + size]
            )
            found = _cdict.decode_chunk(data, n, max_def, codec)
            if found is None:
                continue  # a layout the decoder does not handle: Arrow reads the column
            rows, codes, offsets, values = found
            dictionary = pa.Array.from_buffers(
                pa.string(), len(offsets) // 4 - 1, [None, pa.py_buffer(offsets), pa.py_buffer(values)]
            )
            array = pa.DictionaryArray.from_buffers(
                _DICT_STRING, len(codes) // 4, [None, pa.py_buffer(codes)], dictionary
            )
            decoded[name] = (None if rows is None else np.frombuffer(rows, dtype=np.int32), array)
        rest = [name for name in reading if name not in decoded]
        record_batch: pa.RecordBatch | None = None
        if rest:
            batches = list(self._row_group_batches(unit, group, dataset_schema, rest, batch_size))
            if len(batches) == 1:
                record_batch = batches[0]
            else:
                table = pa.Table.from_batches(
                    batches, schema=pa.schema([dataset_schema.field(c) for c in rest])
                )
                record_batch = table.combine_chunks().to_batches()[0]
        full = _with_null_columns(record_batch, first_pass, dataset_schema, n)
        batch = self._finish(full, unit, unit.offsets[group])
        return SparseBatch.from_batch(batch).with_sparse_columns(decoded)

    def _row_group_batches(
        self, unit: _FileUnit, group: int, schema: pa.Schema, columns: list[str], batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        """Read the ``columns`` of one row group of a file with Arrow."""
        return iter(
            unit.fragment.subset(row_group_ids=[group]).to_batches(
                schema=schema,
                columns=columns,
                batch_size=batch_size,
                batch_readahead=self.batch_readahead,
                fragment_readahead=self.fragment_readahead,
                use_threads=self.use_threads,
            )
        )

    def _count_read(self, current: tuple[_FileUnit, int], names: Sequence[str]) -> None:
        unit, group = current
        self.stats.row_groups_read += 1
        self.stats.bytes_read += _chunk_bytes(unit, group, names)

    def _finish(self, batch: pa.RecordBatch, unit: _FileUnit, start: int) -> pa.RecordBatch:
        """Add partition constants and the reserved columns (kept when the file has its own)."""
        n = batch.num_rows
        if any(pa.types.is_struct(t) for t in batch.schema.types):
            batch = flatten_table(batch)
        for key, value in unit.constants.items():
            batch = batch.append_column(key, pa.array([value] * n, pa.string()))
        names = batch.schema.names
        if SOURCE_COLUMN not in names:
            source = _repeated(unit.file.display, n, dictionary=self.dictionary)
            batch = _set_column(batch, SOURCE_COLUMN, source)
        elif batch.column(SOURCE_COLUMN).null_count:
            own = batch.column(SOURCE_COLUMN).cast(pa.string())
            source = pc.coalesce(own, _repeated(unit.file.display, n, dictionary=False))
            batch = _set_column(batch, SOURCE_COLUMN, source)
        if INDEX_COLUMN not in names or batch.column(INDEX_COLUMN).null_count:
            index = pa.array(np.arange(start, start + n, dtype=np.int64))
            if INDEX_COLUMN in names:
                index = pc.coalesce(batch.column(INDEX_COLUMN).cast(pa.int64()), index)
            batch = _set_column(batch, INDEX_COLUMN, index)
        return batch

    def _materialise(
        self,
        current: tuple[_FileUnit, int],
        pending: list[pa.Array],
        batch_size: int,
        all_columns: list[str],
        first_pass: list[str],
        errors: ErrorLog,
    ) -> Iterator[pa.RecordBatch]:
        """Re-read one row group with every column and keep the selected rows (late materialisation)."""
        unit, group = current
        wanted = pa.chunked_array(pending, pa.uint64()).combine_chunks()
        remaining = [n for n in all_columns if n not in first_pass]
        self.stats.bytes_read += _chunk_bytes(unit, group, remaining)
        fragment = unit.fragment.subset(row_group_ids=[group])
        seen = 0
        full_batches = iter(
            fragment.to_batches(
                schema=pa.schema([unit.schema.field(n) for n in all_columns]),
                columns=all_columns,
                batch_size=min(batch_size, MATERIALISE_BATCH_ROWS),
                use_threads=self.use_threads,
            )
        )
        while True:
            try:
                batch = next(full_batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:
                errors.report(unit.file.display, None, "parquet", f"cannot re-read row group {group}: {exc}")
                return
            lo, hi = seen, seen + batch.num_rows
            seen = hi
            inside = pc.and_(pc.greater_equal(wanted, lo), pc.less(wanted, hi))
            local = pc.subtract(wanted.filter(inside), pa.scalar(lo, pa.uint64()))
            if len(local) == 0:
                continue
            full = self._finish(batch, unit, unit.offsets[group] + lo).take(local)
            self.stats.rows_materialised += full.num_rows
            yield full


def _all_null_columns(row_group: Any, names: Sequence[str]) -> set[str]:
    """Top-level columns of ``names`` whose statistics say every row of the row group is null."""
    rows = row_group.num_rows
    if rows == 0:
        return set()
    wanted = set(names)
    empty = set()
    for i in range(row_group.num_columns):
        column = row_group.column(i)
        name = column.path_in_schema
        if name not in wanted:
            continue
        stats = column.statistics
        if stats is not None and stats.has_null_count and stats.null_count == rows:
            empty.add(name)
    return empty


def _with_null_columns(
    batch: pa.RecordBatch | None, names: Sequence[str], schema: pa.Schema, num_rows: int | None = None
) -> pa.RecordBatch:
    """Return the batch with every column of ``names``, in that order (the ones it lacks all null).

    ``batch`` None: ``num_rows`` rows, every column null.
    """
    present = set(batch.schema.names) if batch is not None else set()
    rows = batch.num_rows if batch is not None else int(num_rows or 0)
    # One null array per type, shared by every column of that type (hundreds of them in wide logs).
    nulls: dict[pa.DataType, pa.Array] = {}
    arrays = []
    for name in names:
        if batch is not None and name in present:
            arrays.append(batch.column(name))
            continue
        data_type = schema.field(name).type
        if data_type not in nulls:
            nulls[data_type] = pa.nulls(rows, data_type)
        arrays.append(nulls[data_type])
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([schema.field(n) for n in names]))


#: Codecs ``decode_chunk`` decompresses (ZSTD, what ``convert`` writes, through the system's libzstd).
_ZSTD = 2
_NATIVE_CODECS = {"UNCOMPRESSED": 0, "SNAPPY": 1, "ZSTD": _ZSTD}
_ZSTD_LIBRARY: list[Any] = []  # [the loaded libzstd, or None when there is none]


def _zstd_ready() -> bool:
    """Hand ``decode_chunk`` the system's libzstd (looked up once per process); False without one."""
    if not _ZSTD_LIBRARY:
        import ctypes
        import ctypes.util

        library = None
        try:
            name = ctypes.util.find_library("zstd")
            if name and _cdict is not None:
                library = ctypes.CDLL(name)
                decompress = ctypes.cast(library.ZSTD_decompress, ctypes.c_void_p).value
                is_error = ctypes.cast(library.ZSTD_isError, ctypes.c_void_p).value
                _cdict.set_zstd(decompress or 0, is_error or 0)
                if not (decompress and is_error):
                    library = None
        except (OSError, AttributeError):
            library = None
        _ZSTD_LIBRARY.append(library)
    return _ZSTD_LIBRARY[0] is not None


def _native_chunks(unit: _FileUnit, dataset_schema: pa.Schema) -> dict[str, tuple[int, int]]:
    """Columns ``decode_chunk`` may read: name -> (leaf column index, max definition level).

    Flat (top-level, not repeated, at most optional) BYTE_ARRAY columns read as dictionary strings;
    the reserved and partition columns keep Arrow's path (``_finish`` handles them).
    """
    if _cdict is None:
        return {}
    wanted = {
        f.name
        for f in dataset_schema
        if f.type == _DICT_STRING and f.name not in RESERVED_COLUMNS and f.name not in unit.constants
    }
    schema = unit.metadata.schema
    chunks = {}
    for i in range(len(schema)):
        column = schema.column(i)
        if (
            column.path in wanted
            and column.physical_type == "BYTE_ARRAY"
            and column.max_repetition_level == 0
            and column.max_definition_level <= 1
        ):
            chunks[column.path] = (i, column.max_definition_level)
    return chunks


#: Footers of local files read lately, by (path, size, mtime, dictionary): a scan worker reads
#: several units of one file, each of which would parse the footer again (~10-20 ms per open).
_FOOTERS: dict[tuple[str, int, int, bool], tuple[Any, Any, pa.Schema, pa.Schema]] = {}
_FOOTERS_KEPT = 4


def footer(filesystem: pafs.FileSystem, path: str, dictionary: bool) -> tuple[Any, Any, pa.Schema, pa.Schema]:
    """Return (fragment, metadata, physical schema, schema as scanned) of a file; local ones cached."""
    key = None
    if isinstance(filesystem, pafs.LocalFileSystem):
        status = os.stat(path)
        key = (path, status.st_size, status.st_mtime_ns, dictionary)
        found = _FOOTERS.get(key)
        if found is not None:
            return found
    # A fragment made directly: ``ds.dataset`` would cost ~5 ms more per file (its discovery).
    fragment = ds.ParquetFileFormat().make_fragment(path, filesystem)
    metadata = fragment.metadata
    physical = fragment.physical_schema
    scanned = physical
    strings = [f.name for f in physical if pa.types.is_string(f.type)]
    if dictionary and strings:
        # The same file, its string columns decoded as dictionaries (footer parsed again: ~7 ms).
        options = ds.ParquetReadOptions(dictionary_columns=strings)
        fragment = ds.ParquetFileFormat(read_options=options).make_fragment(path, filesystem)
        scanned = fragment.physical_schema
    opened = (fragment, metadata, physical, scanned)
    if key is not None:
        while len(_FOOTERS) >= _FOOTERS_KEPT:
            del _FOOTERS[next(iter(_FOOTERS))]
        _FOOTERS[key] = opened
    return opened


@dataclass
class _FileUnit:
    file: ParquetFile
    fragment: Any  # ds.ParquetFileFragment
    metadata: Any  # pq.FileMetaData
    schema: pa.Schema  # physical schema + partition constants
    constants: dict[str, str | None]
    offsets: list[int]
    row_groups: list[int]


def _schema_groups(units: list[_FileUnit]) -> Iterator[list[_FileUnit]]:
    """Split files into runs that one scanner can read (same columns, types and constants)."""
    group: list[_FileUnit] = []
    for unit in units:
        if group and (unit.schema != group[0].schema or unit.constants.keys() != group[0].constants.keys()):
            yield group
            group = []
        group.append(unit)
    if group:
        yield group


def coalesce(
    batches: Iterable[pa.RecordBatch], batch_size: int, max_bytes: int = COALESCE_BYTES
) -> Iterator[pa.RecordBatch]:
    """Merge consecutive small batches (small files, selected rows) into batches of up to ``batch_size``.

    The engine has a fixed cost per batch, so archives of many small files or row groups are
    evaluated much faster in full batches; batches over ``max_bytes`` are cut, because the engine's
    memory grows with the batch (wide EVTX archives: ~2.3 KB per row in Arrow). Columns missing from
    some batches become nulls; batches whose types cannot be merged are yielded as they are. Row
    order is kept.
    """
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    for batch in _split(batches, max_bytes):
        if 2 * batch.num_rows >= batch_size or 2 * batch.nbytes >= max_bytes:
            # Big enough already: merging would only copy it.
            if pending:
                yield from _merged(pending)
                pending, rows, size = [], 0, 0
            yield batch
            continue
        if pending and (rows + batch.num_rows > batch_size or size + batch.nbytes > max_bytes):
            yield from _merged(pending)
            pending, rows, size = [], 0, 0
        pending.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
    if pending:
        yield from _merged(pending)


def _split(batches: Iterable[pa.RecordBatch], max_bytes: int) -> Iterator[pa.RecordBatch]:
    """Cut batches larger than ``max_bytes`` (wide events: the engine's memory grows with the batch)."""
    for batch in batches:
        pieces = -(-batch.nbytes // max_bytes) if batch.num_rows > 1 else 1
        if pieces <= 1:
            yield batch
            continue
        step = -(-batch.num_rows // pieces)
        for start in range(0, batch.num_rows, step):
            yield batch.slice(start, step)


def _merged(batches: list[Any]) -> Iterator[Any]:
    if len(batches) == 1:
        yield batches[0]
        return
    if any(isinstance(b, SparseBatch) for b in batches):
        # A sparse scan's small row groups: stacked as SparseBatches, reserved columns last (as below).
        parts = [b if isinstance(b, SparseBatch) else SparseBatch.from_batch(b) for b in batches]
        try:
            merged = SparseBatch.concat(parts)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            yield from batches
            return
        names = [name for name in merged.schema.names if name not in RESERVED_COLUMNS]
        yield merged.select([*names, SOURCE_COLUMN, INDEX_COLUMN])
        return
    try:
        table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        yield from batches
        return
    columns = [name for name in table.column_names if name not in RESERVED_COLUMNS]
    table = table.select([*columns, SOURCE_COLUMN, INDEX_COLUMN]).combine_chunks()
    yield from table.to_batches()


def _chunk_bytes(unit: _FileUnit, group: int, names: Iterable[str]) -> int:
    top = set(names)
    row_group = unit.metadata.row_group(group)
    total = 0
    for c in range(row_group.num_columns):
        chunk = row_group.column(c)
        if chunk.path_in_schema.split(".", 1)[0] in top:
            total += chunk.total_compressed_size
    return int(total)


def _repeated(text: str, count: int, *, dictionary: bool) -> pa.Array:
    """``count`` copies of ``text``: a string array built from buffers, or a one-entry dictionary array."""
    if dictionary:
        return pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(count, dtype=np.int32)), pa.array([text], pa.string())
        )
    data = text.encode()
    if len(data) * count >= 2**31:
        return pa.array([text] * count, pa.string())
    offsets = np.arange(count + 1, dtype=np.int32) * np.int32(len(data))
    return pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data * count)]
    )


def _set_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    if name in batch.schema.names:
        return batch.set_column(batch.schema.get_field_index(name), name, values)
    return batch.append_column(name, values)


def engine_prefilter(engine: Any) -> Prefilter:
    """Build a prefilter from an ``Engine``: the rows any rule matches (union of ``match_rows``)."""

    def select(batch: pa.RecordBatch) -> pa.Array:
        mask = np.zeros(batch.num_rows, dtype=bool)
        if hasattr(engine, "match_rows"):
            for rows in engine.match_rows(batch):
                mask[rows] = True
        else:
            for column in engine.evaluate(batch).columns:
                mask |= column.to_numpy(zero_copy_only=False)
        return pa.array(mask)

    return select
