"""Validation probes, run with the environment's own python.

``run_probes`` does the I/O (one python subprocess printing JSON, the spec's commands,
``pip check``); ``evaluate`` turns its facts into ok/warn/fail checks and is pure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.envs.errors import ValidationFailed
from toolkit.envs.spec import PIP_NAME, Probes
from toolkit.envs.variants import Variant

PROBE_TIMEOUT = 600.0

_PROBE = r"""
import importlib, json, sys
from importlib import metadata
cfg = json.loads(sys.argv[1])
out = {"python": sys.version.split()[0], "executable": sys.executable, "imports": {}}
for name in cfg["imports"]:
    try:
        mod = importlib.import_module(name)
        out["imports"][name] = {"ok": True, "version": str(getattr(mod, "__version__", ""))}
    except BaseException as exc:
        out["imports"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
if cfg["torch"]:
    t = {}
    try:
        import torch
        t = {"version": torch.__version__, "cuda": torch.version.cuda,
             "available": bool(torch.cuda.is_available())}
        dev = "cuda" if t["available"] else "cpu"
        if dev == "cuda":
            t["device_name"] = torch.cuda.get_device_name(0)
        x = torch.ones(8, 8, device=dev)
        t["op"] = {"device": dev, "ok": float((x @ x).sum().item()) == 512.0}
    except BaseException as exc:
        t["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["torch"] = t
dists = []
for d in metadata.distributions():
    try:
        installer = (d.read_text("INSTALLER") or "").strip()
        dists.append({"name": d.metadata["Name"], "version": d.version, "installer": installer})
    except Exception:
        pass
out["dists"] = dists
print("TK-PROBE " + json.dumps(out))
"""


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "message": self.message}


@dataclass
class Facts:
    """What the probes found."""

    prefix: Path
    python: Path | None
    probe: dict[str, Any] | None = None
    probe_error: str | None = None
    conda_names: set[str] | None = None  # None: not a conda prefix
    commands: list[tuple[str, int, str]] = field(default_factory=list)
    pip_check: tuple[int, str] | None = None


def find_python(prefix: Path) -> Path | None:
    for rel in ("bin/python", "python.exe", "bin/python3"):
        p = prefix / rel
        if p.exists():
            return p
    return None


def conda_names(prefix: Path) -> set[str] | None:
    meta = prefix / "conda-meta"
    if not meta.is_dir():
        return None
    names = set()
    for f in meta.glob("*.json"):
        try:
            names.add(str(json.loads(f.read_text())["name"]).lower())
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return names


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            env=env,
            cwd=cwd,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def run_probes(prefix: Path, probes: Probes, python: Path | None = None) -> Facts:
    """Run the spec's probes in ``prefix`` (or with ``python``). Never raises for a failed
    probe: failures are facts for ``evaluate``."""
    prefix = prefix.absolute()
    python = python or find_python(prefix)
    python = python.absolute() if python is not None else None
    facts = Facts(prefix, python, conda_names=conda_names(prefix))
    env = dict(os.environ)
    bindir = (python.parent if python else prefix / "bin").absolute()
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["CONDA_PREFIX"] = str(prefix)
    env.pop("PYTHONPATH", None)
    needs_python = bool(probes.imports) or probes.torch or probes.pip_check
    if needs_python and python is None:
        facts.probe_error = f"no python in {prefix}"
    elif needs_python and python is not None:
        cfg = json.dumps({"imports": list(probes.imports), "torch": probes.torch})
        code, out = _run([str(python), "-c", _PROBE, cfg], env, prefix)
        line = next((x for x in out.splitlines() if x.startswith("TK-PROBE ")), None)
        if line is None:
            facts.probe_error = f"probe exited {code}: {out[-300:]}"
        else:
            facts.probe = json.loads(line[len("TK-PROBE ") :])
        if probes.pip_check and facts.probe and _has_pip(facts.probe):
            facts.pip_check = _run([str(python), "-m", "pip", "check"], env, prefix)
    for command in probes.commands:
        code, out = _run(["/bin/sh", "-c", command] if os.name != "nt" else [command], env, prefix)
        facts.commands.append((command, code, out[-300:]))
    return facts


def _has_pip(probe: dict[str, Any]) -> bool:
    return any(str(d.get("name", "")).lower() == "pip" for d in probe.get("dists", []))


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _variant_check(built: str | None, variant: Variant | None) -> Check:
    label = f"CUDA {built} build" if built else "CPU build"
    if variant is None:
        return Check("torch variant", "skip", "variant unknown (pass --cuda X.Y or --cpu)")
    if variant.kind == "cpu" and built:
        why = "the solver picked a CUDA build (pin pytorch=*=cpu* / cpuonly)"
        return Check("torch variant", "fail", f"torch is a {label} but the variant is cpu: {why}")
    if variant.kind == "cuda" and not built:
        why = f"pin pytorch=*=cuda* (conda-forge) or pytorch-cuda={variant.cuda}"
        msg = f"torch is a CPU build but the variant is {variant.name}: {why}"
        return Check("torch variant", "fail", msg)
    if variant.kind == "cuda" and built != variant.cuda:
        msg = f"torch is a {label} but the variant is {variant.name}: recreate the env"
        return Check("torch variant", "fail", msg)
    return Check("torch variant", "ok", f"{label} matches {variant.name}")


def _available_check(t: dict[str, Any], gpu: bool) -> Check:
    if not gpu:
        return Check("cuda available", "skip", "no NVIDIA GPU on this machine")
    if t.get("available"):
        return Check("cuda available", "ok", str(t.get("device_name", "yes")))
    why = "although a GPU is present (driver too old for this build?)"
    return Check("cuda available", "fail", f"torch.cuda.is_available() is False {why}")


def _torch_checks(t: dict[str, Any], variant: Variant | None, gpu: bool) -> list[Check]:
    if "error" in t and "version" not in t:
        return [Check("torch", "fail", f"import torch failed: {t['error']}")]
    built = t.get("cuda")
    label = f"CUDA {built} build" if built else "CPU build"
    out = [Check("torch", "ok", f"torch {t.get('version')} ({label})")]
    out.append(_variant_check(built, variant))
    if variant is not None and variant.kind == "cuda":
        out.append(_available_check(t, gpu))
    op = t.get("op")
    if op is not None:
        ok = "ok" if op.get("ok") else "fail"
        out.append(Check("tensor op", ok, f"8x8 matmul on {op.get('device')}"))
    elif "error" in t:
        out.append(Check("tensor op", "fail", t["error"]))
    return out


def _overlap_check(facts: Facts, dists: list[dict[str, Any]]) -> Check:
    if facts.conda_names is None:
        return Check("conda/pip overlap", "skip", "not a conda prefix (no conda-meta/)")
    conda = {_norm(PIP_NAME.get(n, n)) for n in facts.conda_names}
    both = sorted(
        str(d["name"])
        for d in dists
        if d.get("installer") == "pip" and _norm(str(d.get("name", ""))) in conda
    )
    if both:
        return Check("conda/pip overlap", "fail", f"installed by both conda and pip: "
                     f"{', '.join(both)} (pip overwrote conda's files; keep one)")  # fmt: skip
    return Check("conda/pip overlap", "ok", "no package installed by both")


def evaluate(facts: Facts, probes: Probes, variant: Variant | None, gpu: bool) -> list[Check]:
    checks: list[Check] = []
    if facts.probe_error:
        checks.append(Check("python", "fail", facts.probe_error))
    p = facts.probe
    if p is not None:
        checks.append(Check("python", "ok", f"python {p['python']} ({p['executable']})"))
        for name, res in p["imports"].items():
            status = "ok" if res["ok"] else "fail"
            text = res.get("version") or "imported" if res["ok"] else res.get("error", "")
            checks.append(Check(f"import {name}", status, text))
        if probes.torch:
            checks += _torch_checks(p.get("torch") or {}, variant, gpu)
        checks.append(_overlap_check(facts, p.get("dists", [])))
    if facts.pip_check is not None:
        code, out = facts.pip_check
        checks.append(Check("pip check", "ok" if code == 0 else "fail", out.splitlines()[0]
                            if out else f"exit {code}"))  # fmt: skip
    for command, code, out in facts.commands:
        last = out.splitlines()[-1] if out else ""
        checks.append(Check(f"$ {command}", "ok" if code == 0 else "fail", last or f"exit {code}"))
    return checks


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "fail"]


def raise_if_failed(checks: list[Check], prefix: Path, fix: str | None = None) -> None:
    bad = failed(checks)
    if bad:
        first = bad[0]
        raise ValidationFailed(
            f"{prefix}: {len(bad)} check{'s' if len(bad) != 1 else ''} failed; "
            f"first: {first.name}: {first.message}",
            fix=fix,
        )


def current_python_prefix() -> Path:
    return Path(sys.prefix)
