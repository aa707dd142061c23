"""What sharing the cores with the service costs a CPU-bound process, per image.

    .venv/bin/python bench/bench_share.py                # 4 rounds of 15 s each way
    .venv/bin/python bench/bench_share.py --rounds 6 --seconds 20

The end-to-end figure in bench_serve.py falls short of the ceiling for two reasons, and this
separates them. Each round measures, back to back (order alternating):
- alone: the ceiling's processes (channels_last + trace, batch 2, one single-threaded process
  per core) with nothing else running: CPU time per image;
- beside: one of those processes while one `tk worker` serves the sync flow at concurrency 64
  next to it (the API, Redis and the load client running too): the CPU time per image of the
  ceiling process and of the worker (from Redis's completed counter), and the CPU time the
  API, Redis and the client spend per image the worker completes.
So "beside / alone" is what sharing the cores costs any CPU-bound process (cache and
scheduling), "worker / ceiling beside" is what the worker itself adds, and the API + Redis +
client figure is the service's own share. CPU time per image is measured instead of
throughput: it does not depend on how the two cores are split between the processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serve as bs  # the stack, the ceiling's processes, the client


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _completed(stack: bs.Stack) -> int:
    """Tasks acked so far: entries the group has read minus those still pending (Redis 7+).
    Not the tasks_completed metric: a busy worker writes that at most once a second."""
    from toolkit.queue import constants as C

    group = next(g for g in stack.admin().xinfo_groups(C.TASK_STREAM) if g["name"] == C.GROUP)
    return int(group["entries-read"]) - int(group["pending"])


def _ms_per_image(cpu_s: float, rate: float, seconds: float) -> float:
    """CPU ms per image of a ceiling measurement: its CPU time covers the unmeasured
    warm-up too, run at the same rate."""
    return cpu_s / (rate * (seconds + bs.CEILING_WARM_S)) * 1000


def alone(data: bytes, seconds: float, procs: int) -> float:
    """CPU ms per image of the ceiling's processes with nothing else running."""
    with bs.CeilingProcs(data, "trace", 2, procs, 1) as c:
        pids = [p.pid for p in c.ps if p.pid is not None]
        c0 = sum(_cpu(p) for p in pids)
        rate = c.measure(seconds)  # images/s over `seconds`, after CEILING_WARM_S unmeasured
        c1 = sum(_cpu(p) for p in pids)
    return _ms_per_image(c1 - c0, rate, seconds)


def beside(stack: bs.Stack, c: bs.CeilingProcs, data: bytes, seconds: float) -> dict[str, float]:
    """CPU ms per image of one ceiling process and of the worker, serving side by side."""
    load = threading.Thread(
        target=lambda: bs.run_client(bs.drive(stack.port, data, 64, seconds + 6, 0, True))
    )
    load.start()
    time.sleep(2.0)  # the queue fills
    pid = c.ps[0].pid
    assert pid is not None
    k0, s0, n0 = _cpu(pid), stack.cpu_s(), _completed(stack)
    rate = c.measure(seconds)
    k1, s1, n1 = _cpu(pid), stack.cpu_s(), _completed(stack)
    load.join()
    done = max(1, n1 - n0)
    out = {
        "ceiling_beside_ms": _ms_per_image(k1 - k0, rate, seconds),
        "worker_beside_ms": (s1["w0"] - s0["w0"]) / done * 1000,
    }
    for name in ("api", "redis", "client"):
        out[f"{name}_us"] = (s1[name] - s0[name]) / done * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15.0, help="per measurement")
    args = ap.parse_args()

    data = bs.image_bytes("chelsea")
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    with bs.Stack(1, 1, 4, 5) as stack, bs.CeilingProcs(data, "trace", 2, 1, 1) as c:
        stack.start_workers()
        for i in range(args.rounds):
            row: dict[str, Any] = {"round": i + 1}
            if i % 2 == 0:
                row["ceiling_alone_ms"] = alone(data, args.seconds, cores)
            row.update(beside(stack, c, data, args.seconds))
            if i % 2 == 1:
                row["ceiling_alone_ms"] = alone(data, args.seconds, cores)
            row["beside_vs_alone"] = row["ceiling_beside_ms"] / row["ceiling_alone_ms"]
            row["worker_vs_ceiling_beside"] = row["worker_beside_ms"] / row["ceiling_beside_ms"]
            rows.append(row)
            print("  " + "  ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    cols = [
        "round",
        "ceiling_alone_ms",
        "ceiling_beside_ms",
        "worker_beside_ms",
        "beside_vs_alone",
        "worker_vs_ceiling_beside",
        "api_us",
        "redis_us",
        "client_us",
    ]
    median = {"round": "median"} | {k: statistics.median(r[k] for r in rows) for k in cols[1:]}
    shown = [
        {k: f"{v:.3f}" if k.endswith(("_alone", "_beside")) else v for k, v in r.items()}
        for r in [*rows, median]
    ]
    print()
    bs.print_table(shown, cols)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
