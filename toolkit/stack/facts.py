"""Read what the plan depends on from this machine (the effectful half of planning)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from toolkit.config import Settings
from toolkit.redis import credentials
from toolkit.stack.plan import Facts
from toolkit.stack.pyenv import worker_python


def gather(s: Settings) -> Facts:
    import psutil

    from toolkit.envs import gpu

    wp = worker_python(s)
    server, version = None, None
    if s.redis_url is None:
        from toolkit.redis.server import server_for

        found = server_for(s, s.redis_conf_dir / "redis.conf")
        server, version = found.path, str(found.version)
    creds = credentials.load(s.redis_conf_dir)
    kept = credentials.kept_port(s, creds)
    probe = gpu.detect(timeout=5.0)
    return Facts(
        cpu_count=os.cpu_count() or 1,
        gpu_count=len(probe.gpus) if probe.present else 0,
        mem_available=psutil.virtual_memory().available,
        worker_python=wp.python,
        env_prefix=wp.env_prefix,
        python_reason=wp.reason,
        api_python=Path(sys.executable),
        redis_server=server,
        redis_version=version,
        conf_exists=(s.redis_conf_dir / "redis.conf").is_file() and creds is not None,
        hostname=socket.gethostname().split(".")[0] or "localhost",
        redis_port=s.redis_port if kept is None else kept,
    )
