"""The running stack's record in ``.tk/run/stack.json``: supervisor pid, children, ports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.fsutil import atomic_write
from toolkit.procs import same_process

STATE_FILE = "stack.json"


def path(run_dir: Path) -> Path:
    return run_dir / STATE_FILE


def read(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(run_dir: Path, data: dict[str, Any]) -> None:
    atomic_write(path(run_dir), json.dumps(data, indent=2, default=str) + "\n", mode=0o600)


def remove(run_dir: Path) -> None:
    path(run_dir).unlink(missing_ok=True)


def running(run_dir: Path) -> dict[str, Any] | None:
    """The record of a stack whose supervisor is alive, else None."""
    data = read(run_dir)
    pid = data.get("supervisor_pid") if data else None
    if data and isinstance(pid, int) and same_process(pid, data.get("supervisor_started")):
        return data
    return None


def live_children(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Recorded children still running (a pid reused by another process does not count)."""
    return [
        p
        for p in data.get("procs", [])
        if isinstance(p.get("pid"), int) and same_process(p["pid"], p.get("pid_started"))
    ]
