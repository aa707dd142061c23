"""Variants (``cpu``, ``cuda-X.Y``): render a spec for one, and pick one. Pure logic.

Rendering applies the spec's ``x-tk.variants`` rule: its ``add`` entries replace base
dependencies of the same package name (or are appended), ``remove`` drops names, ``channels``
are put in front; ``{cuda}`` is substituted everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.envs import facts
from toolkit.envs.errors import VariantRefused
from toolkit.envs.gpu import GpuProbe
from toolkit.envs.spec import EnvSpec, dep_name, dep_version


@dataclass(frozen=True)
class Variant:
    kind: str  # "cpu" | "cuda"
    cuda: str | None = None

    @property
    def name(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda-{self.cuda}"

    @classmethod
    def parse(cls, name: str) -> Variant:
        if name == "cpu":
            return cls("cpu")
        if name.startswith("cuda-"):
            return cls("cuda", facts.parse_cuda(name[5:]))
        raise VariantRefused(f"unknown variant {name!r}", fix="use cpu or cuda-X.Y")


@dataclass(frozen=True)
class Rendered:
    """A spec rendered for one variant: what the solver and pip get."""

    name: str
    variant: Variant
    channels: tuple[str, ...]
    conda: tuple[str, ...]
    pip: tuple[str, ...]
    virtual_packages: dict[str, str] = field(default_factory=dict)

    def spec_hash(self) -> str:
        """Identifies the request; a lock made for another hash no longer matches."""
        data = {"channels": self.channels, "conda": self.conda, "pip": self.pip}
        blob = json.dumps(data, sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.name,
            "channels": list(self.channels),
            "dependencies": list(self.conda),
            "pip": list(self.pip),
            "virtual_packages": self.virtual_packages,
        }


def _sub(text: str, variant: Variant) -> str:
    return text.replace("{cuda}", variant.cuda or "")


def render(spec: EnvSpec, variant: Variant, channels: tuple[str, ...] = ()) -> Rendered:
    """The spec's dependencies and channels for ``variant``. ``channels`` (from --channel)
    replace the spec's channels when given."""
    rule = spec.variants.get(variant.kind)
    deps = list(spec.conda)
    chans = list(channels or spec.channels)
    if rule is not None:
        drop = {dep_name(_sub(r, variant)) for r in rule.remove}
        deps = [d for d in deps if dep_name(d) not in drop]
        for add in (_sub(a, variant) for a in rule.add):
            name = dep_name(add)
            idx = next((i for i, d in enumerate(deps) if dep_name(d) == name), None)
            if idx is None:
                deps.append(add)
            else:
                deps[idx] = merge(deps[idx], add)
        if not channels:
            front = [_sub(ch, variant) for ch in rule.channels]
            chans = front + [c for c in chans if c not in front]
    vpk = {"__cuda": variant.cuda} if variant.kind == "cuda" and variant.cuda else {}
    return Rendered(spec.name, variant, tuple(chans), tuple(deps), spec.pip, vpk)


def _ver_build(dep: str) -> tuple[str | None, str | None, bool]:
    """(version, build, fuzzy) of 'name=ver=build', 'name ver build', 'name>=ver'."""
    bare = dep.split("::", 1)[-1].strip()
    rest = bare[len(dep_name(bare)) :].strip()
    if not rest:
        return None, None, False
    if rest.startswith("=") and not rest.startswith("=="):
        ver, _, build = rest[1:].partition("=")
        return ver or None, build or None, True
    ver, _, build = rest.partition(" ")
    return ver or None, build.strip() or None, False


def merge(base: str, add: str) -> str:
    """A variant entry replacing a base dependency keeps the base's version when it gives only
    a build: ('pytorch>=2.6', 'pytorch=*=cuda*') -> 'pytorch >=2.6 cuda*'."""
    bver, _, fuzzy = _ver_build(base)
    aver, abuild, _ = _ver_build(add)
    if bver in (None, "*") or aver not in (None, "*") or abuild is None:
        return add
    assert bver is not None
    if fuzzy and not bver.endswith("*"):
        bver += ".*"
    return f"{dep_name(add)} {bver} {abuild}"


def pytorch_spec(rendered: Rendered) -> str | None:
    for dep in rendered.conda:
        if dep_name(dep) == "pytorch":
            return dep_version(dep)
    return None


_PATH_OPTIONS = ("-e", "--editable", "-r", "--requirement", "-c", "--constraint")


def relocate_pip(lines: tuple[str, ...], spec_dir: Path, out_dir: Path) -> tuple[str, ...]:
    """pip lines with relative paths (``-e ..``, ``./pkg``, ``-r reqs.txt``) rewritten so that
    they still point at the same place from ``out_dir`` (conda resolves them relative to the
    environment.yml that holds them; the spec's are relative to the spec's directory)."""

    def move(path: str) -> str:
        if not path or os.path.isabs(path) or "://" in path or path.startswith("~"):
            return path
        target = os.path.normpath(spec_dir.absolute() / path)
        rel = os.path.relpath(target, out_dir.absolute())
        return rel if rel.startswith(".") else f"./{rel}"  # "pkg" alone is a project name

    out = []
    for line in lines:
        text = line.strip()
        opt, sep, rest = text.partition(" ")
        if opt in _PATH_OPTIONS and sep:
            out.append(f"{opt} {move(rest.strip())}")
        elif text.startswith("."):
            out.append(move(text))
        else:
            out.append(line)
    return tuple(out)


def has_relative_pip_path(lines: tuple[str, ...]) -> bool:
    return relocate_pip(lines, Path("/a/b"), Path("/c")) != lines


def environment_yml(rendered: Rendered) -> str:
    """A plain environment.yml for plain-conda users (no x-tk block)."""
    deps: list[Any] = list(rendered.conda)
    if rendered.pip:
        deps.append({"pip": list(rendered.pip)})
    body = {"name": rendered.name, "channels": list(rendered.channels), "dependencies": deps}
    header = f"# rendered by `tk env render` for variant {rendered.variant.name}\n"
    if rendered.variant.kind == "cuda":
        header += (
            f"# on a machine without a GPU: CONDA_OVERRIDE_CUDA={rendered.variant.cuda} "
            "conda env create -f THIS_FILE\n"
        )
    return header + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True)
class Choice:
    variant: Variant
    reason: str
    notes: tuple[str, ...] = ()


def choose(
    spec: EnvSpec,
    cuda: str | None,
    cpu: bool,
    probe: GpuProbe | None,
) -> Choice:
    """Pick the variant: an explicit flag wins (checked against the driver when a GPU is
    known); otherwise the newest CUDA of the spec's list the driver runs, else cpu."""
    if cuda is not None and cpu:
        raise VariantRefused("give --cuda X.Y or --cpu, not both")
    if cpu:
        return Choice(Variant("cpu"), "asked for with --cpu")
    if cuda is not None:
        return _explicit_cuda(spec, facts.parse_cuda(cuda), probe)
    if probe is None or not probe.present:
        why = probe.describe() if probe is not None else "GPU detection skipped"
        return Choice(Variant("cpu"), f"{why}: picked cpu (use --cuda X.Y to build for a GPU)")
    assert probe.driver is not None
    candidates = [c for c in spec.cuda_versions if _style_allows(spec, c)]
    best, status = facts.best_cuda_for_driver(candidates, probe.driver)
    if best is None:
        return Choice(
            Variant("cpu"),
            f"{probe.describe()}: the driver is too old for every CUDA the spec lists "
            f"({', '.join(spec.cuda_versions)}); picked cpu (upgrade the driver for a GPU build)",
        )
    notes = [facts.driver_verdict(best, probe.driver).message] if status == "compat" else []
    notes += facts.check_channel_limits(spec.style, best, _pytorch_for(spec, best))
    reason = f"{probe.describe()}: picked CUDA {best}, the newest the driver runs"
    return Choice(Variant("cuda", best), reason, tuple(notes))


def _style_allows(spec: EnvSpec, cuda: str) -> bool:
    try:
        facts.check_channel_limits(spec.style, cuda, _pytorch_for(spec, cuda))
    except VariantRefused:
        return False
    return True


def _pytorch_for(spec: EnvSpec, cuda: str) -> str | None:
    return pytorch_spec(render(spec, Variant("cuda", cuda)))


def _explicit_cuda(spec: EnvSpec, cuda: str, probe: GpuProbe | None) -> Choice:
    notes = list(facts.check_channel_limits(spec.style, cuda, _pytorch_for(spec, cuda)))
    if not facts.is_known_cuda(cuda):
        notes.append(f"CUDA {cuda} is not in tk's driver table; the driver check is approximate")
    if probe is None or not probe.present:
        why = probe.describe() if probe is not None else "no GPU check"
        notes.append(f"{why}: building for CUDA {cuda} anyway (__cuda={cuda} for the solver)")
        return Choice(Variant("cuda", cuda), "asked for with --cuda", tuple(notes))
    assert probe.driver is not None
    verdict = facts.driver_verdict(cuda, probe.driver)
    if verdict.status == "too_old":
        offered = [c for c in spec.cuda_versions if _style_allows(spec, c)]
        best, _ = facts.best_cuda_for_driver(offered, probe.driver)
        alt = f"use --cuda {best}, " if best else ""
        raise VariantRefused(
            f"{verdict.message}", fix=f"{alt}upgrade the NVIDIA driver, or use --cpu"
        )
    if verdict.status == "compat":
        notes.append(verdict.message)
    return Choice(Variant("cuda", cuda), f"asked for with --cuda; {verdict.message}", tuple(notes))
