"""Benchmark: stream a 100,000 x 100,000 px GeoTIFF through the raster engine in bounded memory.

For each image size (default 10,000 and 100,000 px square; the smaller one is the same-run baseline):

1. generate (once, cached) a 3-band uint8, 512 px tiled, DEFLATE-compressed GeoTIFF with overviews whose
   content is sparse (about 1% of blocks carry drawn structures; the rest are never written, GDAL's
   SPARSE_OK), so it stays small on disk;
2. in a fresh subprocess, stream every patch of tiling ``grid:512`` through ``Scene.read_display`` and
   report windows per second and the process's peak RSS;
3. time random 2048 x 2048 zoom reads decimated to 1024 x 1024 (half of them centred on content).

Run:  .venv/bin/python benchmarks/raster_stream.py [--sizes 10000 100000] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BLOCK = 512
CONTENT_FRACTION = 0.01
OVERVIEWS = (2, 4, 8, 16, 32, 64, 128)


def generate(path: Path, side: int, seed: int = 0) -> list[tuple[int, int]]:
    """Write the sparse test image; return the (col, row) block indexes that carry content."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    blocks_per_side = -(-side // BLOCK)
    n_content = max(4, int(blocks_per_side**2 * CONTENT_FRACTION))
    picks = rng.choice(blocks_per_side**2, size=n_content, replace=False)
    content = sorted((int(i % blocks_per_side), int(i // blocks_per_side)) for i in picks)
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": from_origin(500000.0, 5000000.0, 0.3, 0.3),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate",
        "sparse_ok": True, "bigtiff": "yes", "nodata": 0,
    }
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for col, row in content:
            w = min(BLOCK, side - col * BLOCK)
            h = min(BLOCK, side - row * BLOCK)
            tile = np.full((3, h, w), 40, dtype=np.uint8)
            for _ in range(6):  # a few "buildings": filled rectangles of random colour
                x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
                x1, y1 = x0 + rng.integers(8, w // 2), y0 + rng.integers(8, h // 2)
                tile[:, y0:y1, x0:x1] = rng.integers(60, 255, size=(3, 1, 1))
            dst.write(tile, window=Window(col * BLOCK, row * BLOCK, w, h))
    with rasterio.open(tmp, "r+") as dst:
        dst.build_overviews([f for f in OVERVIEWS if side // f >= 256], Resampling.average)
    tmp.rename(path)
    path.with_suffix(".json").write_text(json.dumps(content))
    return content


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM; unlike ru_maxrss it is not inherited at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: Path, content: list[tuple[int, int]], zooms: int = 20, seed: int = 1) -> dict:
    """Stream the image once and time zoom reads; runs in its own process so peak RSS is its own."""
    from rsrag.tools.raster import open_scene
    from rsrag.tools.region import PixelBox
    from rsrag.tools.tiling import parse_tiling

    rss_start = peak_rss_mib()
    with open_scene(path) as scene:
        patches = 0
        checksum = 0
        start = time.perf_counter()
        for patch in parse_tiling("grid:512").patches(scene.width, scene.height):
            rgb = scene.read_display(patch.box)
            checksum += int(rgb[::64, ::64].sum())
            patches += 1
        stream_s = time.perf_counter() - start

        rng = np.random.default_rng(seed)
        times = []
        for i in range(zooms):
            if i % 2 == 0:  # centred on a block with content
                col, row = content[int(rng.integers(len(content)))]
                cx, cy = col * BLOCK + BLOCK // 2, row * BLOCK + BLOCK // 2
            else:
                cx, cy = (int(v) for v in rng.integers(1024, scene.width - 1024, size=2))
            x0 = int(np.clip(cx - 1024, 0, scene.width - 2048))
            y0 = int(np.clip(cy - 1024, 0, scene.height - 2048))
            t0 = time.perf_counter()
            scene.read_display(PixelBox.from_xywh(x0, y0, 2048, 2048), out_size=(1024, 1024))
            times.append(time.perf_counter() - t0)
    return {
        "side": scene.width,
        "patches": patches,
        "stream_s": stream_s,
        "windows_per_s": patches / stream_s,
        "zoom_median_s": float(np.median(times)),
        "zoom_max_s": float(np.max(times)),
        "peak_rss_mib": peak_rss_mib(),
        "rss_at_start_mib": rss_start,
        "file_mib": path.stat().st_size / 2**20,
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: child process mode
    args = parser.parse_args()

    if args.measure:
        content = [tuple(c) for c in json.loads(args.measure.with_suffix(".json").read_text())]
        print(json.dumps(measure(args.measure, content)))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for side in args.sizes:
        path = args.out / f"sparse_{side}.tif"
        if not path.exists():
            t0 = time.perf_counter()
            generate(path, side)
            print(f"generated {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        proc = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)

    base = results[0]
    print(f"| image | patches | windows/s | peak RSS MiB | RSS vs {base['side']:,} px | zoom 2048->1024 median / max s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['side']:,} px | {r['patches']:,} | {r['windows_per_s']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x | {r['zoom_median_s']:.3f} / {r['zoom_max_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
