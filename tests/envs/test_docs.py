"""Every `tk env` command has help text and a place in docs/env.md."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli import env as env_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "env.md"


def test_every_env_command_is_documented() -> None:
    group = typer.main.get_command(env_cli.app)
    names = sorted(group.commands)  # type: ignore[attr-defined]
    assert {"create", "lock", "validate", "diff", "export", "render", "list", "remove"} <= set(
        names
    )
    text = DOC.read_text()
    missing = [n for n in names if f"`tk env {n}" not in text]
    assert not missing, f"not in docs/env.md: {missing}"
    for n in names:
        assert (group.commands[n].help or "").strip()  # type: ignore[attr-defined]
