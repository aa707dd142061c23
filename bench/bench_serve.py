"""Benchmark the inference service end to end and against its in-process ceiling.

    .venv/bin/python bench/bench_serve.py                      # ceiling + HTTP sweep
    .venv/bin/python bench/bench_serve.py --long 10000         # + a 10,000-task RSS run

Ceiling: the same model on the same image bytes, decode + preprocess + forward in-process (no
queue, no HTTP), eager and channels_last + trace + freeze, batch sizes 1..8, as one process
with all cores and as one single-threaded process per core; the best of these is the ceiling.

End to end: a hardened redis-server, the API and N workers (real processes, least-privilege
users), driven over HTTP by a lean keep-alive client at several concurrencies, in two flows:
poll = POST /predict (raw image body) then GET /result/{id}?wait=30; sync = POST
/predict?wait=30. Prints throughput and p50/p95/p99 latency, CPU and RSS of every process,
and Redis memory per waiting task.

Pairs: the best ceiling row (its processes kept loaded) and the top concurrency, measured
back to back --pairs times in alternating order; the ratio is the median of the rounds'
ratios (this machine's speed drifts by several percent within a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def image_bytes(name: str) -> bytes:
    """A sample photo from scikit-image's wheel, as a quality-90 JPEG."""
    import skimage
    from PIL import Image

    img = Image.open(Path(skimage.__file__).parent / "data" / f"{name}.png").convert("RGB")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


# --- ceiling --------------------------------------------------------------------------------


CEILING_WARM_S = 1.0
"""Unmeasured seconds a ceiling process runs before each measurement."""


def _pipeline_worker(
    data: bytes, how: str, batch: int, threads: int, conn: Any, barrier: Any
) -> None:
    """One ceiling process: load and warm up once, then for each number of seconds it is
    sent, start with the others (barrier), run CEILING_WARM_S unmeasured, measure, send
    images/s."""
    from toolkit.serve import malloc

    malloc.keep_heap()  # what workers do (toolkit/serve/malloc.py)
    import torch

    from toolkit.serve import models
    from toolkit.serve.images import load_rgb

    torch.set_num_threads(threads)
    m = models.load("efficientnet-lite0", "cpu", how)
    models.warm_up(m, [batch])

    def step() -> None:
        arrays = [load_rgb(data, 224, 256, 10**8) for _ in range(batch)]
        m.forward(m.prepare(arrays))

    for _ in range(3):
        step()
    conn.send("ready")
    while (seconds := conn.recv()) is not None:
        barrier.wait()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < CEILING_WARM_S:
            step()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            n += batch
        conn.send(n / (time.perf_counter() - t0))


class CeilingProcs:
    """The processes of one ceiling row, started once and kept (model loaded and warmed up,
    waiting on a pipe), so each measurement costs only its own seconds and can sit right
    next to an end-to-end run."""

    def __init__(self, data: bytes, how: str, batch: int, procs: int, threads: int) -> None:
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(procs)
        self.conns, self.ps = [], []
        for _ in range(procs):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(
                target=_pipeline_worker, args=(data, how, batch, threads, theirs, barrier)
            )
            p.start()
            self.conns.append(mine)
            self.ps.append(p)
        for conn in self.conns:
            if not conn.poll(180) or conn.recv() != "ready":
                self.close()
                raise RuntimeError("a ceiling process did not start")

    def measure(self, seconds: float) -> float:
        """Images/s of all the processes together, measured at the same time."""
        for conn in self.conns:
            conn.send(seconds)
        rates = []
        for conn in self.conns:
            if not conn.poll(seconds + 120):
                raise RuntimeError("a ceiling process did not report")
            rates.append(conn.recv())
        return float(sum(rates))

    def close(self) -> None:
        for conn, p in zip(self.conns, self.ps, strict=True):
            with contextlib.suppress(OSError):
                conn.send(None)
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()

    def __enter__(self) -> CeilingProcs:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def ceiling_run(data: bytes, how: str, batch: int, procs: int, threads: int, sec: float) -> float:
    with CeilingProcs(data, how, batch, procs, threads) as c:
        return c.measure(sec)


def ceiling(data: bytes, seconds: float, batches: list[int]) -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    rows = []
    for how in ("trace", "eager"):
        for batch in batches if how == "trace" else [1, 4]:
            for label, procs, threads in (
                (f"1 proc x {cores} threads", 1, cores),
                (f"{cores} procs x 1 thread", cores, 1),
            ):
                rate = ceiling_run(data, how, batch, procs, threads, seconds)
                rows.append(
                    {
                        "model": how,
                        "batch": batch,
                        "layout": label,
                        "procs": procs,
                        "threads": threads,
                        "images_s": rate,
                    }
                )
                print(
                    f"  ceiling {how:5} batch {batch}  {label:22} {rate:7.1f} images/s", flush=True
                )
    return rows


# --- a lean HTTP client -----------------------------------------------------------------------


def run_client(coro: Any) -> Any:
    """Run the load client on uvloop when installed (the serve extras have it): the client
    shares the cores with what it measures, so it should cost as little as it can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class Conn:
    """One keep-alive HTTP/1.1 connection (just what the benchmark needs)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", ctype: str = ""
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body or method == "POST":
            head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        payload = await self.reader.readexactly(length)
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    done: int = 0
    errors: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000

        return {
            "concurrency": self.concurrency,
            "images_s": self.done / self.seconds,
            "p50_ms": pct(50),
            "p95_ms": pct(95),
            "p99_ms": pct(99),
            "done": self.done,
            "errors": self.errors,
            "rejected_503": self.rejected,
        }


async def one_task(conn: Conn, data: bytes, sync: bool) -> str:
    """One image through the service: its final status, or "rejected" (503).

    ``sync``: ``POST /predict?wait=30`` (one request); else ``POST /predict`` then
    ``GET /result/{id}?wait=30`` (the 202 + long-poll flow).
    """
    status, body = await conn.request(
        "POST", "/predict?wait=30" if sync else "/predict", data, "image/jpeg"
    )
    if status == 503:
        return "rejected"
    if status == 200:
        return str(json.loads(body).get("status"))
    if status != 202:
        return "error"
    tid = json.loads(body)["id"]
    while True:
        status, body = await conn.request("GET", f"/result/{tid}?wait=30")
        if status != 200:
            return "error"
        state = str(json.loads(body).get("status"))
        if state != "pending":
            return state


async def _client_loop(
    port: int, data: bytes, stop_at: float, res: LoadResult, record_from: float, sync: bool
) -> None:
    conn = Conn("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            state = await one_task(conn, data, sync)
            if state == "rejected":
                res.rejected += 1
                await asyncio.sleep(0.05)
            elif state != "completed":
                res.errors += 1
            elif t0 >= record_from:
                res.done += 1
                res.latencies.append(time.perf_counter() - t0)
    finally:
        conn.close()


async def drive(
    port: int, data: bytes, concurrency: int, seconds: float, warmup: float, sync: bool
) -> LoadResult:
    start = time.perf_counter()
    record_from = start + warmup
    stop_at = record_from + seconds
    res = LoadResult(concurrency, seconds)
    await asyncio.gather(
        *(_client_loop(port, data, stop_at, res, record_from, sync) for _ in range(concurrency))
    )
    # requests recorded started in [record_from, stop_at); count throughput over that window
    return res


async def drive_count(
    port: int, data: bytes, concurrency: int, total: int, sample: Any, sync: bool
) -> float:
    """Push ``total`` tasks through at ``concurrency``; call sample() every 2 s. -> seconds."""
    left = [total]

    async def loop() -> None:
        conn = Conn("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                if await one_task(conn, data, sync) == "rejected":
                    left[0] += 1
                    await asyncio.sleep(0.05)
        finally:
            conn.close()

    async def sampler() -> None:
        while left[0] > 0:
            sample()
            await asyncio.sleep(2.0)

    t0 = time.perf_counter()
    s = asyncio.create_task(sampler())
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    s.cancel()
    sample()
    return time.perf_counter() - t0


# --- the stack --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(
        self,
        workers: int,
        threads: int,
        max_batch: int,
        max_delay_ms: int,
        result_ttl: int = 60,
        forward_batch: int = 0,
        decode_threads: int = 0,
    ) -> None:
        from toolkit.config import Settings
        from toolkit.redis import server as srv
        from toolkit.redis.harden import harden

        self.tmp = Path(tempfile.mkdtemp(prefix="tk-bench-"))
        self.settings = Settings.resolve(flags={"project_dir": self.tmp, "redis_port": free_port()})
        harden(self.settings)
        self.redis_pid = int(srv.start(self.settings)["pid"])
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TK_")}
        self.env.update(
            TK_PROJECT_DIR=str(self.tmp),
            TK_REDIS_PORT=str(self.settings.redis_port),
            TK_SERVE_PORT=str(self.port),
            TK_QUEUE_MAX_DEPTH="100000",
            TK_SERVE_WORKERS=str(workers),
            TK_QUEUE_RESULT_TTL=str(result_ttl),
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.workers = (workers, threads, max_batch, max_delay_ms, forward_batch, decode_threads)
        try:
            self._spawn("api", "api", "--log-level", "warning")
            self._wait_http("/healthz")
        except BaseException:
            self.close()  # stop Redis and the API: nobody else will
            raise

    def start_workers(self) -> None:
        workers, threads, max_batch, max_delay_ms, forward_batch, decode = self.workers
        for i in range(workers):
            self._spawn(
                f"w{i}",
                "worker",
                "--name",
                f"w{i}",
                "--threads",
                str(threads),
                "--max-batch",
                str(max_batch),
                "--forward-batch",
                str(forward_batch),
                "--decode-threads",
                str(decode),
                "--max-delay-ms",
                str(max_delay_ms),
                "--log-level",
                "info",  # a few lines at start and stop; a failed run prints them
            )
        self._wait_ready(workers)

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "toolkit", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.tmp,
            start_new_session=True,
        )

    def _wait_http(self, path: str) -> None:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{path} did not answer\n{self._log_tails()}")

    def _wait_ready(self, workers: int) -> None:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                if r.status_code == 200 and r.json()["workers"] >= workers:
                    return
            self._check_alive()
            time.sleep(0.3)
        raise RuntimeError(f"stack did not become ready\n{self._log_tails()}")

    def _check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"exited early: {dead}\n{self._log_tails()}")

    def _log_tails(self, lines: int = 15) -> str:
        """The end of each process's log, so a failed start says why (the logs are deleted)."""
        parts = []
        for f in sorted(self.tmp.glob("*.log")):
            tail = f.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {f.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def from_heartbeats(self, what: str) -> dict[str, int]:
        """One number each worker reports in its heartbeat, e.g. forward_batch: {"w0": 2}."""
        from toolkit.queue.depth import live_workers

        beats = live_workers(self.admin())
        return {name: int(beats[name].get(what, 0)) for name in sorted(beats)}

    def pids(self) -> dict[str, int]:
        out = {name: p.pid for name, p in self.procs.items()}
        out["redis"] = self.redis_pid
        return out

    def rss_mb(self) -> dict[str, float]:
        import psutil

        out = {}
        for name, pid in self.pids().items():
            with contextlib.suppress(psutil.Error):
                out[name] = psutil.Process(pid).memory_info().rss / 2**20
        return out

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by each process (and by this benchmark's client)."""
        import psutil

        out = {}
        for name, pid in [*self.pids().items(), ("client", os.getpid())]:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                out[name] = t.user + t.system
        return out

    def admin(self) -> Any:
        from toolkit.redis import connect

        return connect.client(self.settings, "admin")

    def stop_workers(self) -> None:
        for name, p in self.procs.items():
            if name.startswith("w") and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs.items():
            if name.startswith("w"):
                p.wait(60)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: Any, *_exc: Any) -> None:
        if exc_type is not None:  # say why before the logs go with the tmp dir
            print(self._log_tails(), file=sys.stderr)
        self.close()

    def close(self) -> None:
        import psutil

        from toolkit.redis import server as srv

        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        with contextlib.suppress(Exception):
            srv.stop(self.settings, timeout=10)
        with contextlib.suppress(psutil.Error):  # only if SHUTDOWN did not end it
            proc = psutil.Process(self.redis_pid)
            if "redis" in proc.name() or "valkey" in proc.name():
                proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


QUERY_BUFFERS_SETTLE_S = 3.0
"""Redis shrinks an idle connection's query buffer (which held the last uploads' bytes)
within about 2 s; what is left after that is what the waiting tasks hold."""


def redis_bytes_per_task(stack: Stack, data: bytes, n: int = 500) -> dict[str, Any]:
    """Before any worker starts: what Redis grows by per waiting task, vs the image's bytes.

    ``used_memory`` is Redis's own accounting (what ``maxmemory`` is compared with: the
    allocator's usable size of every allocation); ``used_memory_rss`` is what the process
    holds from the kernel (pages touched). The tasks are deleted afterwards (as admin), so
    the workers never see them."""
    import httpx

    r = stack.admin()
    info = r.info("memory")
    before, rss_before = int(info["used_memory"]), int(info["used_memory_rss"])
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.port}") as c:
        for _ in range(n):
            assert (
                c.post("/predict", content=data, headers={"content-type": "image/jpeg"}).status_code
                == 202
            )
    time.sleep(QUERY_BUFFERS_SETTLE_S)
    info = r.info("memory")
    per = (int(info["used_memory"]) - before) / n
    rss_per = (int(info["used_memory_rss"]) - rss_before) / n
    allocator = str(info.get("mem_allocator", "?"))
    marker = int(r.memory_usage("tk:result:" + _any_result_id(r)) or 0)
    keys = [k for m in ("tk:result:*", "tk:image:*") for k in r.scan_iter(match=m, count=1000)]
    r.delete("tk:tasks", *keys)
    r.close()
    # The image is kept in pieces cut to fill jemalloc's size classes (toolkit/queue/pieces.py);
    # what rounding is left is the last piece's.
    from toolkit.queue import pieces

    rounding = 0
    if allocator.startswith("jemalloc"):
        rounding = sum(pieces.waste(n) for n in pieces.piece_sizes(len(data)))
    return {
        "allocator": allocator,
        "image_bytes": len(data),
        "redis_bytes_per_task": per,
        "overhead_total": per - len(data),
        "allocator_rounding": rounding,
        "overhead_without_rounding": per - len(data) - rounding,
        "rss_bytes_per_task": rss_per,
        "rss_overhead": rss_per - len(data),
        "pending_marker_bytes": marker,
    }


def _any_result_id(r: Any) -> str:
    for key in r.scan_iter(match="tk:result:*", count=100):
        return str(key).split(":", 2)[2]
    return ""


def print_table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols]
    print("  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  " + "  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(cols, widths, strict=True)))


def _mb(d: dict[str, float]) -> dict[str, int]:
    return {k: round(v) for k, v in d.items()}


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", default="chelsea")
    ap.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=8, help="the workers' default")
    ap.add_argument("--forward-batch", type=int, default=0, help="0: the worker measures")
    ap.add_argument(
        "--decode-threads", type=int, default=0, help="0: GPU --threads, CPU: the runner decodes"
    )
    ap.add_argument("--max-delay-ms", type=int, default=5)
    ap.add_argument("--batches", default="1,2,4,8", help="ceiling batch-size sweep")
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--long", type=int, default=0, help="tasks in an RSS-flatness run")
    ap.add_argument(
        "--result-ttl",
        type=int,
        default=30,
        help="result TTL (s) for the run, so Redis reaches a steady state (the RSS-flatness "
        "figures start once one TTL has passed)",
    )
    ap.add_argument(
        "--modes",
        default="poll,sync",
        help="client flows: poll = POST /predict + GET /result?wait=30; "
        "sync = POST /predict?wait=30 (one request)",
    )
    ap.add_argument(
        "--pairs",
        type=int,
        default=5,
        help="rounds of the best ceiling row and the top concurrency in each mode, back to "
        "back (order alternating); the ratio is the median of the rounds' ratios",
    )
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"poll", "sync"}:
        ap.error(f"--modes takes poll and/or sync, got {args.modes!r}")

    data = image_bytes(args.image)
    report: dict[str, Any] = {
        "image": args.image,
        "image_bytes": len(data),
        "cpus": os.cpu_count(),
        "args": vars(args) | {"json": None},
    }
    print(f"image {args.image}: {len(data)} bytes JPEG; {os.cpu_count()} CPUs", flush=True)
    if not args.skip_ceiling:
        print("ceiling (decode + preprocess + forward, in-process):", flush=True)
        rows = ceiling(data, args.seconds, [int(b) for b in args.batches.split(",")])
        report["ceiling"] = rows
        best = max(rows, key=lambda r: r["images_s"])
        report["ceiling_best"] = best
        print(
            f"  best: {best['images_s']:.1f} images/s ({best['model']}, batch {best['batch']}, "
            f"{best['layout']})",
            flush=True,
        )
    if not args.skip_http:
        with Stack(
            args.workers,
            args.threads,
            args.max_batch,
            args.max_delay_ms,
            args.result_ttl,
            args.forward_batch,
            args.decode_threads,
        ) as stack:
            report["redis_memory"] = redis_bytes_per_task(stack, data)
            print(f"  redis per waiting task: {report['redis_memory']}", flush=True)
            stack.start_workers()
            report["forward_batch"] = stack.from_heartbeats("forward_batch")
            report["decode_threads"] = stack.from_heartbeats("decode_threads")
            print(f"  forward pass sizes the workers chose: {report['forward_batch']}; "
                  f"decode threads: {report['decode_threads']}")  # fmt: skip
            report["rss_idle_mb"] = stack.rss_mb()
            rows = []
            for mode, c in [(m, int(x)) for m in modes for x in args.concurrency.split(",")]:
                cpu0, t0 = stack.cpu_s(), time.perf_counter()
                res = run_client(
                    drive(stack.port, data, c, args.seconds, warmup=2.0, sync=mode == "sync")
                )
                cpu1, wall = stack.cpu_s(), time.perf_counter() - t0
                rows.append({"mode": mode, **res.row()})
                share = {k: round(100 * (cpu1[k] - cpu0.get(k, 0)) / wall) for k in cpu1}
                rows[-1]["cpu_pct"] = share
                print(f"  cpu % of one core: {share}", flush=True)
                print(
                    f"  {mode} concurrency {c:3}: {rows[-1]['images_s']:6.1f} images/s  "
                    f"p50 {rows[-1]['p50_ms']:.0f} ms  p95 {rows[-1]['p95_ms']:.0f} ms  "
                    f"p99 {rows[-1]['p99_ms']:.0f} ms",
                    flush=True,
                )
            report["http"] = rows
            report["rss_after_sweep_mb"] = stack.rss_mb()
            if "ceiling_best" in report and args.pairs > 0:
                report["pairs"] = paired_runs(stack, data, args, modes, report["ceiling_best"])
            if args.long:
                samples: list[dict[str, float]] = []
                conc = max(int(x) for x in args.concurrency.split(","))
                secs = run_client(
                    drive_count(
                        stack.port,
                        data,
                        conc,
                        args.long,
                        lambda: samples.append(stack.rss_mb()),
                        sync=modes[0] == "sync",
                    )
                )
                report["long"] = _flatness(samples, args.long, secs, args.result_ttl)
                print(
                    f"  long run: {args.long} tasks in {secs:.0f} s; RSS drift % "
                    f"{report['long']['drift_pct']}; spread % {report['long']['spread_pct']}; "
                    f"first MB {_mb(report['long']['first_mb'])}; "
                    f"last MB {_mb(report['long']['last_mb'])}",
                    flush=True,
                )
            stack.stop_workers()
        print("\nend to end:")
        print_table(
            report["http"],
            [
                "mode",
                "concurrency",
                "images_s",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "done",
                "errors",
                "rejected_503",
            ],
        )
        print("RSS (MB) idle:", {k: round(v) for k, v in report["rss_idle_mb"].items()})
        print("RSS (MB) after:", {k: round(v) for k, v in report["rss_after_sweep_mb"].items()})
        if "ceiling_best" in report:
            ceil = report["ceiling_best"]["images_s"]
            report["ratio_sweep"] = {}
            for mode in modes:
                best_http = max(r["images_s"] for r in report["http"] if r["mode"] == mode)
                report["ratio_sweep"][mode] = best_http / ceil
                print(
                    f"sweep: saturation ({mode}) {best_http:.1f} images/s = "
                    f"{report['ratio_sweep'][mode]:.2f} x ceiling {ceil:.1f}"
                )
        if report.get("pairs"):
            pairs = report["pairs"]
            ceil = statistics.median(p["ceiling"] for p in pairs)
            report["ratio"], report["ratio_of_medians"] = {}, {}
            for mode in modes:
                e2e = statistics.median(p[mode] for p in pairs)
                ratio = statistics.median(p[mode] / p["ceiling"] for p in pairs)
                report["ratio"][mode] = ratio
                report["ratio_of_medians"][mode] = e2e / ceil
                print(
                    f"paired ({len(pairs)} rounds): {mode} median ratio {ratio:.2f} x "
                    f"(medians: {e2e:.1f} images/s vs ceiling {ceil:.1f} = {e2e / ceil:.2f} x)"
                )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def paired_runs(
    stack: Stack, data: bytes, args: Any, modes: list[str], best: dict[str, Any]
) -> list[dict[str, float]]:
    """The best ceiling row and the end-to-end saturation point, measured back to back
    ``args.pairs`` times: this machine's speed drifts by several percent within a minute, so
    a ratio is only fair between measurements taken close together. The ceiling's processes
    stay loaded between rounds (idle, on a pipe) and the order alternates (ceiling first in
    odd rounds, last in even ones) so that a steady drift does not favour either side. The
    stack sits idle (blocked reads, a heartbeat every 2 s) while the ceiling runs, and the
    ceiling's processes while the stack does."""
    conc = max(int(x) for x in args.concurrency.split(","))
    out = []
    with CeilingProcs(data, best["model"], best["batch"], best["procs"], best["threads"]) as c:
        for i in range(args.pairs):
            row: dict[str, float] = {}
            if i % 2 == 0:
                row["ceiling"] = c.measure(args.seconds)
            for mode in modes:
                res = run_client(
                    drive(stack.port, data, conc, args.seconds, warmup=2.0, sync=mode == "sync")
                )
                row[mode] = res.row()["images_s"]
            if i % 2 == 1:
                row["ceiling"] = c.measure(args.seconds)
            out.append(row)
            shown = "  ".join(f"{k} {v:.1f}" for k, v in row.items())
            ratios = "  ".join(f"{m} {row[m] / row['ceiling']:.2f} x" for m in modes)
            print(f"  pair {i + 1}: {shown} images/s; {ratios}", flush=True)
    return out


def _flatness(
    samples: list[dict[str, float]], tasks: int, secs: float, retention_s: float = 0.0
) -> dict[str, Any]:
    """RSS per process over the run: drift = last vs first sample of the steady part, and
    the spread (max - min) of those samples, both in % of the first. The steady part starts
    after the first 10 % (warm-up) and after ``retention_s`` (the result TTL: until then
    Redis holds more results each second by design, not by a leak), but keeps at least the
    last half of the samples."""
    every = secs / max(1, len(samples) - 1)
    skip = max(1, len(samples) // 10, math.ceil(retention_s / every) if every > 0 else 0)
    steady = samples[min(skip, len(samples) // 2) :] or samples
    drift, spread = {}, {}
    for name in steady[0]:
        series = [s[name] for s in steady if name in s]
        drift[name] = round(100 * (series[-1] - series[0]) / series[0], 1)
        spread[name] = round(100 * (max(series) - min(series)) / series[0], 1)
    return {
        "tasks": tasks,
        "seconds": secs,
        "images_s": tasks / secs,
        "drift_pct": drift,
        "spread_pct": spread,
        "first_mb": steady[0],
        "last_mb": steady[-1],
        "samples": samples,
    }


if __name__ == "__main__":
    raise SystemExit(main())
