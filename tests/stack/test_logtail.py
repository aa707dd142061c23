"""`tk logs -f` follows like `tail -F`: new files, truncation, replacement, partial lines."""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.stack.logtail import LogFollower, role_of


def _append(p: Path, text: str) -> None:
    with p.open("a") as f:
        f.write(text)


def test_follows_new_files_truncation_replacement_and_partial_lines(tmp_path: Path) -> None:
    api = tmp_path / "api.log"
    api.write_text("old 1\nold 2\nold 3\n")
    tail = LogFollower(tmp_path)
    assert tail.history(2) == [("api", "old 2"), ("api", "old 3")]
    assert tail.poll() == []

    _append(api, "new line\nhalf a li")
    assert tail.poll() == [("api", "new line")]  # the half line waits for its newline
    _append(api, "ne\n")
    assert tail.poll() == [("api", "half a line")]

    w3 = tmp_path / "worker-3.log"  # a worker started after `tk logs -f`
    w3.write_text("worker-3 ready\n")
    assert tail.poll() == [("worker-3", "worker-3 ready")]

    api.write_text("")  # truncated (copytruncate rotation)
    _append(api, "after truncate\n")
    assert tail.poll() == [("api", "after truncate")]

    os.replace(tmp_path / "worker-3.log", tmp_path / "worker-3.log.1")  # rotated away
    w3.write_text("fresh file\n")
    assert tail.poll() == [("worker-3", "fresh file")]

    w3.unlink()
    assert tail.poll() == []


def test_role_filter_and_names(tmp_path: Path) -> None:
    for name in ("api.log", "redis.log", "worker-1.log", "worker-2.log"):
        (tmp_path / name).write_text(f"{name}\n")
    tail = LogFollower(tmp_path, lambda p: role_of(p.name) == "worker")
    assert [n for n, _ in tail.history(5)] == ["worker-1", "worker-2"]
    assert role_of("redis.log") == "redis" and role_of("api.log") == "api"
