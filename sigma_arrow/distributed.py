"""Distributed scans on Dask: Parquet row groups (and other input files) evaluated on Dask workers.

``scan_dask(inputs, rules, "local[2]")`` starts a LocalCluster of 2 worker processes on 127.0.0.1;
``scan_dask(inputs, rules, "tcp://scheduler:8786")`` uses a running cluster. The client lists the
inputs and splits Parquet files into tasks of a few row groups each (other inputs, e.g. EVTX files,
are one task per file); the compiled RuleSet is scattered to every worker once, and each worker
builds its Engine once per scan. A task reads its row groups with the pruning Parquet reader (late
materialisation included), evaluates them and returns match records as Arrow record batches. The
client gathers the matches and yields them sorted by (source, event_index, rule order): the same
records as a local scan, in a deterministic order.

Dask is an optional extra (``pip install 'sigma-arrow[dask]'``); it is imported only here, lazily.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from compiler.errors import InputError, SigmaArrowError
from sigma_arrow.errorlog import ErrorLog, InputProblem
from sigma_arrow.readers.parquet import ParquetReader, ScanStats, engine_prefilter, resolve
from sigma_arrow.ruleset import RuleSet

_LOCAL = re.compile(r"local(?:\[(\d+)\])?\Z")


@dataclass(frozen=True)
class ScanTask:
    """One unit of work: a Parquet file's row groups, or a whole file of another format."""

    path: str
    format: str
    row_groups: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ScanOptions:
    """What every task needs besides its input."""

    token: str
    include_event: bool
    min_level: str | None
    batch_size: int
    engine_backend: str


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SigmaArrowError(
            "distributed scans need Dask: pip install 'sigma-arrow[dask]' (on the client and every worker)"
        ) from exc
    return distributed


def connect(scheduler: str, *, threads_per_worker: int = 1, timeout: float = 30.0) -> tuple[Any, Any]:
    """Return a client (and cluster) for ``local``/``local[N]`` (a new LocalCluster) or an address."""
    distributed = _import_distributed()
    local = _LOCAL.match(scheduler.strip())
    if local:
        workers = int(local.group(1) or os.cpu_count() or 1)
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        return distributed.Client(cluster), cluster
    _check_reachable(scheduler, timeout)
    try:
        return distributed.Client(scheduler, timeout=timeout), None
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast (and quietly) when nothing listens at a tcp:// scheduler address."""
    match = re.match(r"(?:tcp://)?\[?([^\]]+?)\]?:(\d+)\Z", address.strip())
    if match is None:
        return  # another protocol (tls://, ucx://, ...): let distributed try
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=min(timeout, 10.0)).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc


def plan_tasks(
    inputs: Sequence[str], *, format: str = "auto", row_groups_per_task: int = 4, errors: ErrorLog
) -> list[ScanTask]:
    """Split the inputs into tasks: Parquet files by row groups (footers read here), others per file."""
    import pyarrow.parquet as pq

    from sigma_arrow.readers.registry import detect_format, expand_inputs

    local = [p for p in inputs if "://" not in p]
    paths = [p if "://" in p else None for p in inputs]
    expanded = iter(expand_inputs(local, errors) if local else [])
    ordered: list[str] = []
    for item in paths:
        if item is None:
            ordered.extend(expanded)
        else:
            ordered.append(item)
    tasks: list[ScanTask] = []
    for path in dict.fromkeys(ordered):
        try:
            kind = format if format != "auto" else ("parquet" if "://" in path else detect_format(path))
        except (SigmaArrowError, OSError) as exc:
            errors.report(path, None, "file", str(exc))
            continue
        if kind != "parquet":
            tasks.append(ScanTask(path, kind))
            continue
        try:
            filesystem, files = resolve(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            errors.report(path, None, "file", f"cannot list Parquet input: {exc}")
            continue
        for file in files:
            try:
                with filesystem.open_input_file(file.path) as handle:
                    count = pq.ParquetFile(handle).metadata.num_row_groups
            except (OSError, pa.ArrowException) as exc:
                errors.report(file.display, None, "parquet", f"cannot read Parquet footer: {exc}")
                continue
            for start in range(0, count, row_groups_per_task):
                chunk = tuple(range(start, min(count, start + row_groups_per_task)))
                tasks.append(ScanTask(file.display, "parquet", chunk))
    return tasks


# ---------------------------------------------------------------- worker side

_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(token: str, rules: RuleSet, backend: str) -> Any:
    """Return the worker's Engine for this scan (built once per worker process, kept for the scan's tasks)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(token)
        if engine is None:
            from sigma_arrow.engine import Engine

            _ENGINES.clear()  # one scan at a time per worker keeps memory flat
            engine = _ENGINES[token] = Engine(rules, backend=backend, threads=1)
        return engine


def run_task(
    task: ScanTask, rules: RuleSet, options: ScanOptions
) -> tuple[list[pa.RecordBatch], dict[str, Any], list[InputProblem]]:
    """Evaluate one task on a worker: (match batches, scan statistics, input problems)."""
    engine = _engine(options.token, rules, options.engine_backend)
    errors = ErrorLog(max_examples=1000)
    stats = ScanStats()
    if task.format == "parquet":
        reader = ParquetReader(
            rules=rules,
            include_event=options.include_event,
            prefilter=engine_prefilter(engine) if options.include_event else None,
            stats=stats,
            use_threads=False,
        )
        batches = reader.read(
            task.path, batch_size=options.batch_size, errors=errors, row_groups=task.row_groups
        )
    else:
        from sigma_arrow.readers.registry import reader_for

        batches = reader_for(task.path, task.format).read(
            task.path, batch_size=options.batch_size, errors=errors
        )
    out = []
    for batch in batches:
        if task.format != "parquet":
            stats.rows_read += batch.num_rows
        found = engine.matches(batch, include_event=options.include_event, min_level=options.min_level)
        if found.num_rows:
            out.append(found)
    return out, stats.as_dict(), list(errors.examples)


# ---------------------------------------------------------------- client side


def scan_dask(
    inputs: Sequence[str],
    rules: RuleSet,
    scheduler: str | Any,
    *,
    include_event: bool = True,
    min_level: str | None = None,
    format: str = "auto",
    batch_size: int = 65_536,
    row_groups_per_task: int = 4,
    errors: ErrorLog | None = None,
    stats: ScanStats | None = None,
    engine_backend: str = "auto",
    scan_stats: Any = None,
    connect_timeout: float = 30.0,
) -> Iterator[pa.RecordBatch]:
    """Scan inputs on a Dask cluster; yield match batches sorted by (source, event_index, rule order).

    ``scheduler``: ``"local[N]"``, ``"local"`` (one worker per core), a scheduler address such as
    ``"tcp://10.0.0.5:8786"``, or a ``distributed.Client``. ``stats`` sums the Parquet reader's
    figures over all tasks; ``scan_stats`` (a ``sigma_arrow.scanning.ScanStats``) gets events, inputs
    and match counts, as a local scan fills it.
    """
    stats = stats if stats is not None else ScanStats()
    errors = errors if errors is not None else ErrorLog()
    tasks = plan_tasks(inputs, format=format, row_groups_per_task=row_groups_per_task, errors=errors)
    options = ScanOptions(uuid.uuid4().hex, include_event, min_level, batch_size, engine_backend)
    owned = isinstance(scheduler, str)  # a Client passed in stays open; one made here is closed
    if owned:
        client, cluster = connect(scheduler, timeout=connect_timeout)
    else:
        client, cluster = scheduler, None
    results: list[list[pa.RecordBatch]] = []
    try:
        if tasks:
            # hash=False: tokenizing a big RuleSet object graph takes longer than shipping it.
            shared_rules = client.scatter(rules, broadcast=True, hash=False)
            futures = client.map(run_task, tasks, rules=shared_rules, options=options, pure=False)
            for future in futures:
                batches, task_stats, problems = future.result()
                results.append(batches)
                stats.merge(_stats_from(task_stats))
                for problem in problems:
                    errors.add(problem)
                future.release()
    finally:
        if owned:
            client.close()
        if cluster is not None:
            cluster.close()
    if scan_stats is not None:
        scan_stats.inputs = len({task.path for task in tasks})
        scan_stats.events += stats.rows_read
    for batch in _sorted_matches(results, rules):
        if scan_stats is not None:
            scan_stats.count_matches(batch)
        yield batch


def _stats_from(data: dict[str, Any]) -> ScanStats:
    values = dict(data)
    values["columns_read"] = set(values.get("columns_read", ()))
    return ScanStats(**values)


def _sorted_matches(results: list[list[pa.RecordBatch]], rules: RuleSet) -> Iterator[pa.RecordBatch]:
    """Match batches re-cut in (source, event_index, rule order) order.

    Batches whose ``event`` structs differ are never unified: rows are taken from one table per
    distinct schema, a new output batch starting whenever the schema changes.
    """
    batches = [b for task in results for b in task if b.num_rows]
    if not batches:
        return
    order_of: dict[str, int] = {}
    for position, rule in enumerate(rules.rules):
        order_of.setdefault(rule.id, position)
    groups: dict[pa.Schema, list[pa.RecordBatch]] = {}
    group_ids, offsets = [], []
    for batch in batches:
        members = groups.setdefault(batch.schema, [])
        group_ids.append(list(groups).index(batch.schema))
        offsets.append(sum(b.num_rows for b in members))
        members.append(batch)
    tables = [pa.Table.from_batches(members).combine_chunks() for members in groups.values()]
    keys = pa.table(
        {
            "group": pa.array(
                [g for g, b in zip(group_ids, batches, strict=True) for _ in range(b.num_rows)]
            ),
            "row": pa.array(
                [o + r for o, b in zip(offsets, batches, strict=True) for r in range(b.num_rows)]
            ),
            "source": pa.concat_arrays([b.column("source") for b in batches]),
            "event_index": pa.concat_arrays([b.column("event_index") for b in batches]),
            "rule": pa.array(
                [
                    order_of.get(rid, len(order_of))
                    for b in batches
                    for rid in b.column("rule_id").to_pylist()
                ],
                pa.int64(),
            ),
        }
    ).sort_by([("source", "ascending"), ("event_index", "ascending"), ("rule", "ascending")])
    group_of = keys.column("group").to_pylist()
    rows = keys.column("row").to_pylist()
    start = 0
    while start < len(group_of):
        end = start
        while end < len(group_of) and group_of[end] == group_of[start]:
            end += 1
        yield from tables[group_of[start]].take(pa.array(rows[start:end], pa.int64())).to_batches()
        start = end
