"""The lock file format, as pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.envs import lock, spec, variants
from toolkit.envs.errors import LockMismatch, SpecError
from toolkit.envs.lock import LockedPackage
from toolkit.envs.variants import Variant

ROOT = Path(__file__).resolve().parents[2]
CF = spec.load(ROOT / "envs/inference.yml")

TORCH = LockedPackage(
    name="pytorch", version="2.6.0", build="cuda124_py311_0", build_number=0,
    subdir="linux-64", url="https://conda.anaconda.org/conda-forge/linux-64/pytorch-2.6.0-cuda124_py311_0.conda",
    channel="https://conda.anaconda.org/conda-forge/", fn="pytorch-2.6.0-cuda124_py311_0.conda",
    sha256="ab" * 32, md5="cd" * 16, size=123, depends=("__cuda >=12.4", "python 3.11.*"),
)  # fmt: skip


def test_round_trip(tmp_path: Path) -> None:
    rendered = variants.render(CF, Variant("cuda", "12.4"))
    lk = lock.Lock("inference.yml")
    lk.put(rendered, "linux-64", [TORCH])
    path = tmp_path / "inference.lock.yml"
    lk.write(path)
    again = lock.read(path)
    assert again is not None
    assert again.packages(rendered, "linux-64") == [TORCH]
    assert again.packages(rendered, "win-64") is None
    assert again.to_yaml() == lk.to_yaml()
    assert path.stat().st_mode & 0o777 == 0o644


def test_stale_and_missing_entries_say_why(tmp_path: Path) -> None:
    lk = lock.Lock("inference.yml")
    lk.put(variants.render(CF, Variant("cuda", "12.4")), "linux-64", [TORCH])
    path = tmp_path / "x.lock.yml"
    with pytest.raises(LockMismatch, match=r"has no cpu variant \(has: cuda-12\.4\)"):
        lk.require(variants.render(CF, Variant("cpu")), "linux-64", path)
    other = variants.render(CF, Variant("cuda", "12.4"), channels=("file:///mirror",))
    with pytest.raises(LockMismatch, match="no longer matches the spec \\(channels changed\\)"):
        lk.require(other, "linux-64", path)
    with pytest.raises(LockMismatch, match="has no osx-arm64 packages"):
        lk.require(variants.render(CF, Variant("cuda", "12.4")), "osx-arm64", path)


def test_a_changed_spec_drops_the_old_platforms() -> None:
    lk = lock.Lock("inference.yml")
    lk.put(variants.render(CF, Variant("cpu")), "osx-arm64", [TORCH])
    changed = variants.render(CF, Variant("cpu"), channels=("file:///m",))
    lk.put(changed, "linux-64", [TORCH])
    assert set(lk.variants["cpu"].platforms) == {"linux-64"}


def test_content_hash_and_explicit_file() -> None:
    assert lock.content_hash([TORCH]) == lock.content_hash([TORCH])
    text = lock.explicit_file([TORCH])
    assert "@EXPLICIT" in text.splitlines()
    assert f"{TORCH.url}#{'cd' * 16}" in text


def test_broken_lock_files(tmp_path: Path) -> None:
    p = tmp_path / "l.yml"
    p.write_text("version: 1\nvariants: {cpu: {platforms: {linux-64: [{name: x}]}}}\n")
    with pytest.raises(SpecError, match="incomplete"):
        lock.read(p)
    p.write_text("version: 7\n")
    with pytest.raises(lock.LockTooNew, match=r"newer tk \(lock version 7, this tk reads 1\)"):
        lock.read(p)
    p.write_text("spec: x.yml\n")
    with pytest.raises(lock.CorruptLock, match="not a tk lock file"):
        lock.read(p)
    p.write_text("version: [\n")
    with pytest.raises(lock.CorruptLock, match=":2: lock file is not valid YAML"):
        lock.read(p)
    p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(lock.CorruptLock, match=r"not a text file \(UTF-8\)"):
        lock.read(p)
