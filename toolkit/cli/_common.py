"""What every command module shares: settings from flags, error handling, output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import typer

from toolkit.errors import NotYetAvailable, TkError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"tk: error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn a TkError raised by library code into one printed line and its exit code; a
    command run with ``--json`` also prints it on stdout as ``{"error", "fix", "exit_code"}``
    (as conda does), so a script reading stdout gets JSON either way."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TkError as exc:
            if _wants_json(func, args, kwargs):
                print_json_error(exc.message, exc.fix, exc.exit_code)
            fail(exc.one_line(), exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("tk: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _wants_json(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the command was given ``--json`` (its ``as_json`` parameter, by name or
    position)."""
    import inspect

    if "as_json" in kwargs:
        return kwargs["as_json"] is True
    try:
        bound = inspect.signature(func).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    return bound.arguments.get("as_json") is True


def not_yet(what: str, issue: str) -> NoReturn:
    """For commands a later release fills in: say so plainly and exit 2."""
    exc = NotYetAvailable(f"`{what}` is not implemented yet (planned: {issue})")
    fail(exc.one_line(), exc.exit_code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_json_error(message: str, fix: str | None, exit_code: int) -> None:
    """An error as a ``--json`` command prints it on stdout: ``{"error", "fix", "exit_code"}``."""
    print_json({"error": message, "fix": fix, "exit_code": exit_code})


def warn(message: str) -> None:
    typer.secho(f"tk: warning: {message}", err=True, fg=typer.colors.YELLOW)


def console() -> Any:
    from rich.console import Console

    return Console()


STATUS_COLORS = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


def print_status_table(
    title: str | None, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], status_col: int
) -> None:
    """A Rich table whose ``status_col`` (ok/warn/fail/skip) is coloured, then the counts.

    Cells are text, not Rich markup: a finding such as "[default: 4]" prints as written."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(*columns, title=title)
    counts = dict.fromkeys(STATUS_COLORS, 0)
    for row in rows:
        status = row[status_col]
        counts[status] = counts.get(status, 0) + 1
        color = STATUS_COLORS.get(status, "")
        cells = [escape(cell) for cell in row]
        cells[status_col] = f"[{color}]{status}[/{color}]" if color else escape(status)
        table.add_row(*cells)
    con = console()
    con.print(table)
    con.print(", ".join(f"{v} {k}" for k, v in counts.items()))
