"""`sigma-arrow rules` (being written in this session; owned by one helper)."""

from __future__ import annotations

import click


@click.command(name="rules")
def rules() -> None:
    """Not written yet."""
    raise click.ClickException("sigma-arrow rules is not available yet")
