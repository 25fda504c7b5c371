"""`sigma-arrow convert` (being written in this session; owned by one helper)."""

from __future__ import annotations

import click


@click.command(name="convert")
def convert() -> None:
    """Not written yet."""
    raise click.ClickException("sigma-arrow convert is not available yet")
