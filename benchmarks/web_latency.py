"""Web workspace latency: 256 px tiles from a 20,000 px COG, and time to the first streamed step, under load.

Writes (once, cached in ``--out``) a 20,000 x 20,000 px 3-band COG with overviews, starts ``rsrag serve`` on
it in a subprocess (the real CLI and server), then with ``--clients`` concurrent clients on loopback:

* tiles: each client plays a viewer, fetching ``--tiles`` random tiles from the top ``--levels`` pyramid
  levels (cold: the server's tile cache rarely hits on 20k px); p50 / p95 / max latency and tiles/s;
* questions: after one warm-up question (which indexes the scene with ``--tiling``), each client asks a
  question on its own thread at the same moment; time to the first ``step`` event (and to the ``start``
  line) and to the answer, p50 / p95.

Usage: ``.venv/bin/python benchmarks/web_latency.py [--size 20000] [--clients 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_cog(path: Path, size: int) -> Path:
    """A textured ``size`` px 3-band COG (deflate, 512 px blocks, overviews), written strip by strip."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".strips.tif")
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000.0, 5000000.0, 0.3, 0.3), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES"}
    rng = np.random.default_rng(0)
    xx = np.arange(size)
    with rasterio.open(tmp, "w", **profile) as dst:
        for y0 in range(0, size, 1024):
            rows = min(1024, size - y0)
            yy = np.arange(y0, y0 + rows)[:, None]
            base = ((xx[None, :] // 37 + yy // 41) % 7) * 30 + rng.integers(0, 12, (rows, size))
            dst.write(np.stack([base, (base + yy % 64), (base + xx % 96)]).clip(0, 255).astype(np.uint8),
                      window=Window(0, y0, size, rows))
        dst.build_overviews([2, 4, 8, 16, 32, 64], Resampling.average)
    rio_copy(tmp, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, COPY_SRC_OVERVIEWS="YES", BIGTIFF="YES")
    tmp.unlink()
    return path


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1), "n": len(values)}


async def tile_load(url: str, image: dict, clients: int, tiles: int, levels: int) -> dict:
    rng = random.Random(1)
    top = image["max_level"]

    async def viewer(client: httpx.AsyncClient) -> list[float]:
        times = []
        for _ in range(tiles):
            level = rng.randint(max(0, top - levels + 1), top)
            f = 2 ** (top - level)
            cols, rows = -(-image["width"] // (256 * f)), -(-image["height"] // (256 * f))
            t0 = time.perf_counter()
            r = await client.get(f"/api/images/{image['id']}/tiles/{level}/{rng.randrange(cols)}_{rng.randrange(rows)}.jpg")
            r.raise_for_status()
            times.append(time.perf_counter() - t0)
        return times

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*[viewer(client) for _ in range(clients)])
        wall = time.perf_counter() - t0
    flat = [t for r in results for t in r]
    return {**percentiles(flat), "tiles_per_s": round(len(flat) / wall, 1)}


def direct_tiles(cog: Path, image: dict, tiles: int, levels: int) -> dict:
    """Baseline: the same kind of random tiles rendered in this process, one at a time, without the server."""
    from rsrag.agent.interfaces.web.tiles import Pyramid, encode_image
    from rsrag.tools.raster import open_scene

    rng = random.Random(2)
    top = image["max_level"]
    times = []
    with open_scene(cog) as scene:
        pyramid = Pyramid(scene.width, scene.height)
        for _ in range(tiles):
            level = rng.randint(max(0, top - levels + 1), top)
            cols, rows = pyramid.grid(level)
            t0 = time.perf_counter()
            box, out = pyramid.tile(level, rng.randrange(cols), rng.randrange(rows))
            encode_image(scene.read_display(box, out_size=out))
            times.append(time.perf_counter() - t0)
    return percentiles(times)


async def ask(client: httpx.AsyncClient, image_id: str, thread: str) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    first_line = first_step = 0.0
    body = {"image": image_id, "question": "where are the storage tanks?", "thread": thread}
    async with client.stream("POST", "/api/ask", json=body) as response:
        async for line in response.aiter_lines():
            event = json.loads(line)
            now = time.perf_counter() - t0
            first_line = first_line or now
            if event["type"] == "step" and not first_step:
                first_step = now
            if event["type"] in ("answer", "error"):
                return first_line, first_step, now
    raise RuntimeError("the stream ended without an answer")


async def question_load(url: str, image_id: str, clients: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        t0 = time.perf_counter()
        await ask(client, image_id, "warmup")
        warmup = time.perf_counter() - t0
        results = await asyncio.gather(*[ask(client, image_id, f"bench-{i}") for i in range(clients)])
    return {"warmup_with_indexing_s": round(warmup, 1), "first_line": percentiles([r[0] for r in results]),
            "first_step": percentiles([r[1] for r in results]), "answer": percentiles([r[2] for r in results])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "web")
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tiles", type=int, default=40, help="tiles per client")
    parser.add_argument("--levels", type=int, default=5, help="top pyramid levels the viewers wander")
    parser.add_argument("--tiling", default="vit:2048", help="tiling of the warm-up indexing")
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--no-questions", action="store_true", help="measure tiles only (skips indexing and questions)")
    args = parser.parse_args()

    cog = write_cog(args.out / f"cog{args.size}.tif", args.size)
    env = {**os.environ, "RSRAG_HOME": str(args.out / "home"), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "rsrag.agent.interfaces.cli", "serve", str(cog), "--port", str(args.port),
                               "--tiling", args.tiling], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                images = httpx.get(f"{url}/api/images", timeout=2).json()["images"]
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("rsrag serve did not start")
        report = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "image": f"{args.size} x {args.size} px COG", "clients": args.clients,
            "tiles": asyncio.run(tile_load(url, images[0], args.clients, args.tiles, args.levels)),
        }
        report["tiles_direct_one_at_a_time"] = direct_tiles(cog, images[0], args.tiles, args.levels)
        report["tile_p50_server_over_direct"] = round(report["tiles"]["p50_ms"] / report["tiles_direct_one_at_a_time"]["p50_ms"], 2)
        if not args.no_questions:
            report["questions"] = asyncio.run(question_load(url, images[0]["id"], args.clients))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
