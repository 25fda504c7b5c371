"""`sigma-arrow kafka` (being written in this session; owned by one helper)."""

from __future__ import annotations

import click


@click.command(name="kafka")
def kafka() -> None:
    """Not written yet."""
    raise click.ClickException("sigma-arrow kafka is not available yet")
