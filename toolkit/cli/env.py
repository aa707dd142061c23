"""``tk env``: build, lock and validate the conda environment the workers run in.

Heavy imports (rattler, the solver) happen inside the commands, so ``tk --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolkit.cli._common import console, handle_errors, print_json, warn
from toolkit.cli.state import settings
from toolkit.errors import UsageError

app = typer.Typer(
    help="Build, lock and validate conda environments for PyTorch (cpu or cuda variants).",
    no_args_is_help=True,
)

# Optional[...] rather than X | None: typer needs it on Python 3.10.
OptPath = Optional[Path]  # noqa: UP045
OptStr = Optional[str]  # noqa: UP045
OptList = Optional[list[str]]  # noqa: UP045

FileOpt = Annotated[
    OptPath,
    typer.Option(
        "--file", "-f", help="Environment spec (default: envs/inference.yml; env TK_ENV_SPEC)."
    ),
]
CudaOpt = Annotated[
    OptStr, typer.Option("--cuda", help="The PyTorch CUDA variant, e.g. 12.4.", metavar="X.Y")
]
CpuOpt = Annotated[bool, typer.Option("--cpu", help="Build the CPU-only variant.")]
PrefixOpt = Annotated[OptPath, typer.Option("--prefix", "-p", help="Environment directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
NameArg = Annotated[
    OptStr, typer.Argument(help="Environment name (default: the spec's name).", show_default=False)
]


def _say_to(as_json: bool) -> Any:
    def say(line: str) -> None:
        typer.echo(line, err=as_json)

    return say


def _spec_path(file: Path | None) -> Path:
    return file if file is not None else settings().env_spec


def _target(name: str | None, prefix: Path | None, file: Path | None) -> Path:
    from toolkit.envs import locations, spec

    if prefix is None and name is None:
        name = spec.load(_spec_path(file)).name
    return locations.resolve_prefix(settings(), name, prefix)


class _Bar:
    """A progress bar on a terminal; on a pipe, nothing (the summary lines suffice)."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None

    def __call__(self, done: int, total: int, name: str) -> None:
        if not sys.stderr.isatty():
            return
        if self.progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.progress = Progress(
                TextColumn("linking"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=total)
        self.progress.update(self.task, completed=done, total=total, description=name)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command("create")
@handle_errors
def create_cmd(
    name: NameArg = None,
    file: FileOpt = None,
    cuda: CudaOpt = None,
    cpu: CpuOpt = False,
    engine: Annotated[
        OptStr,
        typer.Option(
            "--engine",
            help="rattler (built in, no conda needed), conda, mamba or micromamba "
            "(default: rattler; env TK_ENV_ENGINE).",
        ),
    ] = None,
    prefix: PrefixOpt = None,
    channel: Annotated[
        OptList, typer.Option("--channel", "-c", help="Use these channels instead of the spec's.")
    ] = None,
    locked: Annotated[
        bool, typer.Option("--locked", help="Install exactly the lock; refuse a stale lock.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Solve and show; change nothing.")
    ] = False,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip the validation probes.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the environment: pick the variant, solve, install, lock, validate.

    Packages come from the lock when it matches the spec; otherwise tk solves, writes the lock.

    Does nothing, and says so, when spec, lock and prefix are unchanged.

    Without --cuda/--cpu: detects GPU and driver, picks the newest CUDA the driver runs.

    A CUDA version the driver cannot run is refused before any download.
    """
    from toolkit.envs import service
    from toolkit.envs.engine_conda import ENGINES

    s = settings(env_engine=engine)
    if s.env_engine not in ENGINES:
        src = s.source("env_engine")
        where = "" if src == "flag" else f" (from {src})"
        raise UsageError(
            f"unknown engine {s.env_engine!r}{where}", fix=f"one of {', '.join(ENGINES)}"
        )
    req = service.CreateRequest(
        spec_path=_spec_path(file),
        name=name,
        prefix=prefix,
        cuda=cuda,
        cpu=cpu,
        engine=s.env_engine,
        channels=tuple(channel or ()),
        locked=locked,
        dry_run=dry_run,
        validate=not no_validate,
    )
    bar = _Bar()
    try:
        result = service.create(s, req, say=_say_to(as_json), progress=bar)
    finally:
        bar.close()
    _finish_create(result, as_json)


def _finish_create(result: dict[str, Any], as_json: bool) -> None:
    from toolkit.envs import validate

    checks = [
        validate.Check(c["check"], c["status"], c["message"]) for c in result.get("checks", [])
    ]
    bad = validate.failed(checks)
    if as_json:
        print_json({**result, "ok": not bad})
        raise typer.Exit(1 if bad else 0)
    if result["status"] == "dry-run":
        diff = result["diff"]
        typer.echo(
            f"dry run: {result['packages']} packages ({result['source']}) for {result['prefix']}"
        )
        # diff is lock-vs-prefix: what the lock has and the prefix lacks gets installed
        for key, verb in (("removed", "install"), ("added", "remove"), ("changed", "change")):
            for item in diff[key]:
                typer.echo(f"  would {verb}: {item}")
        return
    if result["status"] == "created":
        typer.echo(
            f"created {result['prefix']} ({result['variant']}, {result['packages']} packages)"
        )
    if checks:
        _print_checks(checks, result["prefix"])
    if bad:
        validate.raise_if_failed(
            checks,
            Path(result["prefix"]),
            fix="see the report above (re-check with `tk env validate`); the env is marked "
            "failed and the next `tk env create` validates it again",
        )


def _print_checks(checks: list[Any], where: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    colors = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
    table = Table(title=escape(f"validate: {where}"))
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for c in checks:
        color = colors.get(c.status, "")
        table.add_row(escape(c.name), f"[{color}]{c.status}[/{color}]", escape(c.message))
    console().print(table)


@app.command("lock")
@handle_errors
def lock_cmd(
    file: FileOpt = None,
    platform: Annotated[
        OptList,
        typer.Option(
            "--platform", help="Platform to lock, repeatable (default: the spec's platforms)."
        ),
    ] = None,
    cuda: CudaOpt = None,
    cpu: CpuOpt = False,
    channel: Annotated[
        OptList, typer.Option("--channel", "-c", help="Use these channels instead of the spec's.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Solve and write the lock file (exact URLs and sha256 per platform and variant).

    Without --cuda/--cpu every variant is locked: cpu and each CUDA version the spec lists.
    """
    from toolkit.envs import service
    from toolkit.envs.spec import PLATFORMS

    for p in platform or []:
        if p not in PLATFORMS:
            raise UsageError(f"unknown platform {p!r}", fix=f"one of {', '.join(PLATFORMS)}")
    out = service.make_lock(
        _spec_path(file),
        tuple(platform or ()),
        cuda,
        cpu,
        tuple(channel or ()),
        say=_say_to(as_json),
    )
    if as_json:
        print_json(out)
    else:
        typer.echo(f"wrote {out['lock']}")


@app.command("validate")
@handle_errors
def validate_cmd(
    name: NameArg = None,
    prefix: PrefixOpt = None,
    python: Annotated[
        OptPath,
        typer.Option("--python", help="Validate this interpreter (a venv's python, say)."),
    ] = None,
    file: FileOpt = None,
    cuda: CudaOpt = None,
    cpu: CpuOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the probes with the environment's own python; exit 1 when a check fails.

    Checks: imports; torch's CUDA build against the variant; CUDA available (GPU present).

    Also: one tensor op on the device, no package from both conda and pip, pip check.
    """
    from toolkit.envs import facts, locations, service, spec, validate
    from toolkit.envs.variants import Variant

    if cuda and cpu:
        raise UsageError("give --cuda X.Y or --cpu, not both")
    if python is not None and prefix is None and name is None:
        prefix = python.absolute().parent.parent
        marker = None
    else:
        prefix = _target(name, prefix, file)
        marker = locations.require_env(prefix)
    variant = Variant("cpu") if cpu else Variant("cuda", facts.parse_cuda(cuda)) if cuda else None
    if variant is None and marker and marker.get("variant"):
        variant = Variant.parse(str(marker["variant"]))
    spec_file = file or (Path(marker["spec"]) if marker and marker.get("spec") else None)
    if file is None and spec_file is not None and not spec_file.exists():
        warn(f"the spec the env was built from ({spec_file}) is gone: default probes only")
        spec_file = None
    env_spec = spec.load(spec_file) if spec_file is not None else None
    checks = service.run_validation(prefix, env_spec, variant, python)
    recorded = marker.get("variant") if marker else None
    same_spec = file is None or (marker and Path(file).absolute() == Path(marker.get("spec", "")))
    if python is None and recorded and variant and variant.name == recorded and same_spec:
        service.record_validation(prefix, checks)  # `tk env list` shows the latest result
    bad = validate.failed(checks)
    if as_json:
        print_json({"prefix": str(prefix), "ok": not bad, "checks": [c.to_dict() for c in checks]})
        raise typer.Exit(1 if bad else 0)
    _print_checks(checks, str(prefix))
    validate.raise_if_failed(
        checks, prefix, fix="see the checks above; `tk env create` rebuilds the environment"
    )


@app.command("diff")
@handle_errors
def diff_cmd(
    name: NameArg = None, prefix: PrefixOpt = None, file: FileOpt = None, as_json: JsonOpt = False
) -> None:
    """Drift between the lock and the prefix: added, removed, changed. Exit 1 on drift."""
    from toolkit.envs import service

    target = _target(name, prefix, file)
    out = service.env_diff(target, file)
    drift = bool(out["added"] or out["removed"] or out["changed"])
    if as_json:
        print_json({**out, "drift": drift})
    elif not drift:
        typer.echo(f"{target} matches {out['lock']} ({out['variant']})")
    else:
        for key, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
            for item in out[key]:
                typer.echo(f"{sign} {key}: {item}")
    if out["spec_changed"] and not as_json:
        typer.echo(
            f"note: the spec changed since the lock ({out['spec_changed']}): "
            f"`tk env create --locked` would refuse it (no longer matches the spec); "
            f"`tk env create` re-solves and updates the lock",
        )
    raise typer.Exit(1 if drift else 0)


@app.command("export")
@handle_errors
def export_cmd(
    name: NameArg = None,
    prefix: PrefixOpt = None,
    file: FileOpt = None,
    no_builds: Annotated[
        bool, typer.Option("--no-builds", help="Leave out build strings.")
    ] = False,
) -> None:
    """Print the installed packages as environment.yml (like `conda env export`)."""
    from toolkit.envs import service

    typer.echo(service.export(_target(name, prefix, file), no_builds), nl=False)


@app.command("render")
@handle_errors
def render_cmd(
    file: FileOpt = None,
    cuda: CudaOpt = None,
    cpu: CpuOpt = False,
    output: Annotated[OptPath, typer.Option("--output", "-o", help="Write here.")] = None,
) -> None:
    """Write a plain environment.yml for one variant, for users of plain conda."""
    import dataclasses

    from toolkit.envs import spec, variants
    from toolkit.fsutil import atomic_write

    if not cuda and not cpu:
        raise UsageError("pick the variant to render: --cuda X.Y or --cpu")
    env_spec = spec.load(_spec_path(file))
    choice = variants.choose(env_spec, cuda, cpu, None)
    for note in choice.notes:
        if "no GPU check" not in note:
            warn(note)
    rendered = variants.render(env_spec, choice.variant)
    spec_dir = env_spec.path.parent
    if output is None:
        if variants.has_relative_pip_path(rendered.pip):
            warn(f"pip paths are relative to {spec_dir.absolute()}: save the output there, or "
                 "use -o FILE (tk rewrites them for FILE's directory)")  # fmt: skip
        typer.echo(variants.environment_yml(rendered), nl=False)
    else:
        pip = variants.relocate_pip(rendered.pip, spec_dir, output.parent)
        text = variants.environment_yml(dataclasses.replace(rendered, pip=pip))
        atomic_write(output, text, mode=0o644)
        typer.echo(f"wrote {output}")


@app.command("check-spec")
@handle_errors
def check_spec_cmd(
    file: Annotated[
        OptPath, typer.Argument(help="Spec to check (default: envs/inference.yml).")
    ] = None,
) -> None:
    """Check a spec: schema errors with line numbers (exit 2), then warnings."""
    from toolkit.envs import spec
    from toolkit.envs.errors import SpecError

    path = _spec_path(file)
    if not path.exists():
        raise SpecError(
            f"spec file {path} not found",
            fix=f"pass one (`tk env check-spec FILE`) or create {path} (see docs/env.md)",
        )
    report = spec.check(path)
    for p in report.errors:
        typer.echo(f"error: {p.render(path)}", err=True)
    for p in report.warnings:
        typer.echo(f"warning: {p.render(path)}", err=True)
    n = len(report.warnings)
    if report.errors:
        e = len(report.errors)
        typer.echo(
            f"tk: error: {path}: {e} error{'s' if e != 1 else ''}"
            f"{f', {n} warning' + ('s' if n != 1 else '') if n else ''}; fix: see the lines above",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(f"{path}: ok ({n} warning{'s' if n != 1 else ''})")


@app.command("list")
@handle_errors
def list_cmd(as_json: JsonOpt = False) -> None:
    """List environments in the envs directory, with whether tk built them completely."""
    from toolkit.envs import locations

    where = locations.envs_dir(settings())
    entries = locations.list_envs(where.path)
    if as_json:
        print_json({"envs_dir": str(where.path), "why": where.why,
                    "envs": [e.to_dict() for e in entries]})  # fmt: skip
        return
    typer.echo(f"# {where.path} ({where.why})")
    if not entries:
        typer.echo(f"no environments in {where.path} (create one with `tk env create`)")
    for e in entries:
        typer.echo(f"{e.name:24} {e.status:8} {e.variant or '-':12} {e.prefix}")


@app.command("remove")
@handle_errors
def remove_cmd(
    name: Annotated[str, typer.Argument(help="Environment name.")] = "",
    prefix: PrefixOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete an environment (only a directory holding conda-meta/)."""
    from toolkit.envs import service

    target = _target(name or None, prefix, None)
    service.check_removable(target)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"not deleting {target}: no terminal to ask for confirmation on",
                fix="pass --yes to delete without asking",
            )
        if not typer.confirm(f"delete {target}?"):
            raise typer.Exit(1)
    service.remove(target)
    typer.echo(f"removed {target}")


@app.command("gpu")
@handle_errors
def gpu_cmd(as_json: JsonOpt = False) -> None:
    """Show the detected GPUs and driver, and which CUDA versions the driver runs."""
    from toolkit.envs import facts, gpu

    probe = gpu.detect()
    rows = [facts.driver_verdict(c, probe.driver) for c in facts.MIN_DRIVER] if probe.driver else []
    if as_json:
        print_json({**probe.to_dict(),
                    "cuda": {v.cuda: v.status for v in rows}})  # fmt: skip
        return
    typer.echo(probe.describe())
    for v in rows:
        typer.echo(f"  CUDA {v.cuda:5} {v.status:8} (needs >= {v.min_driver})")


__all__ = ["app"]
