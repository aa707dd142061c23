"""The process plan `tk up` builds, as pure logic, and `tk up --dry-run`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_tk
from toolkit.config import Settings
from toolkit.stack.plan import Facts, build_plan, default_workers, workers_warning

GB = 1024**3


def _facts(**kw: object) -> Facts:
    base: dict[str, object] = dict(
        cpu_count=2, gpu_count=0, mem_available=20 * GB, worker_python=Path("/env/bin/python"),
        env_prefix=Path("/env"), python_reason="test", api_python=Path("/venv/bin/python"),
        redis_server=Path("/usr/bin/redis-server"), redis_version="redis 7.0.15",
        conf_exists=True, redis_port=6390,
    )  # fmt: skip
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def test_workers_sized_to_the_machine() -> None:
    assert default_workers(_facts(gpu_count=4))[0] == 4  # one per GPU
    assert default_workers(_facts(cpu_count=2))[0] == 2  # one per core
    assert default_workers(_facts(cpu_count=64))[0] == 8  # capped
    assert default_workers(_facts(cpu_count=16, mem_available=3 * GB))[0] == 2  # memory-bound


def test_plan_order_commands_and_no_secrets(project: Path) -> None:
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    plan = build_plan(s, _facts(), workers=3)
    assert [p.name for p in plan.procs] == ["redis", "worker-1", "worker-2", "worker-3", "api"]
    redis = plan.procs[0]
    assert redis.argv == ("/usr/bin/redis-server", str(s.redis_conf_dir / "redis.conf"))
    workers = [p for p in plan.procs if p.role == "worker"]
    assert all(p.argv[0] == "/env/bin/python" for p in workers)  # the env's python
    assert plan.procs[-1].argv[0] == "/venv/bin/python"  # the API never needs torch
    assert all(p.env["TK_SERVE_THREADS"] == "1" for p in workers)
    assert "CUDA_VISIBLE_DEVICES" not in workers[0].env


def test_serve_workers_in_tk_yaml_sets_the_count(project: Path) -> None:
    (project / "tk.yaml").write_text("serve:\n  workers: 3\n")
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    plan = build_plan(s, _facts())
    assert plan.workers == 3 and "serve.workers (tk.yaml serve.workers)" in plan.workers_reason
    assert plan.warnings == ("serve.workers 3 is more than the 2 CPU cores: they will "
                             "compete for the cores",)  # fmt: skip
    assert build_plan(s, _facts(), workers=1).workers == 1  # the flag wins


def test_one_gpu_per_worker(project: Path) -> None:
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    plan = build_plan(s, _facts(gpu_count=2, cpu_count=16))
    workers = [p for p in plan.procs if p.role == "worker"]
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == ["0", "1"]
    assert all(w.env["TK_SERVE_THREADS"] == "8" for w in workers)


def test_external_redis_is_not_started(project: Path) -> None:
    url = "redis://tk-api:secret-pw@10.1.2.3:6379/0"
    s = Settings.resolve(flags={"project_dir": project, "redis_url": url}, environ={})
    plan = build_plan(s, _facts(redis_server=None, hostname="gpu7"), workers=1)
    assert [p.role for p in plan.procs] == ["worker", "api"]
    assert plan.procs[0].name == "gpu7-worker-1"  # unique across hosts sharing one Redis
    assert plan.external_redis == "redis://tk-api:***@10.1.2.3:6379/0"
    assert "secret-pw" not in json.dumps(plan.to_dict())


def test_dry_run_prints_the_plan_and_starts_nothing(project: Path) -> None:
    result = run_tk(project, "up", "--dry-run", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "worker-2" in result.output and "tk redis harden" in result.output
    assert not (project / "redis-conf").exists() and not (project / ".tk").exists()
    plan = json.loads(run_tk(project, "up", "--dry-run", "--json").output)
    assert plan["procs"][0]["role"] == "redis"


def test_bad_worker_count(project: Path) -> None:
    result = run_tk(project, "up", "--workers", "0")
    assert result.exit_code == 2
    assert "--workers must be between 1 and 1024, got 0" in result.output


def test_more_workers_than_fit_is_a_one_line_warning(project: Path) -> None:
    assert workers_warning(_facts(cpu_count=4, mem_available=20 * GB), 4) is None
    cpu = workers_warning(_facts(cpu_count=2, mem_available=20 * GB), 3)
    assert cpu == "--workers 3 is more than the 2 CPU cores: they will compete for the cores"
    mem = workers_warning(_facts(cpu_count=64, mem_available=20 * GB), 20)
    assert mem is not None and mem.startswith(
        "--workers 20 is more than the 17 that fit in available memory (20.0 GiB, about "
    )
    both = workers_warning(_facts(cpu_count=2, mem_available=3 * GB), 5)
    assert both is not None and "\n" not in both
    assert "the 2 CPU cores and the 2 that fit in available memory" in both
    s = Settings.resolve(flags={"project_dir": project}, environ={})
    assert build_plan(s, _facts(cpu_count=2), workers=3).warnings == (cpu,)
    assert build_plan(s, _facts(cpu_count=1)).warnings == ()  # the default never warns
