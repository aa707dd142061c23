"""Where environments land, and that `tk --help` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.config import Settings
from toolkit.envs import locations
from toolkit.errors import UsageError


def conda_root(path: Path) -> Path:
    (path / "conda-meta").mkdir(parents=True)
    return path


def test_conda_root_from_conda_exe_and_home(tmp_path: Path) -> None:
    root = conda_root(tmp_path / "miniforge3")
    env = {"CONDA_EXE": str(root / "bin" / "conda")}
    assert locations.find_conda_root(env, tmp_path / "nohome") == root
    assert locations.find_conda_root({}, tmp_path) == root
    assert locations.find_conda_root({}, tmp_path / "nohome") in (None, Path("/opt/conda"))


def test_envs_dir_precedence(tmp_path: Path) -> None:
    root = conda_root(tmp_path / "conda")
    s = Settings.resolve(flags={"project_dir": tmp_path, "conda_root": root}, environ={})
    assert locations.envs_dir(s, {}).path == root / "envs"
    s = Settings.resolve(environ={"TK_ENVS_DIR": str(tmp_path / "mine")}, cwd=tmp_path)
    assert locations.envs_dir(s, {}).path == tmp_path / "mine"
    assert "env TK_ENVS_DIR" in locations.envs_dir(s, {}).why


@pytest.mark.parametrize("bad", ["../x", "base", ".hidden"])
def test_prefix_names_are_checked(tmp_path: Path, bad: str) -> None:
    s = Settings.resolve(environ={"TK_ENVS_DIR": str(tmp_path)}, cwd=tmp_path)
    assert locations.resolve_prefix(s, "inference", None) == tmp_path / "inference"
    with pytest.raises(UsageError, match="invalid environment name"):
        locations.resolve_prefix(s, bad, None)


def test_tk_help_does_not_import_the_solver() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from toolkit.cli import app\n"
        "r = CliRunner().invoke(app, ['env', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rattler', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
