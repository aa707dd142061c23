"""``tk worker | api | submit``: the inference service (filled in by the inference issue)."""

from __future__ import annotations

import typer

from toolkit.cli._common import not_yet

_ISSUE = "issue 4, the inference service"


def worker() -> None:
    """Run an inference worker (not implemented yet)."""
    not_yet("tk worker", _ISSUE)


def api() -> None:
    """Run the HTTP API (not implemented yet)."""
    not_yet("tk api", _ISSUE)


def submit() -> None:
    """Send images to the API (not implemented yet)."""
    not_yet("tk submit", _ISSUE)


def register(app: typer.Typer) -> None:
    for func in (worker, api, submit):
        app.command(func.__name__)(func)
