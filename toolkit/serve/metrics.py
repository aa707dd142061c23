"""Service metrics kept in one Redis hash (``tk:metrics``), shared by every worker and API.

Workers add to counters and histogram buckets in the same transaction that stores their
results (so the figures survive restarts and add up across hosts); the API exports them, with
the queue depth, in Prometheus's text format. Bucket counts are stored per bucket (not
cumulative) under ``<histogram>:<upper bound>``; the export makes them cumulative.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MODEL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


@dataclass(frozen=True)
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]


HISTOGRAMS = (
    Histogram("tk_task_latency_seconds", "enqueue to result stored, per task", E2E_BUCKETS),
    Histogram(
        "tk_model_latency_seconds", "preprocess stack + forward pass, per batch", MODEL_BUCKETS
    ),
    Histogram("tk_batch_size", "tasks per batch a worker claimed and ran", BATCH_BUCKETS),
)
E2E, MODEL, BATCH = HISTOGRAMS

COUNTERS = {
    "tasks_completed": "tasks that produced a result",
    "tasks_failed": "tasks that failed (bad image, model error)",
    "tasks_dead": "tasks moved to the dead-letter stream",
    "batches": "batches run (each claimed together, run in one or more forward passes)",
}


def _bound(value: float, buckets: Sequence[float]) -> str:
    for b in buckets:
        if value <= b:
            return f"{b:g}"
    return "+Inf"


def observe(h: Histogram, values: Iterable[float], into: dict[str, float]) -> None:
    """Add observations of ``h`` to a dict of hash increments."""
    for v in values:
        key = f"{h.name}:{_bound(v, h.buckets)}"
        into[key] = int(into.get(key, 0)) + 1
        into[f"{h.name}:sum"] = float(into.get(f"{h.name}:sum", 0.0)) + float(v)
        into[f"{h.name}:count"] = int(into.get(f"{h.name}:count", 0)) + 1


def batch_increments(
    completed: int, failed: int, model_s: float, latencies_s: Sequence[float]
) -> dict[str, float]:
    """The hash increments for one batch a worker ran: ints are counters, floats are sums."""
    inc: dict[str, float] = {"tasks_completed": completed, "tasks_failed": failed, "batches": 1}
    observe(MODEL, [model_s], inc)
    observe(BATCH, [completed + failed], inc)
    observe(E2E, latencies_s, inc)
    return {k: v for k, v in inc.items() if v or isinstance(v, float)}


def merge(into: dict[str, float], inc: Mapping[str, float]) -> None:
    """Add one batch's increments to ``into`` (increments not written yet): counters stay
    ints, sums stay floats, so each field keeps the type it is written with."""
    for key, amount in inc.items():
        into[key] = into.get(key, 0) + amount


def _num(raw: Any) -> float:
    return float(raw.decode() if isinstance(raw, bytes) else raw)


def render(stored: Mapping[Any, Any], gauges: Mapping[str, tuple[str, float]]) -> str:
    """Prometheus text format from the hash and a few gauges (name -> (help, value))."""
    values = {(k.decode() if isinstance(k, bytes) else str(k)): _num(v) for k, v in stored.items()}
    return "\n".join(_render_lines(values, gauges)) + "\n"


def _render_lines(
    values: Mapping[str, float], gauges: Mapping[str, tuple[str, float]]
) -> Iterator[str]:
    for name, (text, value) in gauges.items():
        yield f"# HELP {name} {text}"
        yield f"# TYPE {name} gauge"
        yield f"{name} {value:g}"
    yield "# HELP tk_tasks_total tasks finished, by outcome"
    yield "# TYPE tk_tasks_total counter"
    for outcome in ("completed", "failed", "dead"):
        yield f'tk_tasks_total{{outcome="{outcome}"}} {values.get("tasks_" + outcome, 0):g}'
    yield f"# HELP tk_batches_total {COUNTERS['batches']}"
    yield "# TYPE tk_batches_total counter"
    yield f"tk_batches_total {values.get('batches', 0):g}"
    for h in HISTOGRAMS:
        yield f"# HELP {h.name} {h.help}"
        yield f"# TYPE {h.name} histogram"
        total = 0.0
        for b in h.buckets:
            total += values.get(f"{h.name}:{b:g}", 0)
            yield f'{h.name}_bucket{{le="{b:g}"}} {total:g}'
        total += values.get(f"{h.name}:+Inf", 0)
        yield f'{h.name}_bucket{{le="+Inf"}} {total:g}'
        yield f"{h.name}_sum {values.get(h.name + ':sum', 0):g}"
        yield f"{h.name}_count {values.get(h.name + ':count', 0):g}"
