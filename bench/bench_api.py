"""What one upload costs the API and Redis, in CPU time, with no worker running.

    .venv/bin/python bench/bench_api.py                 # 3 rounds x 3000 uploads per body form
    .venv/bin/python bench/bench_api.py --uploads 1000 --rounds 1

A hardened redis-server and `tk api` (real processes, as in bench_serve.py); a lean
keep-alive client sends POST /predict (answered 202, nothing waits) at a fixed concurrency,
in each body form the API takes. CPU time per request (user + system, from /proc) is far
steadier on a shared machine than throughput, so this is the figure to compare when
changing the API's request path. Tasks pile up in Redis (about 36 KB each); the stack is
thrown away afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serve as bs  # the stack, the client and the photo live there


def bodies(data: bytes) -> dict[str, tuple[bytes, str]]:
    """Body and content type of one upload of ``data``, per form the API accepts."""
    boundary = uuid.uuid4().hex
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="img.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    forms = {
        "raw image/jpeg": (data, "image/jpeg"),
        "multipart": (multipart, f"multipart/form-data; boundary={boundary}"),
    }
    doc = {"image_b64": base64.b64encode(data).decode()}
    forms["json base64"] = (json.dumps(doc).encode(), "application/json")
    return forms


async def upload(port: int, body: bytes, ctype: str, n: int, concurrency: int) -> None:
    left = [n]

    async def loop() -> None:
        conn = bs.Conn("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                status, reply = await conn.request("POST", "/predict", body, ctype)
                if status != 202:
                    raise RuntimeError(f"POST /predict answered {status}: {reply[:200]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(loop() for _ in range(concurrency)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", default="chelsea")
    ap.add_argument("--uploads", type=int, default=3000, help="per round and body form")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    data = bs.image_bytes(args.image)
    print(f"image {args.image}: {len(data)} bytes JPEG; {args.uploads} uploads x "
          f"{args.rounds} rounds per form, concurrency {args.concurrency}")  # fmt: skip
    rows = []
    with bs.Stack(1, 1, 4, 5) as stack:  # the API and Redis; no worker is started
        for form, (body, ctype) in bodies(data).items():
            bs.run_client(upload(stack.port, body, ctype, 300, args.concurrency))  # warm up
            per: dict[str, list[float]] = {}
            rates = []
            for _ in range(args.rounds):
                c0, t0 = stack.cpu_s(), time.perf_counter()
                bs.run_client(upload(stack.port, body, ctype, args.uploads, args.concurrency))
                c1, wall = stack.cpu_s(), time.perf_counter() - t0
                rates.append(args.uploads / wall)
                for k in c1:
                    per.setdefault(k, []).append((c1[k] - c0[k]) / args.uploads * 1e6)
            row = {"form": form, "uploads_s": statistics.median(rates)}
            row.update({f"{k}_us": statistics.median(v) for k, v in per.items()})
            rows.append(row)
            print(f"  {form:15} {row['uploads_s']:6.0f} uploads/s; CPU us per upload (median): "
                  + ", ".join(f"{k} {row[k + '_us']:.0f}" for k in per), flush=True)  # fmt: skip
    print()
    bs.print_table(rows, ["form", "uploads_s", "api_us", "redis_us", "client_us"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
