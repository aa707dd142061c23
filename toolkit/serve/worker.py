"""The inference worker: claim a batch, decode it, run it, store results.

Threads in one worker process:

    loader     claims tasks (dynamic batching), reclaims abandoned ones; on an accelerator
               also decodes and preprocesses them (on ``decode_threads`` threads, beside
               the forward pass); hands one batch at a time to the runner
    runner     (the main thread) on a CPU decodes the batch first (as the in-process
               ceiling does: no second thread competing for the core mid-pass), stacks
               it, runs the forward pass under ``torch.inference_mode``, stores results
               and acks in one transaction
    heartbeat  refreshes ``tk:worker:<name>`` (with a TTL) every couple of seconds

SIGTERM/SIGINT: the loader stops claiming; the runner finishes every batch already claimed;
the worker removes its heartbeat and exits 0.
"""

from __future__ import annotations

import logging
import os
import queue as stdqueue
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from toolkit.queue import constants as C
from toolkit.queue.protocol import Outcome, QueueConfig, Task, TaskQueue, now_ms
from toolkit.serve import metrics
from toolkit.serve.batching import BatchPolicy, chunks, pick_forward_batch
from toolkit.serve.images import ImageRejected, load_rgb

log = logging.getLogger("tk.worker")

FORWARD_CANDIDATES = (1, 2, 3, 4, 6, 8)
"""Forward-pass sizes a CPU worker with several threads times at start-up."""

SINGLE_THREAD_CANDIDATES = (1, 2, 3, 4)
"""... and one with a single thread: there passes above 4 only cost more per image (the
ceiling here: batch 8 at 0.88 x batch 2), and timing them at start-up would leave the
worker's kept heap (toolkit/serve/malloc.py) 80-90 MB larger for good."""

FORWARD_TOLERANCE = 0.02
"""The smallest timed size of 2 or more within this fraction of the cheapest is kept (1
only when it is the cheapest outright): at start-up the workers time with nothing else
running, and sizes within a couple of % of each other then (2, 3, 4) are not equal once
the API, Redis and the clients share the cores: 4 costs 5-7 % more per image than 2 (its
activations spill out of the shared caches); 1 costs about 5 % more either way."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class WorkerConfig:
    consumer: str
    model: str = "efficientnet-lite0"
    device: str = "auto"
    max_batch: int = C.MAX_BATCH
    max_delay_ms: int = C.MAX_DELAY_MS
    forward_batch: int = 0
    """Images per forward pass (at most max_batch); 0: on CPU the size measured cheapest per
    image at start-up, on an accelerator max_batch."""
    decode_threads: int = 0
    """Threads in the loader decoding a claimed batch; 0: on an accelerator ``threads``, on a
    CPU none: the runner decodes each batch itself, just before its forward pass (the cores
    run the model; a loader thread decoding beside it only takes turns on the same cores, and
    costs more: BENCHMARKS.md)."""
    threads: int = 1
    max_pixels: int = C.MAX_IMAGE_PIXELS
    queue: QueueConfig = field(default_factory=QueueConfig)
    heartbeat_interval_s: float = C.HEARTBEAT_INTERVAL_S
    heartbeat_ttl_s: int = C.HEARTBEAT_TTL_S
    optimize: str = "trace"

    @property
    def reclaim_every_s(self) -> float:
        return min(10.0, max(0.2, self.queue.visibility_ms / 2000))


@dataclass
class Prepared:
    """A claimed batch after decoding: arrays for the good images, outcomes for the bad."""

    tasks: list[Task]
    arrays: list[Any]
    failed: list[Outcome]


@dataclass
class Stats:
    batches: int = 0
    completed: int = 0
    failed: int = 0
    started_ms: int = field(default_factory=now_ms)


class Worker:
    """One worker process. ``client_factory()`` returns a binary redis-py client."""

    def __init__(self, cfg: WorkerConfig, client_factory: Callable[[], Any]) -> None:
        self.cfg = cfg
        self.policy = BatchPolicy(cfg.max_batch, cfg.max_delay_ms)
        self.queue = TaskQueue(client_factory(), cfg.queue)
        self._hb_queue = TaskQueue(client_factory(), cfg.queue)
        self.stop = threading.Event()
        self.stats = Stats()
        self.model: Any = None
        self._handoff: stdqueue.Queue[Prepared | list[Task] | None] = stdqueue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._sweeps = 0
        self.heap_kept = False
        self.forward_batch = cfg.max_batch
        self.decode_threads = 1  # loader threads decoding (0: the runner decodes)
        self._decode_pool: ThreadPoolExecutor | None = None
        self._unwritten: dict[str, float] = {}  # metric increments not in Redis yet
        self._metrics_at = time.monotonic()

    # --- setup ---------------------------------------------------------------------------
    def load_model(self) -> None:
        from toolkit.serve import malloc

        self.heap_kept = malloc.keep_heap()  # before torch allocates anything
        import torch

        from toolkit.serve import models

        torch.set_num_threads(self.cfg.threads)
        t0 = time.monotonic()
        self.model = models.load(self.cfg.model, self.cfg.device, self.cfg.optimize)
        self.forward_batch, warm = self._choose_forward_batch()  # on a CPU: times a few sizes
        # every size a forward pass can have (a claimed batch runs as passes of at most this)
        models.warm_up(self.model, [n for n in range(1, self.forward_batch + 1) if n not in warm])
        self.decode_threads = self._choose_decode_threads()
        if self.decode_threads > 1:
            self._decode_pool = ThreadPoolExecutor(self.decode_threads, "tk-decode")
        log.info(
            "worker %s: model %s (%s, %s) on %s, %d thread(s), max_batch %d, forward passes "
            "of %d, decoding %s, malloc %s, ready in %.1f s",
            self.cfg.consumer,
            self.model.name,
            self.model.version,
            self.model.optimized,
            self.model.device,
            self.cfg.threads,
            self.cfg.max_batch,
            self.forward_batch,
            self.decode_where,
            "heap kept" if self.heap_kept else "default",
            time.monotonic() - t0,
        )

    def _choose_forward_batch(self) -> tuple[int, list[int]]:
        """The forward-pass size, and the sizes warmed up to choose it (none when not timed)."""
        from toolkit.serve import models

        assert self.model is not None
        if self.cfg.forward_batch:
            return min(self.cfg.forward_batch, self.cfg.max_batch), []
        if not self.model.on_cpu:
            return self.cfg.max_batch, []  # accelerators: the bigger the pass, the better
        candidates = SINGLE_THREAD_CANDIDATES if self.cfg.threads == 1 else FORWARD_CANDIDATES
        sizes = [n for n in candidates if n <= self.cfg.max_batch]
        models.warm_up(self.model, sizes)  # the JIT's profiling runs are not timed
        timings = models.time_batches(self.model, sizes, rounds=5)
        log.debug("worker %s: CPU s per image by forward size: %s", self.cfg.consumer, timings)
        return pick_forward_batch(timings, FORWARD_TOLERANCE), sizes

    @property
    def decode_in_runner(self) -> bool:
        return self.decode_threads == 0

    @property
    def decode_where(self) -> str:
        if self.decode_in_runner:
            return "in the runner"
        return f"in the loader, {self.decode_threads} thread(s)"

    def _choose_decode_threads(self) -> int:
        assert self.model is not None
        if self.cfg.decode_threads:
            return self.cfg.decode_threads
        return 0 if self.model.on_cpu else max(1, self.cfg.threads)  # 0: the runner decodes

    def install_signals(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("worker %s: signal %d, finishing the batch in hand", self.cfg.consumer, signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # --- threads -------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self.stop.is_set():
            try:
                self._beat()
            except Exception as exc:  # a missed beat is not fatal; the next one may work
                log.warning("worker %s: heartbeat failed: %s", self.cfg.consumer, exc)
            self.stop.wait(self.cfg.heartbeat_interval_s)

    def _beat(self) -> None:
        m = self.model
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "model": getattr(m, "name", None),
            "version": getattr(m, "version", None),
            "device": str(getattr(m, "device", "")),
            "threads": self.cfg.threads,
            "max_batch": self.cfg.max_batch,
            "forward_batch": self.forward_batch,
            "decode_threads": self.decode_threads,
            "decode_in": "runner" if self.decode_in_runner else "loader",
            "batches": self.stats.batches,
            "completed": self.stats.completed,
            "failed": self.stats.failed,
            "started_ms": self.stats.started_ms,
        }
        self._hb_queue.heartbeat(self.cfg.consumer, info, self.cfg.heartbeat_ttl_s)

    def collect(self) -> list[Task]:
        """Claim one batch following the batching policy; [] when the queue stayed empty."""
        batch: list[Task] = []
        first_at: float | None = None
        while not self.stop.is_set():
            step = self.policy.next_read(len(batch), first_at, time.monotonic())
            if step is None:
                break
            got = self.queue.claim(self.cfg.consumer, step.count, step.block_ms)
            if got and first_at is None:
                first_at = time.monotonic()
            batch.extend(got)
            if not batch:
                break  # idle: let the loader do its housekeeping
            if not got and step.pause_ms:
                time.sleep(step.pause_ms / 1000)
        return batch

    def _decode(self, task: Task) -> Any:
        """The model's input array for one task, or the ImageRejected saying why not."""
        assert self.model is not None
        try:
            return load_rgb(task.image, self.model.input_size, self.model.resize,
                            self.cfg.max_pixels)  # fmt: skip
        except ImageRejected as exc:
            return exc

    def prepare(self, tasks: list[Task]) -> Prepared:
        pool = self._decode_pool
        decoded = (
            pool.map(self._decode, tasks) if pool and len(tasks) > 1 else map(self._decode, tasks)
        )
        good: list[Task] = []
        arrays: list[Any] = []
        failed: list[Outcome] = []
        for task, got in zip(tasks, decoded, strict=True):
            if isinstance(got, ImageRejected):
                failed.append(Outcome(task, "failed", error=got.message))
            else:
                arrays.append(got)
                good.append(task)
        return Prepared(good, arrays, failed)

    def _loader_loop(self) -> None:
        next_reclaim = 0.0
        try:
            while not self.stop.is_set():
                tasks: list[Task] = []
                if time.monotonic() >= next_reclaim:
                    tasks = self._housekeeping()
                    next_reclaim = time.monotonic() + self.cfg.reclaim_every_s
                    if tasks:
                        log.info(
                            "worker %s: reclaimed %d abandoned task(s)",
                            self.cfg.consumer,
                            len(tasks),
                        )
                if not tasks:
                    tasks = self.collect()
                if tasks:  # put() waits while the runner is busy
                    self._handoff.put(tasks if self.decode_in_runner else self.prepare(tasks))
        except BaseException as exc:
            self._error = exc
            self.stop.set()
        finally:
            self._handoff.put(None)

    def _housekeeping(self) -> list[Task]:
        """Reclaim abandoned tasks; now and then forget long-dead consumers."""
        from toolkit.queue.depth import live_workers

        self._sweeps += 1
        if self._sweeps % 50 == 1:
            stale_ms = max(60_000, 10 * self.cfg.queue.visibility_ms)
            alive = set(live_workers(self.queue.r)) | {self.cfg.consumer}
            self.queue.prune_consumers(stale_ms, alive)
        return self.queue.reclaim(self.cfg.consumer, self.cfg.max_batch)

    # --- runner --------------------------------------------------------------------------
    def run_batch(self, prep: Prepared) -> None:
        assert self.model is not None
        outcomes = list(prep.failed)
        t0 = time.perf_counter()
        if prep.tasks:
            k = max(t.top_k for t in prep.tasks)
            try:
                preds = []
                for a, b in chunks(len(prep.arrays), self.forward_batch):
                    preds += self.model.predict(prep.arrays[a:b], k)
            except Exception as exc:
                reason = f"model error: {exc}".splitlines()[0][:500]
                outcomes += [Outcome(t, "failed", error=reason) for t in prep.tasks]
            else:
                model_s = time.perf_counter() - t0
                n = len(prep.tasks)
                for task, row in zip(prep.tasks, preds, strict=True):
                    result = self._result(row, task, model_s, n)
                    outcomes.append(Outcome(task, "completed", result))
        model_s = time.perf_counter() - t0
        done = now_ms()
        ok = sum(o.status == "completed" for o in outcomes)
        latencies = [(done - o.task.enqueued_ms) / 1000 for o in outcomes]
        inc = metrics.batch_increments(ok, len(outcomes) - ok, model_s, latencies)
        unwritten = dict(self._unwritten)  # kept only once this batch's results are stored
        metrics.merge(unwritten, inc)
        due = self._metrics_due()
        self.queue.complete(self.cfg.consumer, outcomes, unwritten if due else None)
        self._unwritten = {} if due else unwritten
        self.stats.batches += 1
        self.stats.completed += ok
        self.stats.failed += len(outcomes) - ok

    def _metrics_due(self) -> bool:
        """Whether this batch's transaction also writes the metrics gathered so far: always
        when no next batch is in hand (the worker may go idle, and then its figures never
        lag its results), else at most every METRICS_FLUSH_S."""
        now = time.monotonic()
        if self._handoff.empty() or now - self._metrics_at >= C.METRICS_FLUSH_S:
            self._metrics_at = now
            return True
        return False

    def _result(self, row: list[Any], task: Task, model_s: float, n: int) -> dict[str, Any]:
        assert self.model is not None
        return {
            "model": self.model.name,
            "model_version": self.model.version,
            "top_k": [p.to_dict() for p in row[: task.top_k]],
            "model_ms": round(model_s * 1000, 2),
            "batch_size": n,
        }

    def run(self) -> int:
        """Serve until stopped; returns the exit code."""
        self.queue.r.ping()  # fail fast, before the model loads, if Redis is not there
        self.queue.ensure_group()
        if self.model is None:
            self.load_model()
        self._beat()
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="tk-heartbeat", daemon=True),
            threading.Thread(target=self._loader_loop, name="tk-loader", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            while True:
                got = self._handoff.get()
                if got is None:
                    break
                self.run_batch(got if isinstance(got, Prepared) else self.prepare(got))
        except Exception as exc:  # Redis gone, a bug: exit non-zero, unacked tasks get reclaimed
            log.exception("worker %s: stopping on error", self.cfg.consumer)
            self._error = exc
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=5)
        return self._finish()

    def _finish(self) -> int:
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=True)
        try:
            self.queue.add_metrics(self._unwritten)
        except Exception as exc:  # Redis gone: the figures of the last second are lost
            log.warning("worker %s: metrics not written: %s", self.cfg.consumer, exc)
        self.queue.clear_heartbeat(self.cfg.consumer)
        self.queue.forget(self.cfg.consumer)
        log.info(
            "worker %s: stopped after %d batches (%d completed, %d failed)",
            self.cfg.consumer,
            self.stats.batches,
            self.stats.completed,
            self.stats.failed,
        )
        if self._error is not None:
            log.error("worker %s: %s", self.cfg.consumer, self._error)
            return 1
        return 0
