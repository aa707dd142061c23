"""``tk queue``: inspect the task queue (filled in by the inference-service issue)."""

from __future__ import annotations

import typer

from toolkit.cli._common import not_yet

app = typer.Typer(help="Inspect the task queue.", no_args_is_help=True)


@app.command("depth")
def depth() -> None:
    """Show waiting, pending and dead-letter counts (not implemented yet)."""
    not_yet("tk queue depth", "issue 4, the inference service")
