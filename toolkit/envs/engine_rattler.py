"""The default engine: py-rattler (the solver and installer behind pixi). No conda needed.

py-rattler's API is async; each entry point here runs one ``asyncio.run``. Its API changes
between minor versions, so pyproject pins ``py-rattler>=0.28,<0.29``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rattler
from rattler.exceptions import (
    FetchRepoDataError,
    GatewayError,
    InvalidChannelError,
    InvalidMatchSpecError,
    SolverError,
)

from toolkit.envs.errors import ChannelError, InstallError, SolveError, SpecError
from toolkit.envs.lock import LockedPackage
from toolkit.envs.variants import Rendered

# Virtual packages per platform family, so a lock is the same whatever machine made it.
# __cuda is added for cuda variants (like CONDA_OVERRIDE_CUDA).
_BASE_VIRTUAL: dict[str, list[tuple[str, str, str]]] = {
    "linux": [("__unix", "0", "0"), ("__linux", "5.10", "0"), ("__glibc", "2.28", "0")],
    "osx": [("__unix", "0", "0"), ("__osx", "13.0", "0")],
    "win": [("__win", "0", "0")],
}


def virtual_packages(platform: str, cuda: str | None) -> list[tuple[str, str, str]]:
    """(name, version, build) of the virtual packages the solver assumes for ``platform``."""
    family = platform.split("-")[0]
    out = list(_BASE_VIRTUAL.get(family, []))
    arch = platform.split("-")[-1]
    out.append(("__archspec", "1", {"64": "x86_64", "arm64": "m1"}.get(arch, arch)))
    if cuda and family != "osx":
        out.append(("__cuda", cuda, "0"))
    return out


def channel(text: str) -> rattler.Channel:
    """A channel from a name (conda-forge), a URL, or a local directory."""
    path = Path(text).expanduser()
    if "://" not in text and (text.startswith((".", "/", "~")) or path.is_dir()):
        text = path.absolute().as_uri()
    try:
        return rattler.Channel(text)
    except InvalidChannelError as exc:
        raise ChannelError(f"invalid channel {text!r}: {exc}") from None


def _specs(deps: tuple[str, ...]) -> list[rattler.MatchSpec]:
    out = []
    for dep in deps:
        try:
            out.append(rattler.MatchSpec(dep))
        except InvalidMatchSpecError as exc:
            raise SpecError(f"invalid package spec {dep!r}: {_first_line(exc)}") from None
    return out


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def to_locked(record: Any) -> LockedPackage:
    return LockedPackage(
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        build_number=int(record.build_number),
        subdir=str(record.subdir),
        url=str(record.url),
        channel=str(record.channel or ""),
        fn=str(record.file_name),
        sha256=record.sha256.hex() if record.sha256 else None,
        md5=record.md5.hex() if record.md5 else None,
        size=record.size,
        noarch=_noarch(record.noarch),
        depends=tuple(record.depends),
        constrains=tuple(record.constrains),
    )


def _noarch(value: Any) -> str | None:
    if value is None or getattr(value, "none", False) is True:
        return None
    for attr in ("python", "generic"):
        if getattr(value, attr, False) is True:
            return attr
    text = str(value).lower()
    return None if text in ("", "none", "false") else text


def to_record(pkg: LockedPackage) -> Any:
    rec = rattler.PackageRecord(
        name=pkg.name,
        version=pkg.version,
        build=rattler.BuildString(pkg.build),
        build_number=pkg.build_number,
        subdir=pkg.subdir,
        noarch=pkg.noarch,  # type: ignore[arg-type]
        depends=list(pkg.depends),
        constrains=list(pkg.constrains),
        sha256=bytes.fromhex(pkg.sha256) if pkg.sha256 else None,
        md5=bytes.fromhex(pkg.md5) if pkg.md5 else None,
        size=pkg.size,
    )
    return rattler.RepoDataRecord(rec, pkg.fn, pkg.url, pkg.channel)


def solve(
    rendered: Rendered,
    platform: str,
    prefer: list[LockedPackage] | None = None,
    repodata_cache: Path | None = None,
) -> list[LockedPackage]:
    """Solve the rendered spec for ``platform`` (with the variant's ``__cuda``).

    ``prefer``: packages of an earlier lock, kept where they still satisfy the spec (so
    editing the spec changes as little as possible, as pixi does).
    """
    specs = _specs(rendered.conda)
    if not rendered.channels:
        raise SpecError("the spec lists no channels", fix="add channels: or pass --channel")
    chans = [channel(c) for c in rendered.channels]
    vpk = [
        rattler.GenericVirtualPackage(
            rattler.PackageName(n), rattler.Version(v), rattler.BuildString(b)
        )
        for n, v, b in virtual_packages(platform, rendered.variant.cuda)
    ]

    locked = [to_record(p) for p in prefer or []]
    gateway = rattler.Gateway(cache_dir=repodata_cache) if repodata_cache else None

    async def run() -> list[Any]:
        return await rattler.solve(
            chans,
            specs,
            gateway=gateway,
            platforms=[rattler.Subdir(platform), rattler.Subdir("noarch")],
            virtual_packages=vpk,
            locked_packages=locked or None,
        )

    try:
        records = asyncio.run(run())
    except SolverError as exc:
        raise SolveError(
            f"no set of packages satisfies the spec for {rendered.variant.name} on {platform}: "
            + _tree(exc),
            fix="change the pins the explanation names, or add the channel that has them",
        ) from None
    except (GatewayError, FetchRepoDataError) as exc:
        raise ChannelError(
            f"cannot read a channel: {_chain(exc)}",
            fix="check the channel URL and the network (or use --channel with a reachable one)",
        ) from None
    return [to_locked(r) for r in records]


def _tree(exc: BaseException) -> str:
    text = str(exc).replace("Cannot solve the request because of:", "").strip()
    return " ".join(line.strip(" └─├│") for line in text.splitlines() if line.strip())


def _chain(exc: BaseException) -> str:
    return " <- ".join(line.strip() for line in str(exc).splitlines() if line.strip())


class _Reporter:
    """Forwards link progress to a callback(done, total, package_name)."""

    def __init__(self, callback: Callable[[int, int, str], None]) -> None:
        self.callback = callback
        self.total = 0
        self.done = 0
        self.names: dict[int, str] = {}

    def on_transaction_start(self, total_operations: int) -> None:
        self.total = total_operations
        self.callback(0, total_operations, "")

    def on_link_start(self, operation: int, package_name: str) -> int:
        self.names[operation] = package_name
        return operation

    def on_link_complete(self, index: int) -> None:
        self.done += 1
        self.callback(self.done, self.total, self.names.get(index, ""))

    def __getattr__(self, name: str) -> Callable[..., int]:  # the other callbacks: no-ops
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: 0


def install(
    packages: list[LockedPackage],
    into: Path,
    final: Path,
    requested: tuple[str, ...],
    cache_dir: Path | None,
    progress: Callable[[int, int, str], None] | None = None,
) -> None:
    """Link ``packages`` into the empty directory ``into``, with paths patched for ``final``
    (the prefix it is renamed to afterwards)."""
    records = [to_record(p) for p in packages]
    req = [rattler.MatchSpec(r)._match_spec for r in requested if _parses(r)]

    async def run() -> None:
        await rattler.install(
            records,
            target_prefix=into,
            alternative_target_prefix=final,
            cache_dir=cache_dir,
            show_progress=False,
            requested_specs=req,
            reporter=_Reporter(progress) if progress else None,  # type: ignore[arg-type]
            execute_link_scripts=False,
        )

    try:
        asyncio.run(run())
    except (GatewayError, FetchRepoDataError) as exc:
        raise ChannelError(f"cannot download a package: {_chain(exc)}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("rattler", "exceptions")):
            raise InstallError(f"install failed: {_chain(exc)}") from None
        raise


def _parses(spec: str) -> bool:
    try:
        rattler.MatchSpec(spec)
    except InvalidMatchSpecError:
        return False
    return True


def index_channel(directory: Path) -> None:
    """Write repodata.json for every subdir of a local channel (conda index)."""
    from rattler.index import index_fs

    asyncio.run(index_fs(directory, write_zst=False, write_shards=False, force=True))
