"""How to name `tk` in a printed hint so that the user can paste it and it runs.

After ./scripts/up, `tk` lives in .venv/bin and is usually not on PATH: a hint that says
`tk down` would answer "command not found". ``tk_command()`` is `tk` when PATH finds this
very tk, else the path of the running executable (relative to the current directory when
that is shorter), plus ``-C DIR`` when the project was named on the command line and is not
the current directory.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from toolkit.config import Settings


def running_tk() -> str | None:
    """The `tk` script running now (absolute path), or None (e.g. `python -m toolkit`
    without a `tk` script next to the interpreter)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and Path(argv0).name == "tk" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    # `python -m toolkit` (the detached supervisor) or an embedding (tests): the script
    # installed with this interpreter. Not resolved: a venv's python is a symlink.
    sibling = Path(sys.executable).parent / "tk"
    return str(sibling) if sibling.is_file() else None


def shortest(path: str | Path) -> str:
    """``path`` relative to the current directory when that is shorter, else absolute."""
    try:
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute)
    except (OSError, ValueError):  # the current directory is gone; another drive (Windows)
        return str(path)
    return rel if len(rel) < len(absolute) else absolute


def tk_command(s: Settings | None = None) -> str:
    """`tk`, `.venv/bin/tk` or `/abs/.venv/bin/tk`, plus ``-C DIR`` when needed."""
    exe = running_tk()
    if exe is None:
        cmd = f"{shlex.quote(shortest(sys.executable))} -m toolkit"
    else:
        found = shutil.which("tk")
        same = found is not None and os.path.realpath(found) == os.path.realpath(exe)
        path = shortest(exe)
        if os.sep not in path:
            path = os.path.join(".", path)  # a bare name would be looked up on PATH
        cmd = "tk" if same else shlex.quote(path)
    if s is not None and s.source("project_dir") == "flag":
        try:
            here: Path | None = Path.cwd().resolve()
        except OSError:
            here = None
        if s.project_dir != here:
            cmd += f" -C {shlex.quote(shortest(s.project_dir))}"
    return cmd


def tk(s: Settings | None, args: str) -> str:
    """A whole command in backquotes: `` `.venv/bin/tk down` ``."""
    return f"`{tk_command(s)} {args}`"
