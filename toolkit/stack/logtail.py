"""Follow the stack's log files like `tail -F`: files that appear later (a worker added, a
stack started after `tk logs -f`), files truncated or replaced (read again from the start),
files deleted (dropped), and no half-written line printed before its newline arrives. And
the one line of a log that tells why a process stopped (``telling_line``), which `tk up`
quotes when a child or a detached supervisor fails."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def role_of(name: str) -> str:
    """'worker-2.log' -> 'worker', 'api.log' -> 'api', 'redis.log' -> 'redis'."""
    return "worker" if "worker-" in name else name.split(".")[0]


QUOTE_LIMIT = 2000
"""A quoted log line longer than this is cut at a word boundary, with an ellipsis."""
_ERROR_PREFIX = "tk: error: "
_MARKERS = ("FATAL", "Traceback", "Exception")  # besides "error" in any case


def telling_line(log: Path, mark: int, lines: int = 200) -> tuple[str, str | None]:
    """The most telling line written to ``log`` from byte ``mark`` on (this run's output, not
    an earlier run's: logs are appended to), as (what it said, the fix it named or None).

    tk's own one-line error (``tk: error: ...; fix: ...``) wins; else the newest line that
    looks like an error; else the last line."""
    try:
        with open(log, "rb") as fh:
            fh.seek(mark)
            text = fh.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return "no log", None
    text = [line.strip() for line in text if line.strip()]
    line = next((x for x in reversed(text) if x.startswith(_ERROR_PREFIX)), None)
    if line is None:
        line = next((x for x in reversed(text) if _looks_like_an_error(x)), None)
    if line is None:
        return (clip(text[-1]), None) if text else ("no output", None)
    said, sep, fix = line.removeprefix(_ERROR_PREFIX).rpartition("; fix: ")
    if not sep:
        return clip(fix), None
    return clip(said), clip(fix)


def _looks_like_an_error(line: str) -> bool:
    return "error" in line.lower() or any(m in line for m in _MARKERS)


def clip(line: str, limit: int = QUOTE_LIMIT) -> str:
    """``line`` whole, or cut at the last word boundary before ``limit`` with " ..."."""
    if len(line) <= limit:
        return line
    cut = line[:limit]
    if not line[limit].isspace() and " " in cut:
        cut = cut.rsplit(" ", 1)[0]  # the word running past the limit goes whole
    return cut.rstrip(" ,;:") + " ..."


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
