"""Build small, real conda packages into a local channel and index it (tests, benchmarks,
offline demos). Each package is a ``.tar.bz2`` holding ``info/index.json``,
``info/paths.json``, ``info/files`` and its files; the channel is indexed with rattler's
``index_fs`` so any conda client can read it."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_EPOCH_MS = 1_700_000_000_000  # fixed timestamps: the same inputs give the same archive


@dataclass(frozen=True)
class PackageSpec:
    name: str
    version: str
    build: str = "0"
    subdir: str = "linux-64"
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # files under bin/ are executable
    build_number: int = 0

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.tar.bz2"


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o755 if name.startswith("bin/") else 0o644
    info.mtime = _EPOCH_MS // 1000
    tf.addfile(info, io.BytesIO(data))


def build_package(channel: Path, pkg: PackageSpec) -> Path:
    """Write one package into ``channel/<subdir>/`` and return its path."""
    files = pkg.files or {f"share/{pkg.name}/README": f"{pkg.name} {pkg.version} {pkg.build}\n"}
    index = {
        "name": pkg.name,
        "version": pkg.version,
        "build": pkg.build,
        "build_number": pkg.build_number,
        "depends": list(pkg.depends),
        "constrains": list(pkg.constrains),
        "subdir": pkg.subdir,
        "license": "MIT",
        "timestamp": _EPOCH_MS,
    }
    if pkg.subdir == "noarch":
        index["noarch"] = "generic"
    paths = []
    out = channel / pkg.subdir / pkg.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:bz2") as tf:
        for rel, text in sorted(files.items()):
            data = text.encode()
            _add(tf, rel, data)
            paths.append(
                {
                    "_path": rel,
                    "path_type": "hardlink",
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size_in_bytes": len(data),
                }
            )
        _add(tf, "info/index.json", json.dumps(index, indent=1).encode())
        _add(tf, "info/paths.json", json.dumps({"paths": paths, "paths_version": 1}).encode())
        _add(tf, "info/files", ("\n".join(sorted(files)) + "\n").encode())
    return out


def make_channel(channel: Path, packages: Iterable[PackageSpec]) -> Path:
    """Build ``packages`` into ``channel`` and index it (noarch always exists)."""
    from toolkit.envs.engine_rattler import index_channel

    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        build_package(channel, pkg)
    index_channel(channel)
    return channel
