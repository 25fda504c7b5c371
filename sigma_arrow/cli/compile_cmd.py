"""`sigma-arrow compile` (being written in this session; owned by one helper)."""

from __future__ import annotations

import click


@click.command(name="compile")
def compile_rule() -> None:
    """Not written yet."""
    raise click.ClickException("sigma-arrow compile is not available yet")
