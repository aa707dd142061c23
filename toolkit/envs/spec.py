"""Read an environment spec: a conda ``environment.yml`` plus an optional ``x-tk:`` block.

``check(path)`` returns every schema error and warning with its line number; ``load(path)``
returns an :class:`EnvSpec` or raises :class:`SpecError`. Pure apart from reading the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.envs import facts
from toolkit.envs.errors import SpecError
from toolkit.errors import UsageError

PLATFORMS = ("linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64", "win-64")
TOP_KEYS = ("name", "channels", "dependencies", "prefix", "variables", "x-tk")
XTK_KEYS = ("style", "cuda", "variants", "validate", "platforms")
RULE_KEYS = ("add", "remove", "channels")
VALIDATE_KEYS = ("imports", "commands", "torch", "pip_check")
DEFAULT_CUDA = ("12.8", "12.6", "12.4", "12.1", "11.8")

# conda package name -> the name pip knows it by (for the "in conda and pip" warning)
PIP_NAME = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "redis-py": "redis",
    "py-rattler": "py-rattler",
}


@dataclass(frozen=True)
class Problem:
    line: int | None
    message: str

    def render(self, path: Path) -> str:
        where = f":{self.line}" if self.line else ""
        return f"{path}{where}: {self.message}"


@dataclass(frozen=True)
class VariantRule:
    """What a variant adds (replacing base dependencies of the same name) or removes."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probes:
    imports: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    torch: bool = True
    pip_check: bool = True


@dataclass(frozen=True)
class EnvSpec:
    path: Path
    name: str
    channels: tuple[str, ...]
    conda: tuple[str, ...]
    pip: tuple[str, ...]
    style: str = "conda-forge"
    cuda_versions: tuple[str, ...] = DEFAULT_CUDA
    variants: dict[str, VariantRule] = field(default_factory=dict)
    probes: Probes = Probes()
    platforms: tuple[str, ...] = ("linux-64",)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name.rsplit(".", 1)[0] + ".lock.yml")


@dataclass
class Report:
    path: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    spec: EnvSpec | None = None


_NAME_RE = re.compile(r"^(?:[^:\s]+::)?([A-Za-z0-9_][A-Za-z0-9_.\-]*)")


def dep_name(dep: str) -> str:
    """'conda-forge::pytorch>=2.1=cuda*' -> 'pytorch' (lower case)."""
    m = _NAME_RE.match(dep.strip())
    return m.group(1).lower() if m else dep.strip().lower()


def dep_version(dep: str) -> str | None:
    """'pytorch>=2.6' -> '>=2.6'; 'python=3.11' -> '=3.11'; 'python' -> None."""
    rest = _NAME_RE.sub("", dep.strip(), count=1).strip()
    if not rest:
        return None
    if rest.startswith("=") and not rest.startswith("=="):
        rest = rest[1:]
    rest = rest.split("=")[0] if "=" in rest and not rest.startswith(("=", ">", "<")) else rest
    return rest.strip() or None


def pip_name(line: str) -> str | None:
    """A pip requirement line's project name (normalised), or None for options/paths/URLs."""
    text = line.strip()
    if not text or text.startswith(("-", ".", "/")) or "://" in text.split("@")[0]:
        return None
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", text)
    return m.group(1).lower().replace("_", "-").replace(".", "-") if m else None


class _Checker:
    def __init__(self, path: Path) -> None:
        self.report = Report(path)

    def err(self, node: yaml.Node | None, msg: str) -> None:
        self.report.errors.append(Problem(_line(node), msg))

    def warn(self, node: yaml.Node | None, msg: str) -> None:
        self.report.warnings.append(Problem(_line(node), msg))

    def strings(
        self, node: yaml.Node, what: str, text_only: bool = False
    ) -> list[tuple[str, yaml.Node]]:
        """The entries of a list of strings; with ``text_only``, a number or true/false
        (YAML's ``- 42``) is an error rather than read as text."""
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, f"{what} must be a list")
            return []
        out: list[tuple[str, yaml.Node]] = []
        for item in node.value:
            if not (isinstance(item, yaml.ScalarNode) and item.value != ""):
                self.err(item, f"{what}: each entry must be a non-empty string")
            elif text_only and item.tag != _STR_TAG:
                self.err(item, f"{what}: {item.value!r} is {_kind(item)}, not a string "
                         "(quote it if it is meant as text)")  # fmt: skip
            else:
                out.append((str(item.value), item))
        return out

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping")
            return {}
        out: dict[str, Any] = {}
        for k, v in node.value:
            key = str(k.value)
            if key not in allowed:
                self.err(k, f"unknown key {key!r} in {what}; known: {', '.join(allowed)}")
                continue
            out[key] = v
        return out


_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"


def _kind(node: yaml.Node) -> str:
    kind = str(node.tag).rsplit(":", 1)[-1]
    return {"int": "a number", "float": "a number", "bool": "true/false", "null": "null"}.get(
        kind, f"a YAML {kind}"
    )


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _strs(c: _Checker, node: yaml.Node, what: str) -> tuple[str, ...]:
    return tuple(s for s, _ in c.strings(node, what))


def _bool(c: _Checker, node: yaml.Node, what: str) -> bool:
    text = str(getattr(node, "value", "")).lower()
    if getattr(node, "tag", None) != _BOOL_TAG:
        got = f", got the string {node.value!r}" if isinstance(node, yaml.ScalarNode) else ""
        c.err(node, f"{what} must be true or false{got}")
        return True
    return text in ("true", "yes", "on")


def _top(c: _Checker, root: yaml.Node) -> dict[str, Any]:
    if not isinstance(root, yaml.MappingNode):
        c.err(root, "expected a mapping (name, channels, dependencies) at the top level")
        return {}
    out: dict[str, Any] = {}
    for k, v in root.value:
        key = str(k.value)
        if key not in TOP_KEYS:
            c.warn(k, f"unknown top-level key {key!r} (conda ignores it)")
        out[key] = v
    return out


def _dependencies(c: _Checker, node: yaml.Node | None) -> tuple[list[Any], list[Any]]:
    conda: list[tuple[str, yaml.Node]] = []
    pip: list[tuple[str, yaml.Node]] = []
    if node is None:
        c.err(None, "no 'dependencies' list")
        return conda, pip
    if not isinstance(node, yaml.SequenceNode):
        c.err(node, "dependencies must be a list")
        return conda, pip
    for item in node.value:
        if isinstance(item, yaml.ScalarNode) and item.value != "" and item.tag != _STR_TAG:
            c.err(item, f"dependencies: {item.value!r} is {_kind(item)}, not a package spec")
        elif isinstance(item, yaml.ScalarNode) and item.value != "":
            conda.append((str(item.value), item))
            _match_spec(c, str(item.value), item)
        elif isinstance(item, yaml.MappingNode):
            sub = c.mapping(item, "a dependencies entry", ("pip",))
            if "pip" in sub:
                pip.extend(c.strings(sub["pip"], "pip", text_only=True))
        else:
            c.err(item, "dependencies: each entry must be a package spec or a 'pip:' list")
    return conda, pip


def _match_spec(c: _Checker, dep: str, node: yaml.Node) -> None:
    """An error for a conda package spec the solver would reject or misread. Uses
    py-rattler's MatchSpec (the solver's own parser), imported here so ``tk --help`` stays
    fast; without it only tk's own checks run."""
    problem = match_spec_problem(dep)
    if problem is not None:
        c.err(node, f"invalid package spec {dep!r}: {problem}")


def match_spec_problem(dep: str) -> str | None:
    """Why ``dep`` is not a valid conda match spec, or None."""
    if "#" in dep:
        return "'#' starts a comment in a package spec (the rest would be dropped)"
    try:
        from rattler import MatchSpec
        from rattler.exceptions import InvalidMatchSpecError
    except ImportError:  # pragma: no cover - py-rattler is a dependency
        return None
    try:
        parsed = MatchSpec(dep.replace("{cuda}", "12.4"))
    except InvalidMatchSpecError as exc:
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else "not a package spec"
    version = str(parsed.version or "").lstrip("=!<>~ ")
    if version and version != "*" and not any(ch.isdigit() for ch in version):
        return f"the version {version!r} has no digits (a space separates name and version)"
    return None


def _cuda_list(c: _Checker, node: yaml.Node) -> tuple[str, ...]:
    out = []
    for text, item in c.strings(node, "x-tk.cuda"):
        try:
            cuda = facts.parse_cuda(text)
        except UsageError as exc:
            c.err(item, exc.message)
            continue
        if not facts.is_known_cuda(cuda):
            c.warn(item, f"unknown CUDA version {cuda}: no NVIDIA driver table entry for it")
        out.append(cuda)
    return tuple(out)


def _variants(c: _Checker, node: yaml.Node) -> dict[str, VariantRule]:
    out: dict[str, VariantRule] = {}
    for kind, rule_node in c.mapping(node, "x-tk.variants", ("cpu", "cuda")).items():
        rule = c.mapping(rule_node, f"x-tk.variants.{kind}", RULE_KEYS)
        parts: dict[str, tuple[str, ...]] = {}
        for k, v in rule.items():
            entries = c.strings(v, f"variants.{kind}.{k}", text_only=k != "channels")
            if k == "add":
                for text, item in entries:
                    _match_spec(c, text, item)
            parts[k] = tuple(text for text, _ in entries)
        out[kind] = VariantRule(**parts)
    return out


def _probes(c: _Checker, node: yaml.Node) -> Probes:
    m = c.mapping(node, "x-tk.validate", VALIDATE_KEYS)
    return Probes(
        imports=_strs(c, m["imports"], "imports") if "imports" in m else (),
        commands=_strs(c, m["commands"], "commands") if "commands" in m else (),
        torch=_bool(c, m["torch"], "validate.torch") if "torch" in m else True,
        pip_check=_bool(c, m["pip_check"], "validate.pip_check") if "pip_check" in m else True,
    )


def _platforms(c: _Checker, node: yaml.Node) -> tuple[str, ...]:
    out = []
    for text, item in c.strings(node, "x-tk.platforms"):
        if text not in PLATFORMS:
            c.err(item, f"unknown platform {text!r}; known: {', '.join(PLATFORMS)}")
        else:
            out.append(text)
    return tuple(out) or ("linux-64",)


def _xtk(c: _Checker, node: yaml.Node | None) -> dict[str, Any]:
    if node is None:
        c.warn(None, "no x-tk block: every variant gets the dependencies as written")
        return {}
    m = c.mapping(node, "x-tk", XTK_KEYS)
    out: dict[str, Any] = {}
    if "style" in m:
        style = str(getattr(m["style"], "value", ""))
        if style not in facts.STYLES:
            c.err(m["style"], f"x-tk.style must be one of {', '.join(facts.STYLES)}")
        else:
            out["style"] = style
    if "cuda" in m:
        out["cuda_versions"] = _cuda_list(c, m["cuda"])
    if "variants" in m:
        out["variants"] = _variants(c, m["variants"])
    if "validate" in m:
        out["probes"] = _probes(c, m["validate"])
    if "platforms" in m:
        out["platforms"] = _platforms(c, m["platforms"])
    return out


def _guess_style(channels: tuple[str, ...], variants: dict[str, VariantRule]) -> str:
    adds = [dep_name(a) for r in variants.values() for a in r.add]
    extra = [ch for r in variants.values() for ch in r.channels]
    if "pytorch-cuda" in adds or "cpuonly" in adds or "pytorch" in (*channels, *extra):
        return "pytorch"
    return "conda-forge"


def _warnings(c: _Checker, conda: list[Any], pip: list[Any], x: dict[str, Any]) -> None:
    names = {dep_name(d): node for d, node in conda}
    for line, node in pip:
        name = pip_name(line)
        for cname in names:
            if name is not None and name == PIP_NAME.get(cname, cname):
                c.warn(
                    node,
                    f"{name} is both a conda dependency and a pip one: pip will overwrite "
                    "conda's files (keep it in one place, usually conda)",
                )
    python = [d for d, _ in conda if dep_name(d) == "python"]
    if not python:
        c.warn(None, "python is not listed: the solver picks any version")
    elif dep_version(python[0]) in (None, "*"):
        c.warn(names["python"], "python is not pinned (e.g. python=3.11): builds drift")
    style = x.get("style") or "conda-forge"
    if style == "pytorch":
        for cuda in x.get("cuda_versions", ()):
            if cuda not in facts.LEGACY_PYTORCH_CUDA:
                c.warn(None, f"CUDA {cuda} has no pytorch-cuda metapackage (it stops at 12.4)")
    rule = x.get("variants", {}).get("cuda")
    if rule is not None and not any("{cuda}" in a for a in (*rule.add, *rule.channels)):
        c.warn(None, "the cuda variant never uses {cuda}: every --cuda gives the same packages")


def check(path: Path) -> Report:
    """Every schema error and warning in the spec at ``path``."""
    c = _Checker(path)
    text = read_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        c.report.errors.append(Problem(mark.line + 1 if mark else None, f"YAML: {problem}"))
        return c.report
    if root is None:
        c.err(None, "the file is empty")
        return c.report
    top = _top(c, root)
    name = str(getattr(top.get("name"), "value", "") or path.stem.split(".")[0])
    channels = _strs(c, top["channels"], "channels") if "channels" in top else ()
    conda, pip = _dependencies(c, top.get("dependencies"))
    x = _xtk(c, top.get("x-tk"))
    if "style" not in x:
        x["style"] = _guess_style(channels, x.get("variants", {}))
    _warnings(c, conda, pip, x)
    if not c.report.errors:
        c.report.spec = EnvSpec(
            path=path,
            name=name,
            channels=channels,
            conda=tuple(d for d, _ in conda),
            pip=tuple(p for p, _ in pip),
            **x,
        )
    return c.report


def read_text(path: Path, what: str = "spec") -> str:
    """The text of a spec (or lock) file; SpecError (exit 2), one line, when it is missing,
    unreadable or not UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{what} file {path} not found", fix=MISSING_SPEC_FIX) from None
    except UnicodeDecodeError:
        raise SpecError(
            f"{path}: not a text file (UTF-8)",
            fix=f"a {what} file is YAML text; check the file name, or recreate it",
        ) from None
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from None


MISSING_SPEC_FIX = "pass -f FILE or create envs/inference.yml (see docs/env.md)"


def load(path: Path) -> EnvSpec:
    """The spec at ``path``, or SpecError naming the first problems with their lines."""
    report = check(path)
    if report.spec is None:
        shown = "; ".join(p.render(path) for p in report.errors[:3])
        more = f" (+{len(report.errors) - 3} more)" if len(report.errors) > 3 else ""
        raise SpecError(f"invalid spec: {shown}{more}", fix=f"run `tk env check-spec {path}`")
    return report.spec
