"""``tk env``: conda environments for PyTorch (filled in by the environments issue)."""

from __future__ import annotations

import typer

from toolkit.cli._common import not_yet

app = typer.Typer(
    help="Build, lock and validate conda environments for PyTorch.", no_args_is_help=True
)

_ISSUE = "issue 3, `tk env`"


@app.command("create")
def create() -> None:
    """Create the inference environment (not implemented yet)."""
    not_yet("tk env create", _ISSUE)


@app.command("lock")
def lock() -> None:
    """Lock the environment (not implemented yet)."""
    not_yet("tk env lock", _ISSUE)


@app.command("validate")
def validate() -> None:
    """Validate an environment (not implemented yet)."""
    not_yet("tk env validate", _ISSUE)
