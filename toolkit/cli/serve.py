"""``tk worker | api | submit``: the inference service.

torch is imported only by ``tk worker``; ``tk api`` and ``tk submit`` never import it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolkit.cli._common import handle_errors
from toolkit.cli.state import settings
from toolkit.config import Settings
from toolkit.errors import TkError, UsageError

OptStr = Optional[str]  # noqa: UP045 - typer needs Optional on 3.10
OptInt = Optional[int]  # noqa: UP045
OptFloat = Optional[float]  # noqa: UP045


LOG_LEVELS = ("debug", "info", "warning", "error")


def _logging(level: str) -> None:
    """Log to stderr at ``level``; a level that is not one of LOG_LEVELS is a usage error."""
    if level.lower() not in LOG_LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def allow_roots(s: Settings) -> tuple[Path, ...]:
    """``serve.allow_paths``: directories separated by ``:`` or ``,``; relative to the project."""
    if not s.serve_allow_paths:
        return ()
    parts = [p.strip() for p in s.serve_allow_paths.replace(",", ":").split(":") if p.strip()]
    return tuple((s.project_dir / Path(p).expanduser()) for p in parts)


def read_token(s: Settings) -> str | None:
    if s.serve_token_file is None:
        return None
    try:
        token = s.serve_token_file.read_text().strip()
    except OSError as exc:
        raise UsageError(
            f"cannot read the API token file {s.serve_token_file}: {exc.strerror}"
        ) from None
    if not token:
        raise UsageError(f"the API token file {s.serve_token_file} is empty")
    return token


@handle_errors
def worker(
    model: Annotated[
        OptStr,
        typer.Option(
            help="efficientnet-lite0 | torchvision:<arch>=<file> | torchscript:<file>. "
            "\\[env: TK_SERVE_MODEL]"
        ),
    ] = None,
    device: Annotated[
        OptStr, typer.Option(help="auto, cpu, cuda, cuda:N. \\[default: auto]")
    ] = None,
    max_batch: Annotated[
        OptInt, typer.Option(help="Tasks claimed and completed together. \\[default: 8]")
    ] = None,
    forward_batch: Annotated[
        OptInt,
        typer.Option(
            help="Images per forward pass, at most --max-batch; 0: on CPU the size measured "
            "cheapest per image at start-up, on a GPU --max-batch. \\[default: 0]"
        ),
    ] = None,
    decode_threads: Annotated[
        OptInt,
        typer.Option(
            help="Threads in the loader decoding a claimed batch's images beside the forward "
            "pass; 0: on a GPU --threads, on a CPU none (the runner decodes each batch just "
            "before its forward pass). \\[default: 0]"
        ),
    ] = None,
    max_delay_ms: Annotated[
        OptInt, typer.Option(help="Wait this long to fill a batch. \\[default: 5]")
    ] = None,
    threads: Annotated[
        OptInt, typer.Option(help="Torch threads. \\[default: cores / serve.workers]")
    ] = None,
    name: Annotated[
        OptStr, typer.Option(help="Consumer name. \\[default: host-pid-random]")
    ] = None,
    optimize: Annotated[
        str, typer.Option(help="trace (channels_last + jit trace + freeze) or eager.")
    ] = "trace",
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run an inference worker: load the model once, claim batches from Redis, store results.

    Connects as the tk-worker ACL user. SIGTERM finishes the batch in hand and exits 0.
    """
    import os

    from toolkit.queue.client import binary_client
    from toolkit.queue.protocol import QueueConfig
    from toolkit.serve.batching import default_threads
    from toolkit.serve.worker import Worker, WorkerConfig, default_consumer_name

    if optimize not in ("trace", "eager"):
        raise UsageError(f"--optimize must be trace or eager, got {optimize!r}")
    s = settings(
        serve_model=model,
        serve_device=device,
        serve_max_batch=max_batch,
        serve_forward_batch=forward_batch,
        serve_decode_threads=decode_threads,
        serve_max_delay_ms=max_delay_ms,
        serve_threads=threads,
    )
    _logging(log_level)
    n_threads = s.serve_threads or default_threads(s.serve_workers or 1, os.cpu_count())
    cfg = WorkerConfig(
        consumer=name or default_consumer_name(),
        model=s.serve_model,
        device=s.serve_device,
        max_batch=s.serve_max_batch,
        forward_batch=s.serve_forward_batch,
        decode_threads=s.serve_decode_threads,
        max_delay_ms=s.serve_max_delay_ms,
        threads=n_threads,
        max_pixels=s.serve_max_image_pixels,
        queue=QueueConfig.from_settings(s),
        optimize=optimize,
    )
    w = Worker(cfg, lambda: binary_client(s, "tk-worker"))
    w.install_signals()
    try:
        code = w.run()
    except redis_errors() as exc:
        from toolkit.redis import connect

        raise connect.describe_connection_error(exc, connect.resolve_url(s, "tk-worker")) from None
    raise typer.Exit(code)


def redis_errors() -> tuple[type[Exception], ...]:
    import redis

    return (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.AuthenticationError,
        redis.exceptions.NoPermissionError,
    )


@handle_errors
def api(
    host: Annotated[
        OptStr, typer.Option(help="Address to listen on. \\[default: 127.0.0.1]")
    ] = None,
    port: Annotated[
        OptInt, typer.Option(min=1, max=65535, help="Port to listen on. \\[default: 8000]")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the HTTP API (FastAPI on uvicorn): POST /predict, GET /result/{id}, /metrics.

    Connects as the tk-api ACL user; never loads torch. OpenAPI at /docs and /openapi.json.
    """
    from toolkit.queue import constants as C
    from toolkit.queue.client import async_client
    from toolkit.queue.protocol import QueueConfig
    from toolkit.serve.api import ApiConfig, serve

    s = settings(serve_host=host, serve_port=port)
    _logging(log_level)
    cfg = ApiConfig(
        client_factory=lambda: async_client(s, "tk-api", C.API_REDIS_CONNECTIONS),
        commit_client_factory=lambda: async_client(s, "tk-api", 2, reply_timeout=False),
        redis_timeout=s.redis_timeout,
        queue=QueueConfig.from_settings(s),
        max_depth=s.queue_max_depth,
        max_image_bytes=s.serve_max_image_bytes,
        max_pixels=s.serve_max_image_pixels,
        allow_roots=allow_roots(s),
        token=read_token(s),
    )
    serve(cfg, s.serve_host, s.serve_port, log_level=log_level.lower())


@handle_errors
def submit(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the results.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image.")] = False,
    url: Annotated[
        OptStr,
        typer.Option(help="API URL. \\[default: the running stack's, else serve.host:serve.port]"),
    ] = None,
    top_k: Annotated[
        OptInt, typer.Option("--top-k", help="Labels per image (1-20). \\[default: 5]")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each result.")] = 120.0,
) -> None:
    """Send images to the API (concurrently); with --wait print each top-k.

    Exit 1 if any image failed (rejected, failed in the worker, or timed out).
    """
    import asyncio

    from toolkit.queue import constants as C
    from toolkit.serve.client import submit_all

    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if top_k is not None and not 1 <= top_k <= C.MAX_TOP_K:
        raise UsageError(f"--top-k must be between 1 and {C.MAX_TOP_K}, got {top_k}")
    if not timeout > 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout:g}")
    s = settings(serve_url=url)
    base = s.serve_url or _running_api(s) or f"http://{s.serve_host}:{s.serve_port}"
    if not base.startswith(("http://", "https://")):
        raise UsageError(
            f"API URL {base!r} is not an http:// or https:// URL",
            fix="e.g. --url http://127.0.0.1:8000",
        )
    subs = asyncio.run(
        submit_all(base, list(images), wait, timeout, concurrency, read_token(s), top_k)
    )
    if subs and all(sub.unreachable for sub in subs):
        raise TkError(
            f"cannot reach the API at {base} ({subs[0].unreachable})",
            fix="start the stack with `tk up` (in this project, or name it with --project-dir), "
            "or point at a running API with --url",
        )
    for sub in subs:
        if as_json:
            typer.echo(json.dumps(sub.to_dict()))
        else:
            typer.echo(_human(sub))
    raise typer.Exit(0 if all(sub.ok for sub in subs) else 1)


def _running_api(s: Settings) -> str | None:
    """The API URL of the stack `tk up` runs for this project, if one runs."""
    from toolkit.stack import state

    data = state.running(s.run_dir)
    return str(data["api_url"]) if data and data.get("api_url") else None


def _human(sub: Any) -> str:
    head = f"{sub.image}: {sub.status}"
    if sub.id:
        head += f" (task {sub.id})"
    if sub.error:
        return f"{head}: {sub.error}"
    preds = ", ".join(f"{p['label']} {p['score']:.2f} [{p['index']}]" for p in sub.top_k)
    return f"{head}: {preds}" if preds else head


def register(app: typer.Typer) -> None:
    for func in (worker, api, submit):
        app.command(func.__name__)(func)
