"""What wrote a Redis data directory: the RDB format version and the server named in the
RDB's aux fields (``redis-ver``, ``valkey-ver``), read from ``dump.rdb`` and from the AOF's
base file (``appendonlydir/*.base.rdb``). Pure reading, no server needed.

Used to explain a start-up failure such as "Can't handle RDB format version 11": valkey 8
writes format 11, which redis 7.0 (format 10) cannot load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"REDIS"
_AUX = 0xFA


@dataclass(frozen=True)
class DataFormat:
    file: Path
    rdb_version: int
    writer: str | None  # "valkey 8.1.8", "redis 7.0.15", or None when not recorded

    def describe(self) -> str:
        who = f"written by {self.writer}" if self.writer else "writer not recorded"
        return f"RDB format {self.rdb_version}, {who} ({self.file.name})"


def _length(buf: bytes, i: int) -> tuple[int | None, int, bool]:
    """RDB length encoding at ``i`` -> (length or int value, next index, is_int)."""
    first = buf[i]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, i + 1, False
    if kind == 1:
        return ((first & 0x3F) << 8) | buf[i + 1], i + 2, False
    if kind == 2:
        if first == 0x80:
            return int.from_bytes(buf[i + 1 : i + 5], "big"), i + 5, False
        if first == 0x81:
            return int.from_bytes(buf[i + 1 : i + 9], "big"), i + 9, False
        return None, i + 1, False
    size = {0: 1, 1: 2, 2: 4}.get(first & 0x3F)  # integers stored as strings
    if size is None:
        return None, i + 1, False  # compressed string: not expected in aux fields
    return int.from_bytes(buf[i + 1 : i + 1 + size], "little", signed=True), i + 1 + size, True


def _string(buf: bytes, i: int) -> tuple[str | None, int]:
    n, j, is_int = _length(buf, i)
    if n is None:
        return None, j
    if is_int:
        return str(n), j
    return buf[j : j + n].decode("utf-8", "replace"), j + n


def parse_header(buf: bytes) -> tuple[int, dict[str, str]] | None:
    """(RDB version, aux fields) from the first bytes of an RDB file; None if not an RDB."""
    m = re.match(rb"REDIS(\d{4})", buf)
    if m is None:
        return None
    version, aux, i = int(m.group(1)), {}, 9
    try:
        while i < len(buf) and buf[i] == _AUX:
            key, i = _string(buf, i + 1)
            value, i = _string(buf, i)
            if key is None or value is None:
                break
            aux[key] = value
    except IndexError:  # a header cut short: keep what was read
        pass
    return version, aux


def _writer(aux: dict[str, str]) -> str | None:
    if "valkey-ver" in aux:
        return f"valkey {aux['valkey-ver']}"
    if "redis-ver" in aux:
        return f"redis {aux['redis-ver']}"
    return None


def read(path: Path) -> DataFormat | None:
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return None
    parsed = parse_header(head)
    if parsed is None:
        return None
    version, aux = parsed
    return DataFormat(path, version, _writer(aux))


def data_format(data_dir: Path) -> DataFormat | None:
    """The newest RDB format among the AOF base files and dump.rdb in ``data_dir``."""
    candidates = [*sorted((data_dir / "appendonlydir").glob("*.base.rdb")), data_dir / "dump.rdb"]
    found = [f for f in (read(p) for p in candidates if p.is_file()) if f is not None]
    return max(found, key=lambda f: f.rdb_version, default=None)


_CANT_LOAD = re.compile(r"Can't handle RDB format version (\d+)")


def unreadable_version(server_error: str) -> int | None:
    """The RDB version in a server's "Can't handle RDB format version N" line, if any."""
    m = _CANT_LOAD.search(server_error)
    return int(m.group(1)) if m else None
