"""The conda, mamba and micromamba engines: command lines built by pure functions, run only
when the engine is on PATH. They take the rendered environment.yml (solve) or the lock as an
``@EXPLICIT`` file (``--locked``); ``CONDA_OVERRIDE_CUDA`` plays the role of ``__cuda``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.envs.errors import EngineNotFound, InstallError

ENGINES = ("rattler", "conda", "mamba", "micromamba")
CLI_ENGINES = ("conda", "mamba", "micromamba")


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return (env + " " if env else "") + " ".join(self.argv)


def _env(cuda: str | None) -> dict[str, str]:
    # An empty override tells conda "no CUDA": a cpu env built on a GPU box stays portable.
    return {"CONDA_OVERRIDE_CUDA": cuda or ""}


def create_from_file(
    engine: str, env_file: Path, prefix: Path, cuda: str | None, dry_run: bool = False
) -> Command:
    """Solve and create ``prefix`` from a rendered environment.yml."""
    if engine == "micromamba":
        argv = ["micromamba", "create", "--yes", "--prefix", str(prefix), "--file", str(env_file)]
    else:
        argv = [engine, "env", "create", "--yes", "--prefix", str(prefix), "--file", str(env_file)]
    if dry_run:
        argv.append("--dry-run")
    return Command(argv, _env(cuda))


def create_explicit(engine: str, explicit: Path, prefix: Path) -> Command:
    """Install exactly the packages of an ``@EXPLICIT`` file (no solve)."""
    if engine == "micromamba":
        argv = ["micromamba", "create", "--yes", "--prefix", str(prefix), "--file", str(explicit)]
    else:
        argv = [engine, "create", "--yes", "--prefix", str(prefix), "--file", str(explicit)]
    return Command(argv, {})


def remove(engine: str, prefix: Path) -> Command:
    return Command([engine, "env", "remove", "--yes", "--prefix", str(prefix)], {})


def find(engine: str, environ: Mapping[str, str] | None = None, source: str = "flag") -> str:
    """The engine's executable, or EngineNotFound saying how to get one. ``source`` is where
    the engine setting came from (Settings.source): the message names it."""
    environ = os.environ if environ is None else environ
    exe = shutil.which(engine, path=environ.get("PATH"))
    if exe is None:
        if source == "flag":
            where, back = f"--engine {engine}", "--engine rattler"
        elif source.startswith("env "):
            var = source[4:]
            where, back = f"{var}={engine} (environment)", f"unset {var} or set it to rattler"
        elif source.startswith("tk.yaml"):
            where, back = f"env.engine: {engine} in tk.yaml", "set env.engine: rattler in tk.yaml"
        else:
            where, back = f"engine {engine} ({source})", "--engine rattler"
        raise EngineNotFound(
            f"{where}: `{engine}` is not on PATH",
            fix=f"install it, or use the default engine ({back}; it needs no conda)",
        )
    return exe


def run(cmd: Command, environ: Mapping[str, str] | None = None) -> None:
    exe = find(cmd.argv[0], environ)
    env = dict(os.environ if environ is None else environ)
    env.update(cmd.env)
    try:
        proc = subprocess.run([exe, *cmd.argv[1:]], env=env, check=False)
    except OSError as exc:
        raise InstallError(f"cannot run {cmd.argv[0]}: {exc}") from None
    if proc.returncode != 0:
        raise InstallError(
            f"`{cmd.shell()}` failed with exit code {proc.returncode}",
            fix="read the engine's output above",
        )
