"""Benchmark: a conversion into the scene cache killed part-way, resumed from its checkpoint.

Builds (once, under ``benchmarks/out/cache_resume/``) a ``--side`` px striped RGB GeoTIFF (16-row DEFLATE strips,
dense textured content, so decoding and re-encoding cost what real imagery costs), then, each arm in a fresh
process converting into a fresh cache with :meth:`rsrag.tools.scene_cache.SceneCache.build` through
:func:`rsrag.tools.raster.open_scene` (what every command runs on first open):

* ``full``: an uninterrupted conversion with the default checkpoint interval (the baseline);
* ``every-strip``: a checkpoint after every strip (the worst case of the checkpoint's cost);
* ``killed``: SIGKILL once ``--kill-at`` of the rows are converted, with checkpoints every ``--every`` s;
  then ``resumed``: the next open of the same source in a new process.

Reports wall and CPU seconds of each arm, the row the resumed conversion started at, and the resumed arm's time
as a share of the full one.

Run:  .venv/bin/python benchmarks/cache_resume.py [--side 16000] [--kill-at 0.6] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "cache_resume"

CHILD = """
import json, os, resource, sys, time
from rsrag.tools import scene_cache
from rsrag.tools.raster import open_scene
source, root, every, kill_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
if every >= 0:
    scene_cache.CHECKPOINT_SECONDS = every
first = {}
def progress(p):
    first.setdefault("resumed_from", p.resumed_from)
    if kill_at and p.done >= kill_at * p.total:
        print(json.dumps({"killed_at_row": p.done}), flush=True)
        time.sleep(600)
t0 = time.perf_counter()
with open_scene(source, cache=scene_cache.SceneCache(root, min_pixels=0), progress=progress):
    pass
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
                  "peak_rss_mib": ru.ru_maxrss / 1024, **first}), flush=True)
"""


def build(path: Path, side: int) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (3, 512, 512), dtype=np.uint8)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", compress="deflate",
                       blockysize=16, crs="EPSG:32633", transform=from_origin(600000.0, 5120000.0, 0.5, 0.5)) as dst:
        for y in range(0, side, 512):
            n = min(512, side - y)
            strip = np.tile(tile[:, :n], (1, 1, -(-side // 512)))[:, :, :side]
            strip = (strip // 4 + (np.arange(side, dtype=np.uint16)[None, None, :] * 7 + y) % 192).astype(np.uint8)
            dst.write(strip, window=Window(0, y, side, n))
    tmp.replace(path)


def arm(source: Path, root: Path, every: float, kill_at: float = 0.0) -> dict:
    script = OUT / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(source), str(root), str(every), str(kill_at)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    if not kill_at:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert child.stdout is not None
    line = json.loads(child.stdout.readline())
    child.kill()
    child.wait()
    return {**line, "wall_s_until_kill": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=16000)
    parser.add_argument("--kill-at", type=float, default=0.6)
    parser.add_argument("--every", type=float, default=5.0, help="checkpoint interval (s) of the killed arm")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / f"striped_{args.side}.tif"
    if not source.exists():
        t0 = time.perf_counter()
        build(source, args.side)
        print(f"built {source} ({source.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "side": args.side, "load_avg": round(os.getloadavg()[0], 1)}
    for name, every in (("full", -1.0), ("every_strip", 0.0)):
        root = OUT / f"cache_{name}"
        shutil.rmtree(root, ignore_errors=True)
        result[name] = arm(source, root, every)
        shutil.rmtree(root, ignore_errors=True)
    root = OUT / "cache_killed"
    shutil.rmtree(root, ignore_errors=True)
    result["killed"] = arm(source, root, args.every, args.kill_at)
    result["resumed"] = arm(source, root, -1.0)
    shutil.rmtree(root, ignore_errors=True)
    full = result["full"]["wall_s"]
    result["every_strip_vs_full"] = round(result["every_strip"]["wall_s"] / full, 3)
    result["resumed_vs_full"] = round(result["resumed"]["wall_s"] / full, 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
