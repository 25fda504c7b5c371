"""`sigma-arrow kafka`: a Kafka topic as a bounded, resumable batch job (sigma_arrow.kafka)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any, NoReturn

import click

from compiler.errors import SigmaArrowError
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.schema import LEVELS


@click.command(name="kafka")
@click.option("-b", "--bootstrap", required=True, metavar="HOST:PORT", help="Kafka bootstrap servers.")
@click.option(
    "-t",
    "--topic",
    "topics",
    required=True,
    multiple=True,
    metavar="TOPIC[,TOPIC...]",
    help="Topics to read.",
)
@click.option(
    "-g", "--group", required=True, help="Consumer group: offsets are committed (and resumed) here."
)
@click.option(
    "-r",
    "--rules",
    "rule_paths",
    required=True,
    multiple=True,
    metavar="RULES",
    help="Rule file or directory.",
)
@click.option("--output-topic", metavar="TOPIC", help="Write match records here (JSON, transactional).")
@click.option(
    "-o", "--output", metavar="FILE", help="Append match records to this JSONL file ('-' = stdout)."
)
@click.option("--dlq-topic", metavar="TOPIC", help="Send messages that do not decode here.")
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    help="Messages per batch (bigger batches: faster, more memory) "
    "[default: 262,144 in one process, 65,536 with worker processes].",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Processes that decode and evaluate batches while this one consumes and commits "
    "(0: one per core; 1: all in this process).",
)
@click.option(
    "--until",
    default="end",
    show_default=True,
    metavar="end|COUNT|DURATION",
    help="Stop at the end offsets fixed at start, after COUNT messages, or after e.g. 30s/5m.",
)
@click.option(
    "-X",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="librdkafka setting (consumer./producer. prefix: one client).",
)
@click.option(
    "--transactional-id", metavar="ID", help="Fixed transactional.id (default: from group + partitions)."
)
@click.option("-p", "--pipeline", "pipelines", multiple=True, help="pySigma pipeline name or YAML file.")
@click.option(
    "--logsource-map", default="windows", show_default=True, help="windows, linux, none or a map YAML."
)
@click.option("--min-level", type=click.Choice(LEVELS), help="Drop matches of rules below this level.")
@click.option("--no-event", is_flag=True, help="Leave the event out of match records.")
@click.option(
    "--errors", "errors_path", metavar="FILE", help="Write each undecodable message here (JSON lines)."
)
def kafka(
    bootstrap: str,
    topics: tuple[str, ...],
    group: str,
    rule_paths: tuple[str, ...],
    output_topic: str | None,
    output: str | None,
    dlq_topic: str | None,
    max_batch: int | None,
    workers: int,
    until: str,
    settings: tuple[str, ...],
    transactional_id: str | None,
    pipelines: tuple[str, ...],
    logsource_map: str,
    min_level: str | None,
    no_event: bool,
    errors_path: str | None,
) -> None:
    """Run rules over Kafka topics as a bounded batch job that resumes from the group's offsets.

    Offsets are committed only once the batch's matches are durable: in the same Kafka transaction
    as the output/DLQ messages, or after the output file is fsynced. Without --output-topic and -o,
    matches go to stdout as JSONL.
    """
    from sigma_arrow.kafka import KafkaJobConfig, Until, parse_client_settings

    try:
        config = KafkaJobConfig(
            bootstrap=bootstrap,
            topics=tuple(name.strip() for value in topics for name in value.split(",") if name.strip()),
            group=group,
            output_topic=output_topic,
            output_file=output if output is not None else (None if output_topic else "-"),
            dlq_topic=dlq_topic,
            max_batch=max_batch,
            workers=workers,
            until=Until.parse(until),
            client_config=parse_client_settings(settings),
            include_event=not no_event,
            min_level=min_level,
            transactional_id=transactional_id,
        )
    except SigmaArrowError as exc:
        raise click.UsageError(str(exc)) from exc

    engine = _load_engine(rule_paths, pipelines, logsource_map)
    with _error_stream(errors_path) as stream:
        errors = ErrorLog(stream=stream)
        _run(config, engine, errors)


def _load_engine(rule_paths: tuple[str, ...], pipelines: tuple[str, ...], logsource_map: str) -> Any:
    from sigma_arrow.engine import Engine
    from sigma_arrow.loader import load_rules

    try:
        rules = load_rules(list(rule_paths), pipelines=pipelines, logsource_map=logsource_map)
    except SigmaArrowError as exc:
        _fail(str(exc), 2)
    if len(rules) == 0:
        _fail(f"no rule could be loaded ({len(rules.errors)} failed)", 2)
    if rules.errors:
        click.echo(f"{len(rules)} rules loaded, {len(rules.errors)} could not be used", err=True)
    return Engine(rules)


@contextlib.contextmanager
def _error_stream(path: str | None) -> Iterator[IO[bytes] | None]:
    if path is None:
        yield None
        return
    try:
        stream = open(path, "ab")  # noqa: SIM115 - closed below
    except OSError as exc:
        _fail(f"cannot open {path}: {exc}", 1)
    with stream:
        yield stream


def _run(config: Any, engine: Any, errors: ErrorLog) -> None:
    from sigma_arrow.kafka import KafkaJobError, KafkaJobSummary, run_kafka_job

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, the batch is not committed
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _progress(config) as on_batch:
            summary: KafkaJobSummary = run_kafka_job(
                config, engine, errors=errors, stop=stop, on_batch=on_batch
            )
    except KafkaJobError as exc:
        _fail(str(exc), 1)
    except SigmaArrowError as exc:
        _fail(str(exc), 1)
    except OSError as exc:  # the output file (disk full, permissions)
        _fail(f"cannot write output: {exc}", 1)
    except KeyboardInterrupt:
        _fail("interrupted; the current batch was not committed and will be read again", 130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print_summary(summary, errors)
    # Like scan: input that could only be reported (no DLQ topic took it) makes the exit code 1.
    if errors.total:
        sys.exit(1)


@contextlib.contextmanager
def _progress(config: Any) -> Iterator[Any]:
    """Show a rich progress line on stderr when it is a terminal (else yield no callback)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]kafka[/]"),
        BarColumn(),
        TextColumn(
            "{task.completed:,} msgs · {task.fields[events]:,} events · {task.fields[matches]:,} matches"
        ),
        TextColumn("· {task.fields[dlq]:,} undecodable"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("kafka", total=None, events=0, matches=0, dlq=0)

    def on_batch(summary: Any) -> None:
        total = summary.lag_start if config.until.kind == "end" else None
        if config.until.kind == "count":
            total = int(config.until.value)
        progress.update(
            task,
            completed=summary.messages,
            total=total,
            events=summary.events,
            matches=summary.matches,
            dlq=summary.dlq,
        )

    with progress:
        yield on_batch


def _print_summary(summary: Any, errors: ErrorLog) -> None:
    rate = summary.events / summary.seconds if summary.seconds > 0 else 0.0
    lag_end = "?" if summary.lag_end is None else f"{summary.lag_end:,}"
    click.echo(
        f"kafka: {summary.messages:,} messages, {summary.events:,} events, {summary.matches:,} matches, "
        f"{summary.dlq:,} undecodable; lag {summary.lag_start:,} at start, {lag_end} at end; "
        f"{summary.batches} batches in {summary.seconds:.1f} s ({rate:,.0f} events/s, "
        f"{summary.join_seconds:.1f} s of it joining the group"
        f"{f', {summary.workers} worker processes' if summary.workers > 1 else ''}); "
        f"stopped by {summary.stopped_by}",
        err=True,
    )
    if not summary.partitions:
        click.echo(
            "kafka: warning: no partition was ever assigned (broker unreachable or group busy)", err=True
        )
    if errors.total:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(errors.counts.items()))
        click.echo(f"problems: {kinds}", err=True)
        for problem in errors.examples[:5]:
            where = problem.source if problem.offset is None else f"{problem.source}@{problem.offset}"
            click.echo(f"  {where}: {problem.message}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"sigma-arrow kafka: error: {message}", err=True)
    sys.exit(code)
