"""Where environments live: ``<conda root>/envs/NAME`` when a conda installation exists (so
``conda activate NAME`` finds it), else a tk-managed directory. Also the completion marker
that says a prefix was built completely (written last)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.config import Settings
from toolkit.envs.errors import EnvNotFound
from toolkit.errors import UsageError

MARKER = Path("conda-meta") / "tk-env.json"
PARTIAL_TAG = ".tk-partial-"
OLD_TAG = ".tk-old-"
_CANDIDATES = ("miniforge3", "mambaforge", "miniconda3", "anaconda3", "micromamba")


def find_conda_root(environ: Mapping[str, str], home: Path) -> Path | None:
    """The conda installation's root prefix (holds ``conda-meta/``), or None."""
    hints: list[Path] = []
    if environ.get("CONDA_EXE"):
        hints.append(Path(environ["CONDA_EXE"]).resolve().parent.parent)
    for var in ("CONDA_ROOT", "_CONDA_ROOT", "MAMBA_ROOT_PREFIX"):
        if environ.get(var):
            hints.append(Path(environ[var]))
    hints += [home / c for c in _CANDIDATES] + [Path("/opt/conda")]
    for root in hints:
        if (root / "conda-meta").is_dir():
            return root
    return None


@dataclass(frozen=True)
class EnvsDir:
    path: Path
    why: str


def envs_dir(settings: Settings, environ: Mapping[str, str] | None = None) -> EnvsDir:
    """Where a named environment goes: setting > conda root > tk's own directory."""
    environ = os.environ if environ is None else environ
    if settings.envs_dir is not None:
        return EnvsDir(settings.envs_dir, f"envs_dir ({settings.source('envs_dir')})")
    root = settings.conda_root or find_conda_root(environ, Path.home())
    if root is not None:
        return EnvsDir(root / "envs", f"conda installation at {root}")
    return EnvsDir(settings.state_dir / "envs", "no conda installation found: tk's envs dir")


def check_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or name in ("base", "root"):
        raise UsageError(f"invalid environment name {name!r}", fix="use letters, digits, - and _")
    return name


def resolve_prefix(settings: Settings, name: str | None, prefix: Path | None) -> Path:
    if prefix is not None:
        return prefix.expanduser().absolute()
    if name is None:
        raise UsageError("give an environment NAME or --prefix DIR")
    return envs_dir(settings).path / check_name(name)


def read_marker(prefix: Path) -> dict[str, Any] | None:
    """The completion record of a prefix tk built, or None (not built by tk, or not finished)."""
    try:
        data = json.loads((prefix / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# The marker's "validation": "pending" (create's validation has not finished), "ok",
# "failed", "skipped" (--no-validate). Markers written before tk recorded it have none: ok.
NEEDS_VALIDATION = ("pending", "failed")


def validation_state(marker: Mapping[str, Any] | None) -> str | None:
    if marker is None:
        return None
    return str(marker.get("validation") or "ok")


def require_env(prefix: Path) -> dict[str, Any]:
    marker = read_marker(prefix)
    if marker is None:
        if (prefix / "conda-meta").is_dir():
            return {"prefix": str(prefix), "variant": None}
        raise EnvNotFound(
            f"no environment at {prefix}", fix="create it with `tk env create` (see `tk env list`)"
        )
    return marker


@dataclass(frozen=True)
class EnvEntry:
    name: str
    prefix: Path
    # "ok" (tk built it completely), "failed" (built, but its validation failed),
    # "unchecked" (built, validation never finished), "conda" (conda-meta, no tk record),
    # "partial" (a killed run's leftovers)
    status: str
    variant: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": str(self.prefix),
            "status": self.status,
            "variant": self.variant,
        }


def list_envs(directory: Path) -> list[EnvEntry]:
    if not directory.is_dir():
        return []
    out = []
    for child in sorted(directory.iterdir()):
        if not child.is_dir():
            continue
        if PARTIAL_TAG in child.name or OLD_TAG in child.name:
            out.append(EnvEntry(child.name, child, "partial", None))
            continue
        marker = read_marker(child)
        if marker is not None:
            state = validation_state(marker)
            status = {"failed": "failed", "pending": "unchecked"}.get(str(state), "ok")
            out.append(EnvEntry(child.name, child, status, marker.get("variant")))
        elif (child / "conda-meta").is_dir():
            out.append(EnvEntry(child.name, child, "conda", None))
    return out
