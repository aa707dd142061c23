"""What the ``tk env`` commands do, as library functions. Effects live here and in the
engines; the CLI only parses flags and prints. Messages go through ``say`` (one line each)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import __version__
from toolkit.config import Settings
from toolkit.envs import engine_conda, gpu, locations, lock, spec, validate, variants
from toolkit.envs.errors import EnvNotFound, InstallError, LockMismatch, VariantRefused
from toolkit.envs.lock import LockedPackage
from toolkit.envs.variants import Rendered, Variant
from toolkit.fsutil import atomic_write

Say = Callable[[str], None]
Progress = Callable[[int, int, str], None]


def _quiet(_: str) -> None:
    return None


def current_platform() -> str:
    import rattler

    return str(rattler.Subdir.current())


@dataclass
class CreateRequest:
    spec_path: Path
    name: str | None = None
    prefix: Path | None = None
    cuda: str | None = None
    cpu: bool = False
    engine: str = "rattler"
    channels: tuple[str, ...] = ()
    locked: bool = False
    dry_run: bool = False
    validate: bool = True


@dataclass
class Plan:
    spec: spec.EnvSpec
    choice: variants.Choice
    rendered: Rendered
    prefix: Path
    platform: str
    packages: list[LockedPackage]
    source: str  # "lock" or "solve"
    probe: gpu.GpuProbe | None
    validate: bool = True  # the marker records "pending" until validation passes


def plan(settings: Settings, req: CreateRequest, say: Say = _quiet) -> Plan:
    """Decide the variant, then take the packages from the lock or from a fresh solve."""
    env_spec = spec.load(req.spec_path)
    probe = None if req.cpu else gpu.detect()
    choice = variants.choose(env_spec, req.cuda, req.cpu, probe)
    say(f"variant {choice.variant.name}: {choice.reason}")
    for note in choice.notes:
        say(f"note: {note}")
    rendered = variants.render(env_spec, choice.variant, req.channels)
    prefix = locations.resolve_prefix(settings, req.name or env_spec.name, req.prefix)
    platform = current_platform()
    current = _read_lock(env_spec.lock_path, req.locked, say)
    if req.locked:
        if current is None:
            raise LockMismatch(
                f"--locked but there is no lock file {env_spec.lock_path}",
                fix="run `tk env lock` first",
            )
        pkgs = current.require(rendered, platform, env_spec.lock_path)
        return Plan(env_spec, choice, rendered, prefix, platform, pkgs, "lock", probe, req.validate)
    pkgs_or_none = current.packages(rendered, platform) if current else None
    if pkgs_or_none is not None:
        return Plan(
            env_spec, choice, rendered, prefix, platform, pkgs_or_none, "lock", probe, req.validate
        )
    from toolkit.envs import engine_rattler

    say(f"solving {len(rendered.conda)} specs for {platform} ({', '.join(rendered.channels)})")
    prefer = current.previous(rendered.variant.name, platform) if current else None
    pkgs = engine_rattler.solve(rendered, platform, prefer, _repodata_cache(settings))
    return Plan(env_spec, choice, rendered, prefix, platform, pkgs, "solve", probe, req.validate)


def _read_lock(path: Path, locked: bool, say: Say) -> lock.Lock | None:
    """The lock; a damaged one is an error with --locked, otherwise solved again and
    overwritten (said in one line). A lock from a newer tk is always an error."""
    try:
        return lock.read(path)
    except lock.CorruptLock as exc:
        if locked:
            raise
        say(f"note: {exc.message.rstrip('.')}: solving again; the lock will be overwritten")
        return None


def _repodata_cache(settings: Settings) -> Path | None:
    cache = settings.env_cache_dir
    return cache.parent / f"{cache.name}-repodata" if cache is not None else None


def up_to_date(p: Plan) -> bool:
    """The prefix was built completely from exactly this spec and package set."""
    marker = locations.read_marker(p.prefix)
    if marker is None:
        return False
    same = (
        marker.get("spec_hash") == p.rendered.spec_hash()
        and marker.get("lock_hash") == lock.content_hash(p.packages)
        and marker.get("platform") == p.platform
    )
    return same and installed_dists(p.prefix) == {pkg.dist for pkg in p.packages}


def installed_records(prefix: Path) -> list[dict[str, Any]]:
    meta = prefix / "conda-meta"
    out = []
    for f in sorted(meta.glob("*.json")) if meta.is_dir() else []:
        if f.name == locations.MARKER.name:
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "name" in data:
            out.append(data)
    return out


def installed_dists(prefix: Path) -> set[str]:
    return {f"{r['name']}-{r['version']}-{r['build']}" for r in installed_records(prefix)}


def create(
    settings: Settings, req: CreateRequest, say: Say = _quiet, progress: Progress | None = None
) -> dict[str, Any]:
    p = plan(settings, req, say)
    result: dict[str, Any] = {
        "prefix": str(p.prefix),
        "variant": p.choice.variant.name,
        "reason": p.choice.reason,
        "notes": list(p.choice.notes),
        "platform": p.platform,
        "packages": len(p.packages),
        "source": p.source,
        "gpu": p.probe.to_dict() if p.probe else None,
    }
    if up_to_date(p):
        last = locations.validation_state(locations.read_marker(p.prefix))
        if last not in locations.NEEDS_VALIDATION:
            say(f"{p.prefix} is up to date (spec and lock unchanged): nothing to do")
            return {**result, "status": "unchanged"}
        what = "failed" if last == "failed" else "did not finish"
        if not req.dry_run and not req.validate:
            say(f"{p.prefix} is up to date (spec and lock unchanged), but its last validation "
                f"{what} (--no-validate: not checked again)")  # fmt: skip
            return {**result, "status": "unchanged", "validation": last}
        if not req.dry_run:
            say(f"{p.prefix}: packages unchanged, but its last validation {what}: validating again")
            checks = run_validation(p.prefix, p.spec, p.choice.variant)
            record_validation(p.prefix, checks)
            return {**result, "status": "revalidated", "checks": [c.to_dict() for c in checks]}
    if req.dry_run:
        diff = diff_packages(p.packages, installed_records(p.prefix))
        return {**result, "status": "dry-run", "diff": diff}
    if p.source == "solve":
        write_lock(p)
        say(f"wrote {p.spec.lock_path} ({len(p.packages)} packages)")
    install(settings, p, req.engine, say, progress)
    result["status"] = "created"
    if req.validate:
        checks = run_validation(p.prefix, p.spec, p.choice.variant)
        record_validation(p.prefix, checks)
        result["checks"] = [c.to_dict() for c in checks]
    return result


def record_validation(prefix: Path, checks: list[validate.Check]) -> None:
    """Write the validation result into the completion marker of a prefix tk built: a failed
    validation leaves the env marked "failed" (`tk env list`), and the next `create` checks
    it again instead of calling it up to date."""
    marker = locations.read_marker(prefix)
    if marker is None:
        return
    marker["validation"] = "failed" if validate.failed(checks) else "ok"
    marker["validated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write(prefix / locations.MARKER, json.dumps(marker, indent=2) + "\n", mode=0o644)


def write_lock(p: Plan) -> None:
    current = _read_lock(p.spec.lock_path, False, _quiet) or lock.Lock(p.spec.path.name)
    current.put(p.rendered, p.platform, p.packages)
    current.write(p.spec.lock_path)


def _refuse_foreign(prefix: Path) -> None:
    """Never replace a directory tk did not build (a hand-made conda env, or anything else)."""
    if not prefix.exists() or locations.read_marker(prefix) is not None:
        return
    if prefix.is_dir() and not any(prefix.iterdir()):
        prefix.rmdir()
        return
    raise InstallError(
        f"{prefix} exists and was not built by tk; refusing to replace it",
        fix="remove it first (`tk env remove`, or `conda env remove`) or pick another name",
    )


def _prepare_parent(prefix: Path) -> None:
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{prefix.name}{locations.PARTIAL_TAG}", dir=prefix.parent)
        os.rmdir(probe)
    except OSError as exc:
        raise InstallError(
            f"cannot create {prefix}: {exc.strerror or exc}",
            fix="choose a writable place with --prefix, or fix the directory's permissions",
        ) from None
    for stale in prefix.parent.glob(f".{prefix.name}{locations.PARTIAL_TAG}*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed earlier run


def install(settings: Settings, p: Plan, engine: str, say: Say, progress: Progress | None) -> None:
    """Build the prefix so that it is either complete (marker written last) or absent."""
    if engine != "rattler":
        engine_conda.find(engine, source=settings.source("env_engine"))
    _refuse_foreign(p.prefix)
    _prepare_parent(p.prefix)
    if engine == "rattler":
        _install_rattler(settings, p, say, progress)
    else:
        _install_cli(engine, p, say)


def _install_rattler(settings: Settings, p: Plan, say: Say, progress: Progress | None) -> None:
    from toolkit.envs import engine_rattler

    tmp = Path(
        tempfile.mkdtemp(prefix=f".{p.prefix.name}{locations.PARTIAL_TAG}", dir=p.prefix.parent)
    )
    try:
        say(f"installing {len(p.packages)} packages into {p.prefix}")
        engine_rattler.install(
            p.packages, tmp, p.prefix, p.rendered.conda, settings.env_cache_dir, progress
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "CACHEDIR.TAG").unlink(missing_ok=True)  # rattler marks the prefix as a cache dir
    old = _move_aside(p.prefix)
    try:
        os.rename(tmp, p.prefix)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _put_back(old, p.prefix)
        raise
    _finish(p, "rattler", old)


def _move_aside(prefix: Path) -> Path | None:
    """Rename an existing prefix out of the way (it comes back if the new one fails)."""
    if not prefix.exists():
        return None
    old = prefix.with_name(f".{prefix.name}{locations.OLD_TAG}{os.getpid()}")
    os.rename(prefix, old)
    return old


def _put_back(old: Path | None, prefix: Path) -> None:
    shutil.rmtree(prefix, ignore_errors=True)
    if old is not None:
        os.rename(old, prefix)


def _finish(p: Plan, engine: str, old: Path | None) -> None:
    """pip section, then the marker; on any failure the new prefix goes and the old returns."""
    try:
        if p.rendered.pip:
            pip_install(p.prefix, p.rendered.pip, p.spec.path.parent)
        write_marker(p, engine)
    except BaseException:
        _put_back(old, p.prefix)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _install_cli(engine: str, p: Plan, say: Say) -> None:
    engine_conda.find(engine)
    old = _move_aside(p.prefix)
    with tempfile.TemporaryDirectory() as td:
        explicit = Path(td) / "explicit.txt"
        explicit.write_text(lock.explicit_file(p.packages))
        cmd = engine_conda.create_explicit(engine, explicit, p.prefix)
        say(f"running {cmd.shell()}")
        try:
            engine_conda.run(cmd)
        except BaseException:
            _put_back(old, p.prefix)
            raise
    _finish(p, engine, old)


def pip_install(prefix: Path, lines: tuple[str, ...], cwd: Path) -> None:
    python = validate.find_python(prefix)
    if python is None:
        raise InstallError(
            f"the spec has pip dependencies but {prefix} has no python",
            fix="add python and pip to the conda dependencies",
        )
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(lines) + "\n")
        req = fh.name
    try:
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "--no-input", "-r", req],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(req)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        raise InstallError(
            f"pip install of the spec's pip section failed: {' '.join(tail)}",
            fix="fix the pip: entries (pip's full output: run it in the env)",
        )


def write_marker(p: Plan, engine: str) -> None:
    data = {
        "tk_version": __version__,
        "spec": str(p.spec.path.absolute()),
        "name": p.prefix.name,
        "variant": p.choice.variant.name,
        "platform": p.platform,
        "engine": engine,
        "spec_hash": p.rendered.spec_hash(),
        "lock_hash": lock.content_hash(p.packages),
        "packages": len(p.packages),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # "pending" until create's validation passes ("ok") or fails ("failed")
        "validation": "pending" if p.validate else "skipped",
    }
    atomic_write(p.prefix / locations.MARKER, json.dumps(data, indent=2) + "\n", mode=0o644)


def run_validation(
    prefix: Path,
    env_spec: spec.EnvSpec | None,
    variant: Variant | None,
    python: Path | None = None,
    probe: gpu.GpuProbe | None = None,
) -> list[validate.Check]:
    probes = env_spec.probes if env_spec is not None else spec.Probes()
    probe = probe or gpu.detect()
    facts = validate.run_probes(prefix, probes, python)
    return validate.evaluate(facts, probes, variant, probe.present)


def lock_variants(env_spec: spec.EnvSpec, cuda: str | None, cpu: bool) -> list[Variant]:
    if cpu or cuda:
        choice = variants.choose(env_spec, cuda, cpu, None)
        return [choice.variant]
    out = [Variant("cpu")]
    for c in env_spec.cuda_versions:
        try:
            variants.choose(env_spec, c, False, None)
        except VariantRefused:
            continue
        out.append(Variant("cuda", c))
    return out


def make_lock(
    spec_path: Path,
    platforms: tuple[str, ...],
    cuda: str | None,
    cpu: bool,
    channels: tuple[str, ...],
    say: Say = _quiet,
) -> dict[str, Any]:
    """Solve each (variant, platform) and write the lock file. Returns a summary."""
    from toolkit.envs import engine_rattler

    env_spec = spec.load(spec_path)
    current = _read_lock(env_spec.lock_path, False, say) or lock.Lock(env_spec.path.name)
    done: list[dict[str, Any]] = []
    for variant in lock_variants(env_spec, cuda, cpu):
        rendered = variants.render(env_spec, variant, channels)
        for platform in platforms or env_spec.platforms:
            if variant.kind == "cuda" and platform.startswith("osx"):
                say(f"skip {variant.name} on {platform}: macOS has no CUDA")
                continue
            pkgs = engine_rattler.solve(rendered, platform)
            current.put(rendered, platform, pkgs)
            say(f"locked {variant.name} on {platform}: {len(pkgs)} packages")
            done.append({"variant": variant.name, "platform": platform, "packages": len(pkgs)})
    current.write(env_spec.lock_path)
    return {"lock": str(env_spec.lock_path), "locked": done}


def diff_packages(
    locked: list[LockedPackage], records: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """added (in the prefix, not the lock), removed (in the lock, not the prefix), changed."""
    want = {p.name: p for p in locked}
    have = {str(r["name"]): r for r in records}
    added = sorted(f"{n}-{have[n]['version']}-{have[n]['build']}" for n in have.keys() - want)
    removed = sorted(want[n].dist for n in want.keys() - have)
    changed = []
    for n in sorted(want.keys() & have.keys()):
        w, h = want[n], have[n]
        got = f"{h['version']}-{h['build']}"
        if got != f"{w.version}-{w.build}" or (
            w.sha256 and h.get("sha256") not in (None, w.sha256)
        ):
            changed.append(f"{n}: lock {w.version}-{w.build}, prefix {got}")
    return {"added": added, "removed": removed, "changed": changed}


def env_diff(prefix: Path, spec_path: Path | None) -> dict[str, Any]:
    marker = locations.require_env(prefix)
    path = Path(marker.get("spec") or spec_path or "")
    if spec_path is not None:
        path = spec_path
    env_spec = spec.load(path)
    current = lock.read(env_spec.lock_path)
    if current is None or not marker.get("variant"):
        raise EnvNotFound(f"no lock to compare {prefix} with", fix=f"run `tk env lock -f {path}`")
    entry = current.variants.get(str(marker["variant"]))
    platform = str(marker.get("platform") or current_platform())
    if entry is None or platform not in entry.platforms:
        raise EnvNotFound(f"{env_spec.lock_path} has no {marker['variant']} / {platform} entry")
    diff = diff_packages(entry.platforms[platform], installed_records(prefix))
    return {
        "prefix": str(prefix),
        "lock": str(env_spec.lock_path),
        "variant": marker["variant"],
        **diff,
        "spec_changed": spec_changed(env_spec, entry, Variant.parse(str(marker["variant"]))),
    }


def spec_changed(env_spec: spec.EnvSpec, entry: lock.LockedVariant, variant: Variant) -> str | None:
    """What changed in the spec since ``entry`` was locked (as `create --locked` would say), or
    None when the lock still matches (also when it was made with --channel)."""
    plain = variants.render(env_spec, variant)
    with_channels = variants.render(env_spec, variant, tuple(entry.channels))
    if entry.spec_hash in (plain.spec_hash(), with_channels.spec_hash()):
        return None
    return lock.what_changed(entry, plain)


def export(prefix: Path, no_builds: bool) -> str:
    """``conda env export`` style YAML of what is installed."""
    import yaml

    locations.require_env(prefix)
    records = installed_records(prefix)
    channels: list[str] = []
    deps: list[Any] = []
    for r in sorted(records, key=lambda r: str(r["name"])):
        ch = _channel_name(str(r.get("channel") or ""))
        if ch and ch not in channels:
            channels.append(ch)
        deps.append(f"{r['name']}={r['version']}" + ("" if no_builds else f"={r['build']}"))
    pip = _pip_installed(prefix)
    if pip:
        deps.append({"pip": pip})
    body = {"name": prefix.name, "channels": channels, "dependencies": deps, "prefix": str(prefix)}
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def _channel_name(url: str) -> str:
    url = url.rstrip("/")
    for base in ("https://conda.anaconda.org/", "https://repo.anaconda.com/pkgs/"):
        if url.startswith(base):
            return url[len(base) :]
    return url


def _pip_installed(prefix: Path) -> list[str]:
    python = validate.find_python(prefix)
    if python is None:
        return []
    code = (
        "from importlib import metadata\n"
        "for d in metadata.distributions():\n"
        "    if (d.read_text('INSTALLER') or '').strip() == 'pip':\n"
        "        print(f\"{d.metadata['Name']}=={d.version}\")\n"
    )
    try:
        proc = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(line for line in proc.stdout.splitlines() if line.strip())


def check_removable(prefix: Path) -> None:
    """EnvNotFound unless ``prefix`` is an environment (a directory holding conda-meta/)."""
    if not prefix.exists():
        raise EnvNotFound(f"no environment at {prefix}", fix="check the name with `tk env list`")
    if not (prefix / "conda-meta").is_dir():
        raise EnvNotFound(
            f"{prefix} is not an environment (no conda-meta/): refusing to delete it",
            fix="check the name with `tk env list`",
        )


def remove(prefix: Path) -> None:
    """Delete an environment tk or conda built (it must hold conda-meta/)."""
    check_removable(prefix)
    trash = prefix.with_name(f".{prefix.name}{locations.OLD_TAG}{os.getpid()}")
    try:
        os.rename(prefix, trash)
    except OSError as exc:
        raise InstallError(f"cannot remove {prefix}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):
        shutil.rmtree(trash)
