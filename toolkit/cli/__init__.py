"""The ``tk`` command line: one Typer sub-app per command group, joined here.

Heavy libraries (torch, torchvision, fastapi) are imported only inside the commands that use
them, so ``tk --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit import __version__
from toolkit.cli import config as config_cmd
from toolkit.cli import env as env_cmd
from toolkit.cli import queue as queue_cmd
from toolkit.cli import redis as redis_cmd
from toolkit.cli import serve as serve_cmd
from toolkit.cli import stack as stack_cmd
from toolkit.cli.state import set_global

app = typer.Typer(
    name="tk",
    help="Provision, launch and check a small-team AI inference stack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(env_cmd.app, name="env")
app.add_typer(redis_cmd.app, name="redis")
app.add_typer(queue_cmd.app, name="queue")
app.add_typer(config_cmd.app, name="config")
stack_cmd.register(app)
serve_cmd.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tk {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    project_dir: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option(
            "--project-dir",
            "-C",
            help="Project directory (holds tk.yaml, envs/, redis-conf/). \\[env: TK_PROJECT_DIR]",
            show_default="current directory",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Provision, launch and check a small-team AI inference stack."""
    set_global(project_dir=project_dir)


def main() -> None:
    try:
        _run(sys.argv[1:])
    except SystemExit as exc:
        if "rattler" in sys.modules:
            # py-rattler's tokio threads may still be finishing a failed download and touch
            # the interpreter while it finalizes (a crash after the error was printed).
            # Nothing is left to clean up here: flush and leave without finalizing.
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        if "torch" in sys.modules:
            # The work is done (a worker has drained and acked); what is left is interpreter
            # teardown, where torch's threads and CUDA can hang. Should it, print every
            # thread's stack to stderr (the log) and exit 1 rather than hold `tk down`.
            import faulthandler

            faulthandler.dump_traceback_later(TEARDOWN_GRACE_S, exit=True)
        raise


TEARDOWN_GRACE_S = 20.0


def _run(argv: list[str]) -> None:
    """Run the app. With ``--json`` a usage error found by Click itself (an unknown option, a
    value that is not a number) is also printed as JSON on stdout, like every other error of
    a ``--json`` command (``{"error", "fix", "exit_code"}``); the usual message still goes to
    stderr."""
    if "--json" not in argv:
        app()
        return
    from toolkit.cli._common import print_json_error

    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except typer.TyperException as exc:  # Click's usage errors (Typer vendors Click)
        code = getattr(exc, "exit_code", 2)
        ctx = getattr(exc, "ctx", None)
        fix = f"see `{ctx.command_path} --help`" if ctx is not None else "see `tk --help`"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print_json_error(message, fix, code)
        try:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
        except (ImportError, AttributeError, TypeError):
            typer.echo(f"Error: {message}", err=True)
        sys.exit(code)
    sys.exit(rv if isinstance(rv, int) else 0)
