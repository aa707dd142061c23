"""The process plan for `tk up`: which processes, with which commands, env, ports, files. Pure.

``build_plan`` takes facts (found by ``toolkit.stack.facts``) and settings and returns a
``StackPlan``; `tk up --dry-run` prints it; the supervisor runs it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.config import Settings
from toolkit.procs import SUPERVISED_ENV
from toolkit.redis.urls import mask_url

MAX_DEFAULT_WORKERS = 8
WORKER_RSS_BUDGET = 1200 * 1024 * 1024
"""Memory a CPU worker with the default model needs, with headroom (measured: < 1 GB)."""


@dataclass(frozen=True)
class ProcSpec:
    role: str  # redis | worker | api
    name: str  # redis, worker-1, ..., api
    argv: tuple[str, ...]
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # added to the environment; no secrets

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["argv"], d["log"] = list(self.argv), str(self.log)
        return d


@dataclass(frozen=True)
class Facts:
    """What the plan depends on that is read from the machine."""

    cpu_count: int
    gpu_count: int
    mem_available: int
    worker_python: Path
    env_prefix: Path | None
    python_reason: str
    api_python: Path
    redis_server: Path | None  # None when --redis-url points elsewhere
    redis_version: str | None
    conf_exists: bool
    redis_port: int
    hostname: str = "localhost"


@dataclass(frozen=True)
class StackPlan:
    project_dir: Path
    procs: tuple[ProcSpec, ...]
    workers: int
    workers_reason: str
    worker_python: Path
    env_prefix: Path | None
    python_reason: str
    harden_first: bool
    external_redis: str | None  # masked URL when Redis is not ours
    redis_port: int | None
    api_url: str
    log_dir: Path
    run_dir: Path
    warnings: tuple[str, ...] = ()  # one line each, for the user; the plan is still run

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["procs"] = [p.to_dict() for p in self.procs]
        d["warnings"] = list(self.warnings)
        for k in ("project_dir", "worker_python", "env_prefix", "log_dir", "run_dir"):
            d[k] = None if d[k] is None else str(d[k])
        return d


def fit_in_memory(f: Facts) -> int:
    """How many CPU workers with the default model fit in the available memory (at least 1)."""
    return max(1, f.mem_available // WORKER_RSS_BUDGET)


def default_workers(f: Facts) -> tuple[int, str]:
    """One per GPU; else one single-threaded worker per core, as memory allows (max 8)."""
    if f.gpu_count:
        return f.gpu_count, f"one per GPU ({f.gpu_count})"
    by_mem = fit_in_memory(f)
    n = max(1, min(f.cpu_count, by_mem, MAX_DEFAULT_WORKERS))
    why = f"{f.cpu_count} CPU cores, {by_mem} fit in available memory"
    return n, f"one single-threaded worker per core ({why})"


def workers_warning(f: Facts, n: int, what: str = "--workers") -> str | None:
    """One line when ``n`` workers (asked for with ``what``) oversubscribe this machine."""
    over: list[str] = []
    risks: list[str] = []
    if n > f.cpu_count:
        over.append(f"the {f.cpu_count} CPU core{'s' if f.cpu_count != 1 else ''}")
        risks.append("they will compete for the cores")
    by_mem = fit_in_memory(f)
    if n > by_mem:
        from toolkit.units import human_size

        over.append(
            f"the {by_mem} that fit in available memory "
            f"({human_size(f.mem_available)}, about {human_size(WORKER_RSS_BUDGET)} each)"
        )
        risks.append("expect swapping or workers killed for memory")
    if not over:
        return None
    return f"{what} {n} is more than {' and '.join(over)}: {'; '.join(risks)}"


def build_plan(s: Settings, f: Facts, workers: int | None = None) -> StackPlan:
    warning = None
    if workers:
        n, why = workers, "--workers"
        warning = workers_warning(f, n)
    elif s.serve_workers is not None:  # serve.workers in tk.yaml, or TK_SERVE_WORKERS
        n, why = s.serve_workers, f"serve.workers ({s.source('serve_workers')})"
        warning = workers_warning(f, n, "serve.workers")
    else:
        n, why = default_workers(f)
    base = ("-m", "toolkit", "-C", str(s.project_dir))
    common = {"TK_PROJECT_DIR": str(s.project_dir), "TK_SERVE_WORKERS": str(n), SUPERVISED_ENV: "1"}
    procs: list[ProcSpec] = []
    if s.redis_url is None:
        conf = s.redis_conf_dir / "redis.conf"
        server = str(f.redis_server) if f.redis_server else "redis-server"
        procs.append(ProcSpec("redis", "redis", (server, str(conf)), s.log_dir / "redis.out"))
    threads = 1 if not f.gpu_count else max(1, f.cpu_count // n)
    # Consumer names must be unique per Redis: with a shared Redis, prefix the host name.
    prefix = f"{f.hostname}-" if s.redis_url else ""
    for i in range(1, n + 1):
        name = f"{prefix}worker-{i}"
        argv = (str(f.worker_python), *base, "worker", "--name", name)
        env = dict(common, TK_SERVE_THREADS=str(threads))
        if f.gpu_count:  # one GPU per worker
            env["CUDA_VISIBLE_DEVICES"] = str((i - 1) % f.gpu_count)
        procs.append(ProcSpec("worker", name, argv, s.log_dir / f"{name}.log", env))
    api_argv = (
        str(f.api_python),
        *base,
        "api",
        "--host",
        s.serve_host,
        "--port",
        str(s.serve_port),
    )
    procs.append(ProcSpec("api", "api", api_argv, s.log_dir / "api.log", dict(common)))
    host = f"[{s.serve_host}]" if ":" in s.serve_host else s.serve_host
    return StackPlan(
        project_dir=s.project_dir,
        procs=tuple(procs),
        workers=n,
        workers_reason=why,
        worker_python=f.worker_python,
        env_prefix=f.env_prefix,
        python_reason=f.python_reason,
        harden_first=s.redis_url is None and not f.conf_exists,
        external_redis=mask_url(s.redis_url) if s.redis_url else None,
        redis_port=None if s.redis_url else f.redis_port,
        api_url=f"http://{host}:{s.serve_port}",
        log_dir=s.log_dir,
        run_dir=s.run_dir,
        warnings=(warning,) if warning else (),
    )
