"""`sigma-arrow scan` (being written in this session; owned by one helper)."""

from __future__ import annotations

import click


@click.command(name="scan")
def scan() -> None:
    """Not written yet."""
    raise click.ClickException("sigma-arrow scan is not available yet")
