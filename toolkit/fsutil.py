"""Small file-system helpers: atomic writes with explicit modes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from toolkit.errors import FileWriteError


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The temporary file is created with ``mode`` from the start (no window where a secret is
    world-readable), fsynced, then renamed over ``path``.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FileWriteError(
            f"cannot write {path}: {exc.strerror or exc}",
            fix=f"make {path.parent} writable or choose another directory",
        ) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
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
