"""``tk up | down | status | doctor``: the whole stack (filled in by the launch issue)."""

from __future__ import annotations

import typer

from toolkit.cli._common import not_yet

_ISSUE = "issue 5, `tk up` and `tk doctor`"


def up() -> None:
    """Launch Redis, the inference API and workers (not implemented yet)."""
    not_yet("tk up", _ISSUE)


def down() -> None:
    """Stop the stack, draining in order (not implemented yet)."""
    not_yet("tk down", _ISSUE)


def status() -> None:
    """Show the stack's processes and queue (not implemented yet)."""
    not_yet("tk status", _ISSUE)


def doctor() -> None:
    """Check the stack's health, with exit codes for CI (not implemented yet)."""
    not_yet("tk doctor", _ISSUE)


def register(app: typer.Typer) -> None:
    for func in (up, down, status, doctor):
        app.command(func.__name__)(func)
