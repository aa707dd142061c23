"""``tk config``: show the resolved settings and where each came from."""

from __future__ import annotations

from typing import Annotated, Any

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
    values = [s.json_value(spec.name) for spec in SPECS]
    kept = _kept_redis_port(s)
    if kept is not None:  # what the server and every client use, not the default
        i = [spec.name for spec in SPECS].index("redis_port")
        rows[i].update(value=str(kept[0]), source=kept[1])
        values[i] = kept[0]
    if as_json:
        print_json([dict(r, value=v) for r, v in zip(rows, values, strict=True)])
        return
    from rich.table import Table

    table = Table("setting", "value", "source", "env var / tk.yaml key")
    for r in rows:
        table.add_row(r["name"], r["value"], r["source"], f"{r['env']} / {r['yaml'] or '-'}")
    console().print(table)


def _kept_redis_port(s: Any) -> tuple[int, str] | None:
    """The port `tk redis harden` kept in credentials.json when no flag, env var or tk.yaml
    names one (re-running harden keeps it; clients read it from there), with its source."""
    from toolkit.errors import TkError
    from toolkit.redis import credentials

    try:
        creds = credentials.load(s.redis_conf_dir)
    except TkError:  # a damaged file: the commands that use it say so
        return None
    port = credentials.kept_port(s, creds)
    if port is None or port == s.redis_port:
        return None
    return port, f"kept by `tk redis harden` in {credentials.credentials_path(s.redis_conf_dir)}"
