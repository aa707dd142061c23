"""Which python the workers run in, and what torch it holds, without importing torch.

The inference environment `tk env create` built (``envs/inference.yml``'s name) when it is
complete, else the python running tk, said plainly.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.config import Settings
from toolkit.errors import UsageError


@dataclass(frozen=True)
class WorkerPython:
    python: Path
    env_prefix: Path | None  # None: the current interpreter, no conda env
    reason: str


def env_prefix(settings: Settings) -> Path | None:
    """Where the spec's environment lives (whether or not it exists), or None without a spec."""
    from toolkit.envs import locations, spec

    if not settings.env_spec.is_file():
        return None
    try:
        name = spec.load(settings.env_spec).name
        return locations.resolve_prefix(settings, name, None)
    except Exception:
        return None


class EnvMissing(UsageError):
    """serve.env names an environment that does not exist (or is not complete)."""


def worker_python(settings: Settings) -> WorkerPython:
    from toolkit.envs import locations

    if settings.serve_env:
        want = settings.serve_env
        prefix = Path(want) if "/" in want else locations.resolve_prefix(settings, want, None)
        py = prefix / "bin" / "python"
        if (prefix / "conda-meta").is_dir() and py.exists():
            return WorkerPython(py, prefix, f"serve.env {want}")
        raise EnvMissing(
            f"the workers' environment {want!r} does not exist ({prefix})",
            fix="build it with `tk env create`, or unset serve.env / TK_SERVE_ENV",
        )
    spec_prefix = env_prefix(settings)
    if spec_prefix is not None and locations.read_marker(spec_prefix) is not None:
        py = spec_prefix / "bin" / "python"
        if py.exists():
            return WorkerPython(py, spec_prefix, f"the inference environment {spec_prefix}")
    if spec_prefix is not None:
        why = f"the current python: the inference environment {spec_prefix} is not built yet"
    else:
        why = "the current python: no inference environment is set up"
    return WorkerPython(Path(sys.executable), None, f"{why}; `tk env create` builds it")


_VERSION_RE = re.compile(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", re.M)
_CUDA_RE = re.compile(r"^cuda\s*(?::\s*[^=]+)?=\s*(None|['\"]([^'\"]*)['\"])", re.M)


@dataclass(frozen=True)
class TorchFacts:
    version: str
    cuda: str | None  # None: a CPU build


def torch_facts(wp: WorkerPython) -> TorchFacts | None:
    """torch's version and CUDA build from torch/version.py (importing torch takes seconds)."""
    if wp.env_prefix is None:
        found = importlib.util.find_spec("torch")
        origin = Path(found.origin) if found and found.origin else None
        version_py = origin.parent / "version.py" if origin else None
    else:
        hits = sorted(wp.env_prefix.glob("lib/python3*/site-packages/torch/version.py"))
        version_py = hits[0] if hits else None
    if version_py is None or not version_py.is_file():
        return None
    text = version_py.read_text(errors="replace")
    v = _VERSION_RE.search(text)
    c = _CUDA_RE.search(text)
    if v is None:
        return None
    cuda = c.group(2) if c and c.group(1) != "None" else None
    return TorchFacts(v.group(1), cuda)
