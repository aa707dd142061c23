"""`tk doctor` env group: the workers' environment exists, matches its lock, holds torch."""

from __future__ import annotations

from pathlib import Path

from toolkit.health.context import Ctx
from toolkit.health.model import Outcome, fail, ok, skip, warn
from toolkit.stack.pyenv import EnvMissing, WorkerPython, torch_facts, worker_python


def _expected(ctx: Ctx) -> WorkerPython:
    """The python the running stack uses (from its state), else the one `tk up` would pick.

    Raises EnvMissing when serve.env names an environment that is not there.
    """
    state = ctx.stack_state
    if state and state.get("python"):
        prefix = state.get("env_prefix")
        return WorkerPython(
            Path(state["python"]), Path(prefix) if prefix else None, "the running stack's"
        )
    return worker_python(ctx.s)


def env_exists(ctx: Ctx) -> Outcome:
    from toolkit.envs import locations

    try:
        wp = _expected(ctx)
    except EnvMissing as exc:
        return fail(exc.message, exc.fix or "")
    if wp.env_prefix is None:
        return ok(f"no conda env: workers use {wp.python} ({wp.reason})")
    if locations.read_marker(wp.env_prefix) is None or not wp.python.exists():
        return fail(
            f"environment {wp.env_prefix} is missing or incomplete",
            "rebuild it: `tk env create` (then restart: `tk down && tk up`)",
        )
    return ok(f"environment {wp.env_prefix}")


def env_drift(ctx: Ctx) -> Outcome:
    from toolkit.envs import service

    wp = _expected(ctx)
    if wp.env_prefix is None or not wp.env_prefix.exists():
        return skip("no conda env")
    try:
        d = service.env_diff(wp.env_prefix, ctx.s.env_spec)
    except Exception as exc:
        return warn(f"cannot compare with the lock: {exc}", "run `tk env diff`")
    changed = sum(len(d.get(k, [])) for k in ("added", "removed", "changed"))
    if changed:
        return warn(f"{changed} packages differ from the lock", "see `tk env diff`")
    return ok("installed packages match the lock")


def env_torch(ctx: Ctx) -> Outcome:
    wp = _expected(ctx)
    facts = torch_facts(wp)
    if facts is None:
        return fail(f"torch is not installed for {wp.python}", "pip install -e '.[serve]'")
    build = f"CUDA {facts.cuda}" if facts.cuda else "CPU"
    return ok(f"torch {facts.version} ({build} build) for {wp.python}")


def env_variant(ctx: Ctx) -> Outcome:
    from toolkit.envs import locations

    wp = _expected(ctx)
    facts = torch_facts(wp)
    if wp.env_prefix is None or facts is None:
        return skip("no conda env variant to compare")
    marker = locations.read_marker(wp.env_prefix) or {}
    variant = str(marker.get("variant") or "")
    if not variant:
        return skip("variant unknown (env not built by tk)")
    want_cuda = variant.split("-", 1)[1] if variant.startswith("cuda-") else None
    if want_cuda is None and facts.cuda is not None:
        return fail(f"variant cpu but torch is a CUDA {facts.cuda} build", "`tk env create --cpu`")
    if want_cuda is not None and facts.cuda != want_cuda:
        return fail(
            f"variant {variant} but torch is a {facts.cuda or 'CPU'} build",
            f"`tk env create --cuda {want_cuda}`",
        )
    return ok(f"torch matches variant {variant}")


def env_driver(ctx: Ctx) -> Outcome:
    from toolkit.envs import facts as envfacts
    from toolkit.envs import gpu

    probe = gpu.detect(timeout=ctx.timeout)
    if not probe.present or probe.driver is None:
        return skip(probe.describe())
    tf = torch_facts(_expected(ctx))
    if tf is None or tf.cuda is None:
        return ok(f"driver {probe.driver}; torch is a CPU build")
    verdict = envfacts.driver_verdict(tf.cuda, probe.driver)
    if verdict.status == "too_old":
        return fail(verdict.message, f"install NVIDIA driver >= {verdict.min_driver}")
    if verdict.status == "compat":
        return warn(verdict.message, f"upgrade the driver to >= {verdict.min_driver}")
    return ok(verdict.message)
