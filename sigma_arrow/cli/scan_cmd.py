"""``sigma-arrow scan``: run Sigma rules over inputs and write match records (a thin layer over ``scan``)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import IO, Any

import click

from sigma_arrow.schema import LEVELS

FORMATS = ("auto", "evtx", "jsonl", "json", "parquet", "arrow", "lines")
OUTPUT_FORMATS = ("jsonl", "json", "csv", "parquet", "arrow")
#: Problem kinds that mean a whole input (not just a record) could not be read.
_INPUT_KINDS_HINTS = {
    "file": "input missing or unreadable",
    "read": "input could not be read",
    "json": "malformed JSON record skipped",
    "evtx-record": "unreadable EVTX record skipped",
    "evtx-chunk": "unreadable EVTX chunk skipped",
    "evtx-file": "EVTX file unreadable or truncated",
    "arrow": "unreadable Arrow IPC data",
    "parquet": "unreadable Parquet data",
    "engine": "batch not evaluated (engine failure)",
}


def _fail(message: str, code: int) -> None:
    click.echo(f"sigma-arrow scan: error: {message}", err=True)
    sys.exit(code)


@click.command(name="scan")
@click.option(
    "-r",
    "--rules",
    "rule_paths",
    multiple=True,
    required=True,
    metavar="RULES",
    help="Rule file, directory (recursive *.yml) or glob; repeatable.",
)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="OUT",
    help="Output file (format from its extension); default: JSONL on stdout.",
)
@click.option(
    "--format",
    "input_format",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Input format (auto: by extension, then by content).",
)
@click.option(
    "--output-format",
    type=click.Choice(OUTPUT_FORMATS),
    default=None,
    help="Output format (default: from -o's extension, else jsonl).",
)
@click.option(
    "-p",
    "--pipeline",
    "pipelines",
    multiple=True,
    metavar="PIPELINE",
    help="pySigma processing pipeline (installed name or YAML file); repeatable.",
)
@click.option(
    "--logsource-map",
    default="windows",
    show_default=True,
    metavar="windows|linux|none|FILE",
    help="How rule logsources select events.",
)
@click.option(
    "--min-level", type=click.Choice(LEVELS), default=None, help="Only report rules of this level or higher."
)
@click.option("--no-event", is_flag=True, help="Leave the event out of match records.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=65_536,
    show_default=True,
    help="Events per batch (bounds memory).",
)
@click.option(
    "--errors",
    "errors_path",
    default=None,
    metavar="FILE",
    help="Write every skipped record/input as a JSON line to FILE.",
)
@click.option(
    "--engine",
    "engine_name",
    default="auto",
    show_default=True,
    metavar="NAME",
    help="Evaluation backend: auto, native, polars, datafusion, pyarrow.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Processes that read, decode and evaluate the inputs (0: one per core for inputs of about "
    "131,072 events or more, forked from this process on Linux; 500,000 where they must be spawned; "
    "1: all in this process). Output is the same.",
)
@click.option("--profile", is_flag=True, help="Print time per stage (read/flatten, engine, output).")
@click.option(
    "--dask",
    "dask_scheduler",
    default=None,
    metavar="SCHEDULER",
    help="Evaluate on Dask: local[N] (N local worker processes) or a scheduler address "
    "(tcp://host:8786); needs sigma-arrow[dask]. Matches come sorted by source, event.",
)
def scan(
    rule_paths: tuple[str, ...],
    inputs: tuple[str, ...],
    output: str | None,
    input_format: str,
    output_format: str | None,
    pipelines: tuple[str, ...],
    logsource_map: str,
    min_level: str | None,
    no_event: bool,
    batch_size: int,
    errors_path: str | None,
    engine_name: str,
    workers: int,
    profile: bool,
    dask_scheduler: str | None,
) -> None:
    """Run Sigma rules over INPUT files, directories, globs or - (stdin); write match records.

    Exit codes: 0 ok (with or without matches), 1 an input or record could not be read (the rest was
    still scanned), 2 usage error or no rule could be loaded.
    """
    from compiler.errors import SigmaArrowError
    from sigma_arrow.errorlog import ErrorLog
    from sigma_arrow.loader import load_rules
    from sigma_arrow.scanning import ScanStats, scan_chunks
    from sigma_arrow.sinks import open_sink
    from sigma_arrow.sinks.text import JsonLinesSink

    stderr_tty = sys.stderr.isatty()
    started = time.perf_counter()
    try:
        with _status("loading rules", stderr_tty):
            ruleset = load_rules(list(rule_paths), pipelines=list(pipelines), logsource_map=logsource_map)
    except SigmaArrowError as exc:
        _fail(str(exc), 2)
    load_seconds = time.perf_counter() - started
    if len(ruleset) == 0:
        detail = (
            f" ({len(ruleset.errors)} failed; run `sigma-arrow rules check` for details)"
            if (ruleset.errors)
            else ""
        )
        _fail(f"no rule could be loaded{detail}", 2)

    from sigma_arrow.engine import BACKENDS, Engine

    if engine_name != "auto" and engine_name not in BACKENDS:
        _fail(f"unknown engine backend {engine_name!r} (choose from {', '.join(BACKENDS)})", 2)
    # The scan builds the engine here (shared by forked workers) or in each spawned worker.
    engine: Any = None
    if dask_scheduler:
        engine = Engine(ruleset, backend=engine_name)  # only to report the rules it cannot run

    errors_stream: IO[bytes] | None = None
    if errors_path:
        try:
            errors_stream = open(errors_path, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            _fail(f"cannot write --errors file {errors_path}: {exc}", 2)
    errors = ErrorLog(stream=errors_stream)
    try:
        sink = open_sink(output, output_format, include_event=not no_event)
    except (SigmaArrowError, OSError) as exc:
        _fail(str(exc), 2)

    from sigma_arrow import workers as scan_workers
    from sigma_arrow.readers import parallel

    scan_workers.use_system_allocator()
    parallel.configure()  # big NDJSON/EVTX inputs are decoded on every core (the CLI's __main__ is safe)
    stats = ScanStats()
    interrupted = False
    found: Any = None
    progress = _progress(stats) if stderr_tty else None
    try:
        if progress is not None and dask_scheduler:
            progress.start()
        if dask_scheduler:
            from sigma_arrow.distributed import scan_dask

            found = scan_dask(
                list(inputs),
                ruleset,
                dask_scheduler,
                format=input_format,
                batch_size=batch_size,
                min_level=min_level,
                include_event=not no_event,
                errors=errors,
                scan_stats=stats,
                engine_backend=engine_name,
            )
            found = ((batch, None) for batch in found)
        else:
            # JSON Lines output: worker processes encode the records, this process copies bytes.
            found = scan_chunks(
                list(inputs),
                ruleset,
                format=input_format,
                batch_size=batch_size,
                min_level=min_level,
                include_event=not no_event,
                errors=errors,
                engine=engine_name,
                stats=stats,
                workers=workers,
                encode="jsonl" if isinstance(sink, JsonLinesSink) else None,
                # The progress thread starts once the workers exist: they are forked without it.
                on_start=progress.start if progress is not None else None,
            )
        for matches, encoded in found:
            t0 = time.perf_counter()
            if encoded is not None and isinstance(sink, JsonLinesSink):
                sink.stream.write(encoded)
            else:
                sink.write(matches)
            stats.seconds["output"] += time.perf_counter() - t0
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, like other Unix tools
        _silence_stdout()
        sys.exit(0)
    except SigmaArrowError as exc:  # e.g. --dask without Dask installed, or no scheduler there
        _fail(str(exc), 1)
    finally:
        if found is not None and hasattr(found, "close"):
            with contextlib.suppress(Exception):
                found.close()  # an interrupted scan stops its worker processes now
        if progress is not None:
            progress.stop()
        t0 = time.perf_counter()
        with contextlib.suppress(BrokenPipeError):
            sink.close()
        stats.seconds["output"] += time.perf_counter() - t0
        if errors_stream is not None:
            errors_stream.close()

    if engine is not None:
        stats.engine_skipped = list(engine.skipped)
        stats.engine_profile = engine.profile
    _summary(stats, ruleset, errors, load_seconds)
    if profile:
        _profile(stats, load_seconds)
    if interrupted:
        click.echo("sigma-arrow scan: interrupted", err=True)
        sys.exit(130)
    sys.exit(1 if errors.total else 0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# ---------------------------------------------------------------- presentation (stderr only)


class _status:
    """A rich spinner on stderr while something slow happens (only on a terminal)."""

    def __init__(self, text: str, enabled: bool) -> None:
        self.text = text
        self.enabled = enabled
        self.status: Any = None

    def __enter__(self) -> None:
        if self.enabled:
            from rich.console import Console

            self.status = Console(stderr=True).status(self.text)
            self.status.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)


def _progress(stats: Any) -> Any:
    """Build a live progress line on stderr: inputs done, events read, matches, events/s."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TimeElapsedColumn
    from rich.text import Text

    class StatsColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            done = max(0, len(stats.per_input) - 1) if stats.inputs else 0
            task.total = stats.inputs or None
            task.completed = done
            return Text(
                f"{done}/{stats.inputs} inputs  {stats.events:,} events  {stats.matches:,} matches  "
                f"{stats.events_per_second:,.0f} ev/s"
            )

    progress = Progress(
        SpinnerColumn(),
        BarColumn(),
        StatsColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        refresh_per_second=4,
    )
    progress.add_task("scan", total=None)
    return progress


def _summary(stats: Any, ruleset: Any, errors: Any, load_seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    table = Table(title="sigma-arrow scan", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("inputs", f"{stats.inputs:,}")
    table.add_row("events read", f"{stats.events:,}")
    engine_skipped = len(stats.engine_skipped)
    table.add_row("rules loaded", f"{len(ruleset):,}")
    table.add_row("rules skipped", f"{len(ruleset.errors) + engine_skipped:,}")
    table.add_row("detections", f"{stats.matches:,}")
    for level in reversed(LEVELS):
        if stats.by_level.get(level):
            table.add_row(f"  {level}", f"{stats.by_level[level]:,}")
    table.add_row("elapsed", f"{stats.elapsed:.2f} s (+ {load_seconds:.2f} s loading rules)")
    table.add_row("events/s", f"{stats.events_per_second:,.0f}")
    console.print(table)
    if stats.by_rule:
        top = Table(title="top rules", title_justify="left")
        top.add_column("matches", justify="right")
        top.add_column("level")
        top.add_column("rule")
        levels = {rule.id: rule.meta.level for rule in ruleset.rules}
        for rule_id, count in stats.by_rule.most_common(10):
            top.add_row(
                f"{count:,}", levels.get(rule_id, ""), f"{stats.rule_titles.get(rule_id, '')} ({rule_id})"
            )
        console.print(top)
    if ruleset.errors or engine_skipped:
        unsupported = sum(1 for e in ruleset.errors if getattr(e, "status", "") == "unsupported")
        console.print(
            f"skipped rules: {len(ruleset.errors)} could not be compiled ({unsupported} unsupported, "
            f"{len(ruleset.errors) - unsupported} errors), {engine_skipped} not runnable by the engine; "
            "run `sigma-arrow rules check RULES` for the reasons"
        )
    if errors.total:
        console.print(f"input problems: {errors.total:,} (data not scanned; see --errors FILE for all)")
        for kind, count in errors.counts.most_common():
            console.print(f"  {kind}: {count:,} ({_INPUT_KINDS_HINTS.get(kind, kind)})")
        shown: dict[str, int] = {}
        for problem in errors.examples:
            if shown.get(problem.kind, 0) >= 3:
                continue
            shown[problem.kind] = shown.get(problem.kind, 0) + 1
            where = f"{problem.source}" + (f" @ {problem.offset}" if problem.offset is not None else "")
            console.print(f"    {where}: {problem.message}", markup=False)


def _profile(stats: Any, load_seconds: float) -> None:
    if stats.workers > 1:
        where = f"summed over {stats.workers} worker processes"
        read_note, engine_note = where, where
        output_note = "JSON Lines encoding in the workers + writing here"
    else:
        read_note, engine_note = "background thread, overlaps the engine", "this process"
        output_note = "this process"
    lines = [
        "profile (seconds):",
        f"  load rules      {load_seconds:9.3f}",
        f"  read + flatten  {stats.seconds['read']:9.3f}  ({read_note})",
        f"  engine          {stats.seconds['engine']:9.3f}  ({engine_note})",
        f"  output          {stats.seconds['output']:9.3f}  ({output_note})",
        f"  wall clock      {stats.elapsed:9.3f}",
    ]
    if stats.workers > 1:
        lines.append(
            f"  workers         {stats.worker_cpu:9.3f}  CPU seconds in {stats.worker_wall:.3f} s on units "
            "(less CPU than time: other processes had the cores)"
        )
    click.echo("\n".join(lines), err=True)
    profile = stats.engine_profile
    if profile is not None and hasattr(profile, "format"):
        click.echo(profile.format(), err=True)
