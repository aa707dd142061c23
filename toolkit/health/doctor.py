"""Run the checks: groups in parallel, each check timed, a hung check reported as a fail."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from toolkit.config import Settings
from toolkit.errors import UsageError
from toolkit.health import checks, env_checks
from toolkit.health.context import Ctx
from toolkit.health.model import GROUPS, Check, Report, Result, select

ALL_CHECKS: tuple[Check, ...] = (
    *[c for c in checks.CHECKS if c.group == "host"],
    Check("env", "exists", env_checks.env_exists),
    Check("env", "lock-drift", env_checks.env_drift),
    Check("env", "torch", env_checks.env_torch),
    Check("env", "variant", env_checks.env_variant),
    Check("env", "driver", env_checks.env_driver),
    *[c for c in checks.CHECKS if c.group != "host"],
)


def _run_one(check: Check, ctx: Ctx) -> Result:
    t0 = time.perf_counter()
    try:
        status, finding, fix = check.run(ctx)
    except UsageError as exc:  # e.g. serve.env missing: reported by env.exists
        status, finding, fix = "skip", exc.message, ""
    except Exception as exc:
        status, finding, fix = "fail", f"check raised {type(exc).__name__}: {exc}", ""
    ms = (time.perf_counter() - t0) * 1000
    return Result(check.group, check.id, status, " ".join(finding.split()), fix, round(ms, 1))


def run(settings: Settings, only: Sequence[str] = (), skip: Sequence[str] = ()) -> Report:
    """Run the selected checks; returns within about ``doctor_timeout`` x 3 + 1 seconds.

    Four lanes run side by side in daemon threads (host, env, redis+queue+workers, api), so
    a check that hangs costs its lane, not the report, and does not hold the process open.
    """
    chosen = select(ALL_CHECKS, only, skip)
    ctx = Ctx(settings)
    by_group = {g: [c for c in chosen if c.group == g] for g in GROUPS}
    redis_like = by_group["redis"] + by_group["queue"] + by_group["workers"]
    lanes = [lane for lane in (by_group["host"], by_group["env"], redis_like, by_group["api"])
             if lane]  # fmt: skip
    results: dict[tuple[str, str], Result] = {}
    lock = threading.Lock()

    def run_lane(lane: list[Check]) -> None:
        for c in lane:
            r = _run_one(c, ctx)
            with lock:
                results[(c.group, c.id)] = r

    threads = [threading.Thread(target=run_lane, args=(lane,), daemon=True) for lane in lanes]
    for t in threads:
        t.start()
    budget = settings.doctor_timeout * 3 + 1
    deadline = time.monotonic() + budget
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with lock:
        done = dict(results)
    out = []
    for c in chosen:
        out.append(done.get((c.group, c.id)) or Result(
            c.group, c.id, "fail", f"no answer within {budget:.0f}s",
            "check the network path to the service",
        ))  # fmt: skip
    return Report(out)
