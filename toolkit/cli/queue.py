"""``tk queue``: inspect the task queue (depth, dead letters). Connects as tk-monitor."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from toolkit.cli._common import console, handle_errors, print_json
from toolkit.cli.state import settings

app = typer.Typer(help="Inspect the task queue.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _client() -> Any:
    from toolkit.queue.client import binary_client
    from toolkit.redis import connect

    s = settings()
    r = binary_client(s, "tk-monitor")
    try:
        r.ping()
    except Exception as exc:
        from toolkit.errors import TkError

        if isinstance(exc, TkError):
            raise
        raise connect.describe_connection_error(exc, connect.resolve_url(s, "tk-monitor")) from None
    return r


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


@app.command("depth")
@handle_errors
def depth_cmd(as_json: JsonOpt = False) -> None:
    """Waiting, pending (claimed, not acked), oldest ages, dead letters, consumers."""
    from toolkit.queue.depth import depth

    with _client() as r:
        d = depth(r)
    if as_json:
        print_json(d.to_dict())
        return
    typer.echo(f"waiting   {d.waiting}   (oldest {_age(d.oldest_waiting_age_s)})")
    typer.echo(f"pending   {d.pending}   (oldest {_age(d.oldest_pending_age_s)})")
    typer.echo(f"dead      {d.dead}")
    typer.echo(f"workers   {len(d.live_workers)} live: {', '.join(d.live_workers) or '-'}")
    if d.consumers:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="consumers")
        for col in ("name", "pending", "idle", "heartbeat"):
            table.add_column(col)
        for c in d.consumers:
            table.add_row(
                escape(c.name),
                str(c.pending),
                _age(c.idle_ms / 1000),
                "live" if c.alive else "none",
            )
        console().print(table)


@app.command("dlq")
@handle_errors
def dlq_cmd(
    count: Annotated[int, typer.Option(min=1, help="How many entries, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The dead-letter stream: tasks that exhausted max_deliveries, with the reason."""
    from toolkit.queue.protocol import TaskQueue

    with _client() as r:
        q = TaskQueue(r)
        entries = q.dead_letters(count)
        total = int(r.xlen(q.cfg.dead_stream))
    if as_json:
        print_json({"total": total, "entries": entries})
        return
    typer.echo(f"{total} dead-letter entr{'y' if total == 1 else 'ies'}")
    for e in entries:
        typer.echo(f"{e.get('id', '?')}  deliveries {e.get('deliveries', '?')}  {e.get('reason')}")
