"""Benchmark: how solve and install from a local channel grow with the number of packages.

    .venv/bin/python bench/bench_env.py                 # 10, 100, 1000 packages
    .venv/bin/python bench/bench_env.py --sizes 10,100 --versions 3 --files 5

For each size N it builds N packages (each in --versions versions, each depending on up to three
earlier packages), indexes the channel with rattler's index_fs, solves a request for all N
names, installs into a fresh prefix with a cold package cache, then again with a warm cache, and
times tk's "nothing to do" check on the finished prefix. Prints one table.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from toolkit.envs import engine_rattler
from toolkit.envs.localchannel import PackageSpec, build_package
from toolkit.envs.variants import Rendered, Variant


def build_channel(root: Path, n: int, versions: int, files: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (root / "noarch").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        deps = sorted({f"pkg{j:04d} >=1" for j in rng.sample(range(i), min(i, 3))}) if i else []
        for v in range(1, versions + 1):
            content = {
                f"lib/pkg{i:04d}/f{k}.txt": f"pkg{i} v{v} file {k}\n" * 8 for k in range(files)
            }
            build_package(
                root,
                PackageSpec(f"pkg{i:04d}", f"{v}.0", "0", depends=tuple(deps), files=content),
            )
    return root


def timed(fn: object, *args: object) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0, out


def run(n: int, versions: int, files: int, work: Path) -> dict[str, float]:
    chan = work / f"chan{n}"
    t_build, _ = timed(build_channel, chan, n, versions, files)
    t_index, _ = timed(engine_rattler.index_channel, chan)
    rendered = Rendered(
        "bench", Variant("cpu"), (str(chan),), tuple(f"pkg{i:04d}" for i in range(n)), ()
    )
    t_solve, pkgs = timed(engine_rattler.solve, rendered, "linux-64")
    assert isinstance(pkgs, list) and len(pkgs) == n
    cache = work / f"cache{n}"
    t_cold, _ = timed(
        engine_rattler.install, pkgs, work / f"p{n}a", work / f"p{n}a", rendered.conda, cache, None
    )
    t_warm, _ = timed(
        engine_rattler.install, pkgs, work / f"p{n}b", work / f"p{n}b", rendered.conda, cache, None
    )
    return {"n": n, "build": t_build, "index": t_index, "solve": t_solve, "cold": t_cold,
            "warm": t_warm}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--versions", type=int, default=3)
    ap.add_argument("--files", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tk-bench-env-"))
    rows = []
    try:
        for n in sizes:
            rows.append(run(n, args.versions, args.files, work))
            print(f"  done N={n}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = [
        ("packages", 8), ("index s", 8), ("solve s", 8), ("install cold s", 14),
        ("install warm s", 14), ("warm ms/pkg", 11), ("solve x", 8), ("install x", 9),
    ]  # fmt: skip
    head = " ".join(f"{name:>{width}}" for name, width in cols)
    print(f"# {args.versions} versions x {args.files} files per package, local file:// channel")
    print(head)
    prev = None
    for r in rows:
        sx = f"{r['solve'] / prev['solve']:.1f}" if prev else "-"
        ix = f"{r['cold'] / prev['cold']:.1f}" if prev else "-"
        print(f"{int(r['n']):>8} {r['index']:>8.3f} {r['solve']:>8.3f} {r['cold']:>14.3f} "
              f"{r['warm']:>14.3f} {1000 * r['warm'] / r['n']:>11.2f} {sx:>8} {ix:>9}")  # fmt: skip
        prev = r
    print("solve x / install x: growth against the previous row (10x more packages each row)")


if __name__ == "__main__":
    main()
