"""`sigma-arrow convert`: EVTX / JSON / NDJSON -> a zstd Parquet archive (optionally hive-partitioned)."""

from __future__ import annotations

import sys
from typing import IO

import click

FORMATS = ["auto", "evtx", "jsonl", "json", "parquet", "arrow"]


@click.command(name="convert")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Archive directory."
)
@click.option(
    "--partition-by",
    default="",
    metavar="FIELD,...",
    help="Hive partition keys: event fields (Channel, EventID, ...) or 'date' (from the timestamp).",
)
@click.option("--format", "input_format", type=click.Choice(FORMATS), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=65_536, show_default=True)
@click.option("--row-group-size", type=click.IntRange(min=1), default=65_536, show_default=True)
@click.option(
    "--compression", default="zstd", show_default=True, help="Parquet codec (zstd, snappy, gzip, none)."
)
@click.option("--append", is_flag=True, help="Add files to an existing archive directory.")
@click.option(
    "--errors", "errors_path", type=click.Path(dir_okay=False), help="Write each bad record as a JSON line."
)
def convert(
    inputs: tuple[str, ...],
    out_dir: str,
    partition_by: str,
    input_format: str,
    batch_size: int,
    row_group_size: int,
    compression: str,
    append: bool,
    errors_path: str | None,
) -> None:
    """Convert INPUT... (files, directories, globs) into a Parquet archive that `scan` hunts fast."""
    from compiler.errors import SigmaArrowError
    from sigma_arrow.convert import convert as run_convert
    from sigma_arrow.errorlog import ErrorLog

    keys = [k.strip() for k in partition_by.split(",") if k.strip()]
    stream: IO[bytes] | None = open(errors_path, "wb") if errors_path else None  # noqa: SIM115
    errors = ErrorLog(stream=stream)
    try:
        stats = run_convert(
            list(inputs),
            out_dir,
            partition_by=keys,
            format=input_format,
            batch_size=batch_size,
            row_group_size=row_group_size,
            errors=errors,
            append=append,
            compression=compression,
        )
    except (SigmaArrowError, OSError, ValueError, NotImplementedError) as exc:  # Arrow errors included
        click.echo(f"sigma-arrow convert: error: {exc}", err=True)
        sys.exit(1)
    finally:
        if stream is not None:
            stream.close()
    click.echo(stats.summary(), err=True)
    if errors.total:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(errors.counts.items()))
        where = f" (see {errors_path})" if errors_path else ""
        click.echo(f"{errors.total:,} input problems skipped: {kinds}{where}", err=True)
        for problem in errors.examples[:5]:
            where = problem.source if problem.offset is None else f"{problem.source} @ {problem.offset}"
            click.echo(f"  {where}: {problem.kind}: {problem.message}", err=True)
        sys.exit(1)
    if stats.events == 0:
        click.echo("sigma-arrow convert: no events found in the inputs", err=True)
        sys.exit(1)
