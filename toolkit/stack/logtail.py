"""Follow the stack's log files like `tail -F`: files that appear later (a worker added, a
stack started after `tk logs -f`), files truncated or replaced (read again from the start),
files deleted (dropped), and no half-written line printed before its newline arrives."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def role_of(name: str) -> str:
    """'worker-2.log' -> 'worker', 'api.log' -> 'api', 'redis.log' -> 'redis'."""
    return "worker" if "worker-" in name else name.split(".")[0]


@dataclass
class _Tracked:
    inode: int
    offset: int
    partial: bytes = b""


@dataclass
class LogFollower:
    log_dir: Path
    want: Callable[[Path], bool] = lambda _p: True
    files: dict[Path, _Tracked] = field(default_factory=dict)

    def current(self) -> list[Path]:
        return sorted(p for p in self.log_dir.glob("*.log") if self.want(p))

    def history(self, lines: int) -> list[tuple[str, str]]:
        """The last ``lines`` lines of each file there now; later polls start after them."""
        out: list[tuple[str, str]] = []
        for f in self.current():
            with contextlib.suppress(OSError):
                data = f.read_bytes()
                st = f.stat()
                text = data.decode(errors="replace")
                complete, _, partial = text.rpartition("\n")  # ("", "", text) if none
                for line in complete.splitlines()[-lines:] if lines > 0 else []:
                    out.append((f.stem, line))
                self.files[f] = _Tracked(st.st_ino, len(data), partial.encode())
        return out

    def poll(self) -> list[tuple[str, str]]:
        """Complete lines written since the last call, new files included (from the start)."""
        out: list[tuple[str, str]] = []
        present = set(self.current())
        for gone in set(self.files) - present:
            del self.files[gone]
        for f in sorted(present):
            try:
                st = f.stat()
            except OSError:
                continue
            t = self.files.get(f)
            if t is None or t.inode != st.st_ino or st.st_size < t.offset:
                t = self.files[f] = _Tracked(st.st_ino, 0)  # new, replaced or truncated
            if st.st_size == t.offset:
                continue
            try:
                with f.open("rb") as fh:
                    fh.seek(t.offset)
                    data = fh.read()
            except OSError:
                continue
            t.offset += len(data)
            buf = t.partial + data
            *complete, t.partial = buf.split(b"\n")
            out += [(f.stem, line.decode(errors="replace")) for line in complete]
        return out
