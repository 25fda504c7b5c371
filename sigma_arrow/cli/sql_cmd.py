"""`sigma-arrow sql` (being written in this session; owned by one helper)."""

from __future__ import annotations

import click


@click.command(name="sql")
def sql() -> None:
    """Not written yet."""
    raise click.ClickException("sigma-arrow sql is not available yet")
