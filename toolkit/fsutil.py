"""Small file-system helpers: atomic writes with explicit modes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from toolkit.errors import FileWriteError


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The temporary file is created with ``mode`` from the start (no window where a secret is
    world-readable), fsynced, then renamed over ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileWriteError(
            f"cannot write {path}: {exc.strerror or exc}",
            fix=f"make {path.parent} writable or choose another directory",
        ) from None
    atomic_write_all({path: data}, mode)


def atomic_write_all(files: Mapping[Path, str | bytes], mode: int = 0o600) -> None:
    """Write several files so that all of them are replaced or none is.

    Every file is written to a temporary file first (``mode`` from the start, fsynced); each
    target is checked to be replaceable; only then are the temporaries renamed into place.
    """
    temps: list[tuple[str, Path]] = []
    current: Path | None = None
    try:
        for path, data in files.items():
            current = path
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
        for _, path in temps:  # catch what would fail a rename before any rename
            current = path
            if path.is_dir():
                raise IsADirectoryError(21, "not a replaceable file", str(path))
        for tmp, path in temps:
            current = path
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        where = current if current is not None else ", ".join(str(p) for p in files)
        raise FileWriteError(
            f"cannot write {where}: {exc.strerror or exc}",
            fix=f"make {Path(where).parent if current else 'the directory'} writable "
            "or choose another directory",
        ) from None
    for parent in {path.parent for path in files}:
        with contextlib.suppress(OSError):
            dfd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) if missing; raise FileWriteError naming it on failure."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        raise FileWriteError(
            f"cannot create directory {path}: {exc.strerror or exc}",
            fix="choose a writable project directory (TK_PROJECT_DIR) or fix its permissions",
        ) from None
    if not os.access(path, os.W_OK):
        raise FileWriteError(
            f"directory {path} is not writable",
            fix="fix its permissions or choose another directory",
        )
    return path
