"""The ``sigma-arrow`` command: a thin layer over the library; one module per subcommand."""

from __future__ import annotations

import os

# numpy's OpenBLAS starts a thread per core at import, and they spin after any BLAS call: ~2 % of a
# scan's CPU here (2 cores). The engine does no linear algebra: one thread is plenty.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click

from sigma_arrow.cli import compile_cmd, convert_cmd, kafka_cmd, rules_cmd, scan_cmd, sql_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sigma-arrow")
def cli() -> None:
    """Run Sigma detection rules over EVTX, JSON, Parquet and Kafka at columnar speed."""


cli.add_command(scan_cmd.scan)
cli.add_command(rules_cmd.rules)
cli.add_command(compile_cmd.compile_rule)
cli.add_command(convert_cmd.convert)
cli.add_command(kafka_cmd.kafka)
cli.add_command(sql_cmd.sql)


def main() -> None:
    """Console entry point (exit codes: 0 ok, 1 runtime/input error, 2 usage error or no rules)."""
    cli(prog_name="sigma-arrow")
