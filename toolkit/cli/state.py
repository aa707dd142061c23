"""Global options (``tk --project-dir``) carried to every command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.config import Settings

_global_flags: dict[str, Any] = {}


def set_global(**flags: Any) -> None:
    _global_flags.clear()
    _global_flags.update({k: v for k, v in flags.items() if v is not None})


def settings(**flags: Any) -> Settings:
    """Settings resolved from global flags plus this command's flags (None = not given)."""
    merged = dict(_global_flags)
    merged.update({k: v for k, v in flags.items() if v is not None})
    if isinstance(merged.get("project_dir"), str):
        merged["project_dir"] = Path(merged["project_dir"])
    return Settings.resolve(flags=merged)
