"""Process helpers shared by `tk redis` and `tk up`: detached spawn, liveness, stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from toolkit.errors import TkError

_SPAWN = 'cd "$1" || exit 97; shift; out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'


SUPERVISED_ENV = "TK_SUPERVISED"
"""Set to 1 by `tk up`'s supervisor in its children's environment, so that a child's error
names fixes that fit a stack (`tk up`'s flags, `tk logs`) rather than its own command's."""


def supervised() -> bool:
    """True in a process `tk up` started (its fixes should name `tk up`'s ways)."""
    return os.environ.get(SUPERVISED_ENV) == "1"


def spawn_detached(argv: list[str], cwd: Path, out: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` as a daemon: its own session, parent init, output appended to ``out``.

    A short-lived ``sh`` starts it in the background and exits, so the process is nobody's
    child here (no zombie, survives tk, safe from the terminal's Ctrl-C).
    """
    sh = subprocess.run(
        ["/bin/sh", "-c", _SPAWN, "tk-spawn", str(cwd), str(out), *argv],
        capture_output=True, text=True, start_new_session=True, timeout=30, check=False,
        env=env,
    )  # fmt: skip
    try:
        return int(sh.stdout.strip())
    except ValueError:
        raise TkError(f"could not start {argv[0]}: {sh.stderr.strip() or sh.returncode}") from None


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def started_at(pid: int) -> float | None:
    """The process's start time (psutil create_time), or None when it does not run."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def same_process(pid: int, started: float | None) -> bool:
    """``pid`` is alive and is the process that started at ``started`` (not a reused pid)."""
    if not alive(pid):
        return False
    now = started_at(pid)
    return started is None or (now is not None and abs(now - started) < 1.0)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has exited; returns those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def terminate(pids: list[int], timeout: float) -> list[int]:
    """SIGTERM, wait, then SIGKILL what is left; returns the pids that had to be killed."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    left = wait_gone(pids, timeout)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(left, 5)
    return left
