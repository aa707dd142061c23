"""Pure pieces: batching policy, metrics, image checks, model specs, lazy imports."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest

from tests.serve.stack import jpeg, photo
from toolkit.errors import ConfigError, UsageError
from toolkit.serve import metrics
from toolkit.serve.admission import DepthGate
from toolkit.serve.batching import (
    BatchPolicy,
    Read,
    chunks,
    default_threads,
    pick_forward_batch,
)
from toolkit.serve.images import ImageRejected, inspect, load_rgb


def test_batch_policy_fills_until_full_or_deadline() -> None:
    p = BatchPolicy(max_batch=4, max_delay_ms=10, idle_block_ms=1000)
    assert p.next_read(0, None, 5.0) == Read(4, 1000)  # idle: block for anything
    # filling: poll without blocking (a server-side BLOCK timeout fires up to 100 ms late)
    assert p.next_read(1, 5.0, 5.002) == Read(3, None, 1.0)
    step = p.next_read(3, 5.0, 5.0095)
    assert step is not None and step.block_ms is None and step.pause_ms == pytest.approx(0.5)
    assert p.next_read(3, 5.0, 5.0101) is None  # the delay is spent: run
    assert p.next_read(4, 5.0, 5.0) is None  # full
    assert BatchPolicy(8, 0).next_read(1, 1.0, 1.0) is None  # no delay: run what we have
    with pytest.raises(ConfigError):
        BatchPolicy(0, 5)
    with pytest.raises(ConfigError):
        BatchPolicy(4, -1)


def test_claimed_batches_split_into_even_forward_passes() -> None:
    assert chunks(4, 2) == [(0, 2), (2, 4)]
    assert chunks(4, 3) == [(0, 2), (2, 4)]  # 2 + 2, not 3 + 1
    assert chunks(5, 2) == [(0, 1), (1, 3), (3, 5)]
    assert chunks(3, 8) == [(0, 3)]
    assert chunks(1, 1) == [(0, 1)]
    assert chunks(0, 4) == []
    for n in range(1, 20):
        for size in range(1, 9):
            parts = chunks(n, size)
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(0 < b - a <= size for a, b in parts)
            assert len(parts) == -(-n // size)


def test_forward_batch_is_the_cheapest_per_image() -> None:
    # batch 4 pays for cache misses on a CPU: 2 is cheapest per image
    timings = {1: [0.018, 0.017, 0.030], 2: [0.015, 0.0151, 0.016], 4: [0.019, 0.018, 0.0185]}
    assert pick_forward_batch(timings) == 2
    # one slow outlier per size does not decide it (medians are compared)
    assert pick_forward_batch({1: [0.010, 0.5, 0.010], 2: [0.012, 0.012, 0.001]}) == 1
    # the cheapest median wins; with a tolerance, the smallest size within it
    timings = {1: [0.0160], 2: [0.0155], 4: [0.0152], 8: [0.0190]}
    assert pick_forward_batch(timings) == 4
    assert pick_forward_batch(timings, tolerance=0.05) == 2
    with pytest.raises(ConfigError):
        pick_forward_batch({})


def test_a_worker_takes_the_smaller_pass_when_the_timings_nearly_tie() -> None:
    """Start-up timings from a worker alone (the medians of a real start-up here): 4 looks
    cheapest by 1.4 %, but costs 5-7 % more than 2 once every core is busy."""
    from toolkit.serve.worker import FORWARD_TOLERANCE

    timings = {1: [0.0158], 2: [0.01482], 3: [0.01484], 4: [0.01461]}
    assert pick_forward_batch(timings) == 4
    assert pick_forward_batch(timings, FORWARD_TOLERANCE) == 2
    timings[2] = [0.0155]  # 2 clearly dearer: 3 it is; 1 stays out at +8 %
    assert pick_forward_batch(timings, FORWARD_TOLERANCE) == 3
    # 1 within the tolerance is still not taken (it costs ~5 % more once the cores are busy)
    assert pick_forward_batch({1: [0.01490], 2: [0.01480]}, FORWARD_TOLERANCE) == 2
    assert pick_forward_batch({1: [0.01470], 2: [0.01480]}, FORWARD_TOLERANCE) == 1


def test_depth_gate_never_admits_past_the_limit() -> None:
    gate = DepthGate(limit=3, max_age_s=0.1)
    assert not gate.admit()  # no reading yet: the API must read the depth first
    token = gate.start_read()
    gate.record(1, token, now=10.0)
    assert gate.admit() and gate.admit()  # 2, 3
    gate.settle(2)  # both in Redis
    assert not gate.admit()  # the estimate says full: read again before refusing
    assert gate.stale(10.2) and not gate.stale(10.05)
    # workers took two tasks meanwhile; one more was admitted while the read was in flight
    token = gate.start_read()
    gate.admitted += 1
    gate.record(1, token, now=10.3)
    assert gate.estimate == 2
    assert gate.admit() and not gate.admit()
    # a task admitted before a read began, but still on its way to Redis when the read
    # counted (group commit): the read misses it, the estimate must not
    gate = DepthGate(limit=2)
    gate.record(0, gate.start_read(), now=0.0)
    assert gate.admit()  # admitted, enqueue not finished
    gate.record(0, gate.start_read(), now=1.0)  # this read did not see it
    assert gate.estimate == 1
    gate.settle(1)
    gate.record(1, gate.start_read(), now=2.0)  # now it is in Redis and counted once
    assert gate.estimate == 1


def test_metrics_of_several_batches_add_up_to_what_each_would_have_written() -> None:
    first = metrics.batch_increments(3, 1, 0.02, [0.04, 0.2, 0.2, 100.0])
    second = metrics.batch_increments(2, 0, 1.0, [0.2, 3.0])
    unwritten: dict[str, float] = {}
    metrics.merge(unwritten, first)
    metrics.merge(unwritten, second)
    assert unwritten["tasks_completed"] == 5 and unwritten["tasks_failed"] == 1
    assert unwritten["batches"] == 2 and unwritten["tk_task_latency_seconds:0.25"] == 3
    assert unwritten["tk_model_latency_seconds:sum"] == pytest.approx(1.02)
    # a field keeps its type: HINCRBY for counters, HINCRBYFLOAT for sums, never both
    assert all(isinstance(v, float) == k.endswith(":sum") for k, v in unwritten.items()), unwritten


def test_a_busy_worker_writes_metrics_once_a_second_an_idle_one_with_each_batch() -> None:
    from toolkit.queue import constants as C
    from toolkit.serve.worker import Worker, WorkerConfig

    w = Worker(WorkerConfig("w1"), client_factory=lambda: None)
    assert w._metrics_due()  # nothing in hand: this batch may be the last for a while
    w._handoff.put([])  # the next batch is already claimed
    assert not w._metrics_due()
    w._metrics_at -= C.METRICS_FLUSH_S
    assert w._metrics_due()  # but never more than METRICS_FLUSH_S behind
    assert not w._metrics_due()


def test_a_batch_whose_results_were_not_stored_adds_nothing_to_the_metrics() -> None:
    """complete() failing (Redis gone) leaves the tasks to be reclaimed and counted by
    whoever runs them; their figures must not be written at shutdown as well."""
    from toolkit.queue.protocol import Outcome, Task
    from toolkit.serve.worker import Prepared, Worker, WorkerConfig

    w = Worker(WorkerConfig("w1"), client_factory=lambda: None)  # no Redis behind it
    w.model = "loaded"  # this batch never reaches the model: its only image was rejected
    w._unwritten = {"tasks_completed": 3}
    task = Task("1-0", "a" * 32, b"x", 0, 5)
    with pytest.raises(AttributeError):
        w.run_batch(Prepared([], [], [Outcome(task, "failed", error="not an image")]))
    assert w._unwritten == {"tasks_completed": 3}


def test_threads_do_not_oversubscribe() -> None:
    assert default_threads(workers=2, cpus=2) == 1
    assert default_threads(workers=1, cpus=16) == 16
    assert default_threads(workers=4, cpus=2) == 1
    assert default_threads(workers=3, cpus=None) == 1


def test_metrics_render_cumulative_buckets() -> None:
    inc = metrics.batch_increments(3, 1, 0.02, [0.04, 0.2, 0.2, 100.0])
    assert inc["tasks_completed"] == 3 and inc["tasks_failed"] == 1
    # counters are ints (HINCRBY), sums floats (HINCRBYFLOAT) even when whole: a field must
    # never switch between the two, or Redis refuses the increment
    assert all(isinstance(v, int) for k, v in inc.items() if not k.endswith(":sum"))
    whole = metrics.batch_increments(1, 0, 1.0, [1.0])
    assert all(isinstance(whole[k], float) for k in whole if k.endswith(":sum"))
    stored = {k.encode(): str(v).encode() for k, v in inc.items()}
    text = metrics.render(stored, {"tk_queue_waiting": ("waiting", 7)})
    assert "tk_queue_waiting 7" in text
    assert 'tk_tasks_total{outcome="failed"} 1' in text
    assert 'tk_task_latency_seconds_bucket{le="0.05"} 1' in text
    assert 'tk_task_latency_seconds_bucket{le="0.25"} 3' in text
    assert 'tk_task_latency_seconds_bucket{le="+Inf"} 4' in text
    assert "tk_task_latency_seconds_count 4" in text
    assert 'tk_batch_size_bucket{le="4"} 1' in text


def test_inspect_accepts_photos_and_names_problems() -> None:
    info = inspect(jpeg("chelsea.png"), max_pixels=10**7)
    assert (info.format, info.width, info.height) == ("JPEG", 451, 300)
    assert inspect(photo("coffee.png"), max_pixels=10**7).format == "PNG"
    cases = [
        (b"", 400, "empty"),
        (b"GIF89a? no", 415, "not an image"),
        (b"plain text", 415, "not an image"),
        (jpeg()[:3000], 400, "truncated JPEG"),
        (photo("coffee.png")[:5000], 400, "PNG"),
    ]
    for data, status, words in cases:
        with pytest.raises(ImageRejected) as err:
            inspect(data, max_pixels=10**7)
        assert err.value.status == status and words in err.value.message, err.value.message
    with pytest.raises(ImageRejected, match="451x300 = 135,300 pixels"):
        inspect(jpeg("chelsea.png"), max_pixels=100_000)
    with pytest.raises(ImageRejected, match="over the limit of 10"):
        inspect(jpeg(), max_pixels=10**7, max_bytes=10)


def test_load_rgb_crops_to_the_model_input() -> None:
    from PIL import Image

    arr = load_rgb(jpeg("coffee.png"), 224, 256, 10**7)
    assert arr.shape == (224, 224, 3) and str(arr.dtype) == "uint8"
    tall = io.BytesIO()
    Image.new("L", (50, 900), 128).save(tall, "PNG")  # grey, small and tall
    assert load_rgb(tall.getvalue(), 224, 256, 10**7).shape == (224, 224, 3)
    with pytest.raises(ImageRejected):
        load_rgb(jpeg()[:3000], 224, 256, 10**7)


def test_model_specs() -> None:
    from toolkit.serve.models import parse_spec

    assert parse_spec("efficientnet-lite0").kind == "builtin"
    s = parse_spec("torchvision:resnet50=/m/resnet50.pth")
    assert (s.kind, s.name, str(s.path)) == ("torchvision", "resnet50", "/m/resnet50.pth")
    assert parse_spec("torchscript:/m/model.pt").kind == "torchscript"
    for bad in ("resnet50", "torchvision:resnet50", "torchscript:", "onnx:x"):
        with pytest.raises(UsageError, match="unknown model"):
            parse_spec(bad)


def _imports_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(out.stdout.split())


def test_heavy_imports_stay_lazy() -> None:
    cli = _imports_after("from toolkit.cli import app")
    assert not {"torch", "torchvision", "fastapi", "PIL", "numpy"} & cli
    api = _imports_after("import toolkit.serve.api, toolkit.queue.client, toolkit.cli.serve")
    assert "fastapi" in api and "torch" not in api and "numpy" not in api


def test_commands_have_help() -> None:
    from tests.helpers import run_tk

    for args in (
        ["worker", "--help"],
        ["api", "--help"],
        ["submit", "--help"],
        ["queue", "depth", "--help"],
        ["queue", "dlq", "--help"],
    ):
        r = run_tk(__import__("pathlib").Path("."), *args)
        assert r.exit_code == 0 and "Usage" in r.output, r.output


_FAULTS = """
import resource, sys
from toolkit.serve import malloc
kept = malloc.keep_heap() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = bytearray(48 << 20)  # like a forward pass: a big buffer, every page written
del b
f = faults()
for _ in range(5):
    b = bytearray(48 << 20)
    del b
print(kept, faults() - f)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_worker_heap_is_not_page_faulted_back_in_every_batch() -> None:
    def run(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], int(out[1])

    kept, faults = run("keep")
    assert kept == "True" and faults < 500, faults  # the freed pages are reused as they are
    _, default_faults = run("default")
    assert default_faults > 5 * 10_000  # glibc alone: mmap'd afresh, 12,288 faults each time


def test_a_hung_teardown_after_torch_dumps_stacks_and_exits() -> None:
    """`tk worker` has drained; a non-daemon thread (as a CUDA hang would) never ends: the
    process still exits, 1, with every thread's stack on stderr for the log."""
    code = (
        "import sys, threading, time, torch\n"
        "import toolkit.cli as cli\n"
        "cli.TEARDOWN_GRACE_S = 1.0\n"
        "threading.Thread(target=time.sleep, args=(120,), name='stuck').start()\n"
        "sys.argv = ['tk', '--version']\n"
        "cli.main()\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=90)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Thread 0x" in proc.stderr, proc.stderr
    assert time.monotonic() - t0 < 60
