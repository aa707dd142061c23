"""On an NVIDIA GPU (marked ``gpu``; skipped on machines without one): the worker runs the
default model on CUDA, one forward pass per claimed batch, and labels real photos as on the CPU.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serve.stack import SKIMAGE_DATA, Stack, jpeg
from toolkit.queue.depth import live_workers

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_worker_on_cuda_labels_photos_in_whole_batch_passes(make: Callable[..., Stack]) -> None:
    stack = make()
    stack.start_api()
    stack.start_worker("g1", "--device", "cuda", "--max-batch", "16")
    stack.wait_ready(workers=1)

    beat = live_workers(stack.redis("tk-monitor"))["g1"]
    assert beat["device"].startswith("cuda"), beat
    assert beat["forward_batch"] == 16, beat  # a GPU takes the whole claimed batch at once
    assert beat["decode_threads"] == beat["threads"], beat  # the CPU cores decode
    assert beat["decode_in"] == "loader", beat  # beside the GPU's forward passes

    images = [str(SKIMAGE_DATA / "chelsea.png"), str(SKIMAGE_DATA / "coffee.png")]
    proc = stack.submit(*images)
    assert proc.returncode == 0, proc.stdout + proc.stderr + stack.logs()
    chelsea, coffee = (json.loads(line) for line in proc.stdout.splitlines())
    assert chelsea["top_k"][0]["index"] in range(281, 286), chelsea  # a cat
    assert coffee["top_k"][0]["index"] in (967, 968), coffee  # espresso / cup

    # 64 at once: batches form, every one gets the cat
    data = jpeg("chelsea.png")
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: stack.post_image(data).json()["id"], range(64)))
        results = list(pool.map(stack.result, ids))
    assert all(r["status"] == "completed" for r in results), results[:3]
    assert {r["top_k"][0]["index"] for r in results} <= set(range(281, 286))
    assert max(r["batch_size"] for r in results) > 1, "no batch of more than one image formed"

    # SIGTERM: the worker drains and the process (CUDA context and all) exits 0, promptly
    stack.signal("g1", signal.SIGTERM)
    assert stack.procs["g1"].wait(timeout=40) == 0, stack.logs()
    assert "Thread 0x" not in stack.logs()  # no stack dump from a hung teardown
