"""The lock file: exact package URLs and hashes per variant and platform. Engine-neutral.

# envs/inference.lock.yml
version: 1
spec: inference.yml
variants:
  cuda-12.4:
    spec_hash: sha256:...        # of the rendered request; a changed spec no longer matches
    channels: [...]
    dependencies: [...]
    pip: [...]                    # pip lines are recorded, not resolved
    virtual_packages: {__cuda: "12.4"}
    platforms:
      linux-64: [{name, version, build, url, sha256, md5, ...}, ...]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.envs.errors import LockMismatch, SpecError
from toolkit.envs.spec import read_text
from toolkit.envs.variants import Rendered
from toolkit.fsutil import atomic_write

LOCK_VERSION = 1
_FIELDS = (
    "name", "version", "build", "build_number", "subdir", "noarch", "url", "channel", "fn",
    "sha256", "md5", "size", "depends", "constrains",
)  # fmt: skip


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    url: str
    channel: str
    fn: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    noarch: str | None = None
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()

    @property
    def dist(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in _FIELDS:
            value = getattr(self, f)
            if value in (None, ()):
                continue
            out[f] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockedPackage:
        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                build=str(data["build"]),
                build_number=int(data.get("build_number", 0)),
                subdir=str(data["subdir"]),
                url=str(data["url"]),
                channel=str(data.get("channel", "")),
                fn=str(data.get("fn") or data["url"].rsplit("/", 1)[-1]),
                sha256=data.get("sha256"),
                md5=data.get("md5"),
                size=data.get("size"),
                noarch=data.get("noarch"),
                depends=tuple(data.get("depends") or ()),
                constrains=tuple(data.get("constrains") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"lock file entry is incomplete ({exc}): {data!r:.120}") from None


@dataclass
class LockedVariant:
    spec_hash: str
    channels: list[str]
    dependencies: list[str]
    pip: list[str]
    virtual_packages: dict[str, str]
    platforms: dict[str, list[LockedPackage]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec_hash": self.spec_hash,
            "channels": self.channels,
            "dependencies": self.dependencies,
            "pip": self.pip,
            "virtual_packages": self.virtual_packages,
            "platforms": {
                p: [pkg.to_dict() for pkg in sorted(pkgs, key=lambda x: x.name)]
                for p, pkgs in sorted(self.platforms.items())
            },
        }


@dataclass
class Lock:
    spec: str
    variants: dict[str, LockedVariant] = field(default_factory=dict)

    def put(self, rendered: Rendered, platform: str, packages: list[LockedPackage]) -> None:
        """Record ``packages`` for (variant, platform); a changed spec drops stale platforms."""
        name = rendered.variant.name
        old = self.variants.get(name)
        keep = old.platforms if old is not None and old.spec_hash == rendered.spec_hash() else {}
        entry = LockedVariant(
            rendered.spec_hash(),
            list(rendered.channels),
            list(rendered.conda),
            list(rendered.pip),
            dict(rendered.virtual_packages),
            dict(keep),
        )
        entry.platforms[platform] = packages
        self.variants[name] = entry

    def packages(self, rendered: Rendered, platform: str) -> list[LockedPackage] | None:
        """The locked packages if the lock matches the rendered spec, else None."""
        entry = self.variants.get(rendered.variant.name)
        if entry is None or entry.spec_hash != rendered.spec_hash():
            return None
        return entry.platforms.get(platform)

    def previous(self, variant: str, platform: str) -> list[LockedPackage] | None:
        """What was locked for (variant, platform), whatever spec it was made for."""
        entry = self.variants.get(variant)
        return entry.platforms.get(platform) if entry is not None else None

    def require(self, rendered: Rendered, platform: str, path: Path) -> list[LockedPackage]:
        """Like packages(), but says why the lock cannot be used (for --locked)."""
        name = rendered.variant.name
        entry = self.variants.get(name)
        fix = f"run `tk env lock` (with the same variant flag) to refresh {path.name}"
        if entry is None:
            have = ", ".join(self.variants) or "none"
            raise LockMismatch(f"{path} has no {name} variant (has: {have})", fix=fix)
        if entry.spec_hash != rendered.spec_hash():
            changed = what_changed(entry, rendered)
            raise LockMismatch(f"{path} no longer matches the spec ({changed})", fix=fix)
        if platform not in entry.platforms:
            raise LockMismatch(f"{path} has no {platform} packages for {name}", fix=fix)
        return entry.platforms[platform]

    def to_yaml(self) -> str:
        data = {
            "version": LOCK_VERSION,
            "spec": self.spec,
            "variants": {k: v.to_dict() for k, v in sorted(self.variants.items())},
        }
        head = "# Generated by `tk env lock` / `tk env create`. Do not edit by hand.\n"
        return head + yaml.safe_dump(data, sort_keys=False, width=1000)

    def write(self, path: Path) -> None:
        atomic_write(path, self.to_yaml(), mode=0o644)


def what_changed(entry: LockedVariant, rendered: Rendered) -> str:
    before, after = set(entry.dependencies), set(rendered.conda)
    parts = [f"+{d}" for d in sorted(after - before)] + [f"-{d}" for d in sorted(before - after)]
    if list(rendered.channels) != entry.channels:
        parts.append("channels changed")
    if list(rendered.pip) != entry.pip:
        parts.append("pip section changed")
    return ", ".join(parts) or "spec changed"


class CorruptLock(SpecError):
    """The lock file cannot be read as a lock (not YAML, not text, not tk's layout). Without
    ``--locked`` tk solves again and overwrites it."""


class LockTooNew(SpecError):
    """A newer tk wrote the lock file: this one leaves it alone."""


def read(path: Path) -> Lock | None:
    """The lock at ``path``; None when there is none yet. CorruptLock when it is damaged,
    LockTooNew when a newer tk wrote it."""
    if not path.exists():
        return None
    fix = f"run `tk env lock` (or a plain `tk env create`) to write {path.name} again"
    try:
        data = yaml.safe_load(read_text(path, "lock")) or {}
    except SpecError as exc:
        raise CorruptLock(exc.message, fix=fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise CorruptLock(f"{path}{where}: lock file is not valid YAML", fix=fix) from None
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > LOCK_VERSION:
        raise LockTooNew(
            f"{path} was written by a newer tk (lock version {version}, this tk reads "
            f"{LOCK_VERSION})",
            fix=f"upgrade tk (pip install -U tk-toolkit), or delete {path.name} to lock again with "
            "this one",
        )
    if not isinstance(data, dict) or version != LOCK_VERSION:
        raise CorruptLock(f"{path}: not a tk lock file (no `version: {LOCK_VERSION}`)", fix=fix)
    try:
        return _from_data(data)
    except (AttributeError, TypeError, ValueError, SpecError) as exc:
        msg = exc.message if isinstance(exc, SpecError) else str(exc)
        raise CorruptLock(f"{path}: damaged lock file ({msg})", fix=fix) from None


def _from_data(data: dict[str, Any]) -> Lock:
    lock = Lock(str(data.get("spec", "")))
    for name, v in (data.get("variants") or {}).items():
        lock.variants[str(name)] = LockedVariant(
            str(v.get("spec_hash", "")),
            list(v.get("channels") or []),
            list(v.get("dependencies") or []),
            list(v.get("pip") or []),
            dict(v.get("virtual_packages") or {}),
            {
                str(p): [LockedPackage.from_dict(d) for d in pkgs or []]
                for p, pkgs in (v.get("platforms") or {}).items()
            },
        )
    return lock


def content_hash(packages: list[LockedPackage]) -> str:
    """Identifies an exact package set (used to skip re-installing an identical env)."""
    lines = sorted(f"{p.url}#{p.sha256 or p.md5}" for p in packages)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def explicit_file(packages: list[LockedPackage]) -> str:
    """An ``@EXPLICIT`` spec file (conda/mamba/micromamba ``create --file``)."""
    lines = ["# generated by tk env from the lock file", "@EXPLICIT"]
    lines += [f"{p.url}#{p.md5}" if p.md5 else p.url for p in packages]
    return "\n".join(lines) + "\n"
