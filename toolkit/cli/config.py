"""``tk config``: show the resolved settings and where each came from."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.cli._common import console, handle_errors, print_json
from toolkit.cli.state import settings
from toolkit.config import SPECS

app = typer.Typer(help="Show tk's settings.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print every setting with its value and source (flag, env, tk.yaml, default).

    Secrets are masked.
    """
    s = settings()
    rows = [
        {"name": spec.name, "value": s.display(spec.name), "source": s.source(spec.name),
         "env": spec.env, "yaml": spec.yaml_key}
        for spec in SPECS
    ]  # fmt: skip
    if as_json:
        print_json(
            [dict(r, value=s.json_value(spec.name)) for r, spec in zip(rows, SPECS, strict=True)]
        )
        return
    from rich.table import Table

    table = Table("setting", "value", "source", "env var / tk.yaml key")
    for r in rows:
        table.add_row(r["name"], r["value"], r["source"], f"{r['env']} / {r['yaml'] or '-'}")
    console().print(table)
