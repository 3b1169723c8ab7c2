"""Inputs without random access, and remote inputs: conversion cost, index time, memory, remote overhead.

Generates (once, cached in ``--out``) a ``--side`` px RGB mosaic of real imagery (``RGB.byte.tif`` from the
shared data repeated) as a COG (512 px tiles, DEFLATE, overviews), and the same pixels as a PNG and as a
JPEG (quality 90; lossy, so its pixels differ slightly: index time does not depend on pixel values). Then,
each arm in a fresh process (its own peak RSS, VmHWM), with the same encoder and tiling:

1. ``cog``: ``index_scene`` on the local COG (the baseline), run before and after the other arms;
2. ``png`` / ``jpeg``: ``open_scene`` with a fresh scene cache (the conversion, timed) then ``index_scene``;
   the ratio is (conversion + index) / baseline index;
3. the same PNG read in place (no cache): seconds per patch window, and the index time that implies;
4. ``remote``: ``index_scene`` on the COG served by a real HTTP server on 127.0.0.1 (tests/range_server.py,
   a Python ``http.server`` with range support, in its own process), plus zoom reads (1024 px windows and a
   whole-scene overview), against the same reads of the local file; bytes the server sent; the zooms again
   with GDAL's default parallel multi-range reads instead of rsrag's ``GDAL_HTTP_MULTIRANGE=SERIAL``;
5. ``--striped``: striped TIFFs (16-row DEFLATE strips, sparse content: 1% of 512 px blocks carry drawn
   structures, the rest nodata) of each given side converted into the cache: time and peak RSS per size
   (memory must stay flat with size);
6. the same PNG conversion's full-resolution level given GDAL's own internal overviews afterwards (the
   approach not taken), timed against the whole streaming conversion.

Usage: ``.venv/bin/python benchmarks/input_formats.py [--side 10000] [--encoder SPEC] [--striped 10000,30000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "geotiff" / "RGB.byte.tif"
BLOCK = 512


def cpu_s() -> float:
    """CPU seconds of this process, all threads (less sensitive than wall time to other jobs on the machine)."""
    t = os.times()
    return t.user + t.system


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- data -------------------------------------------------------------------------------------------------


def make_images(out: Path, side: int) -> dict[str, Path]:
    """The COG, PNG and JPEG of one mosaic (cached)."""
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    paths = {"cog": out / f"mosaic_{side}.cog.tif", "png": out / f"mosaic_{side}.png", "jpeg": out / f"mosaic_{side}.jpg"}
    if all(p.exists() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    tiled = out / f"mosaic_{side}.tiled.tif"
    if not tiled.exists():
        with rasterio.open(SOURCE) as src:
            tile = src.read()
        _, th, tw = tile.shape
        profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32618",
                   "transform": from_origin(100000.0, 3000000.0, 0.5, 0.5), "tiled": True, "blockxsize": BLOCK,
                   "blockysize": BLOCK, "compress": "deflate", "photometric": "RGB", "bigtiff": "IF_SAFER"}
        tmp = tiled.with_suffix(".partial")
        with rasterio.open(tmp, "w", **profile) as dst:
            cols = np.arange(side) % tw
            for y in range(0, side, BLOCK):
                h = min(BLOCK, side - y)
                dst.write(tile[:, np.arange(y, y + h) % th][:, :, cols], window=Window(0, y, side, h))
        tmp.rename(tiled)
    options = {"cog": {"driver": "COG", "blocksize": BLOCK, "compress": "DEFLATE", "overview_resampling": "average",
                       "bigtiff": "IF_SAFER"},
               "png": {"driver": "PNG"}, "jpeg": {"driver": "JPEG", "quality": 90}}
    for name, path in paths.items():
        if not path.exists():
            t0 = time.perf_counter()
            tmp = path.with_name(path.name + ".partial")
            rasterio.shutil.copy(tiled, tmp, **options[name])
            tmp.rename(path)
            print(f"generated {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def make_striped(out: Path, side: int, seed: int = 0) -> Path:
    """A striped (16-row strips), DEFLATE, sparse-content RGB TIFF of ``side`` px (cached)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path = out / f"striped_{side}.tif"
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_side = -(-side // BLOCK)
    picks = rng.choice(per_side ** 2, size=max(4, int(per_side ** 2 * 0.01)), replace=False)
    blocks: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i in sorted(int(p) for p in picks):
        col, row = i % per_side, i // per_side
        w, h = min(BLOCK, side - col * BLOCK), min(BLOCK, side - row * BLOCK)
        tile = np.full((3, h, w), 40, dtype=np.uint8)
        for _ in range(6):
            x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
            tile[:, y0:y0 + rng.integers(8, h // 2), x0:x0 + rng.integers(8, w // 2)] = rng.integers(60, 255, (3, 1, 1))
        blocks.setdefault(row, []).append((col, tile))
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000.0, 5000000.0, 0.3, 0.3), "tiled": False, "blockysize": 16,
               "compress": "deflate", "bigtiff": "yes", "nodata": 0, "photometric": "RGB"}
    tmp = path.with_name(path.name + ".partial")
    t0 = time.perf_counter()
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(per_side):
            h = min(BLOCK, side - row * BLOCK)
            band = np.zeros((3, h, side), dtype=np.uint8)
            for col, tile in blocks.get(row, []):
                band[:, :, col * BLOCK:col * BLOCK + tile.shape[2]] = tile
            dst.write(band, window=Window(0, row * BLOCK, side, h))
    tmp.rename(path)
    print(f"generated {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


# --- arms (each in its own process) -----------------------------------------------------------------------


def arm_index(args: dict[str, Any]) -> dict[str, Any]:
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.indexing import index_scene
    from rsrag.tools.raster import open_scene
    from rsrag.tools.scene_cache import SceneCache

    if (args["encoder"] or "").startswith("rsrag-tiny-test"):  # the tiny random test encoder (plumbing runs)
        sys.path.insert(0, str(ROOT))
        from tests.tiny_encoder import register_tiny_model_config

        register_tiny_model_config()
    encoder = load_encoder(args["encoder"], batch_size=32)
    cache = SceneCache(args["cache"]) if args.get("cache") else None
    t0, c0 = time.perf_counter(), cpu_s()
    scene = open_scene(args["image"], cache=cache)
    convert_s, convert_cpu = time.perf_counter() - t0, cpu_s() - c0
    t1, c1 = time.perf_counter(), cpu_s()
    report = index_scene(scene, encoder, args["tiling"], args["store"])
    index_s, index_cpu = time.perf_counter() - t1, cpu_s() - c1
    out = {"convert_s": convert_s, "index_s": index_s, "total_s": convert_s + index_s, "convert_cpu_s": convert_cpu,
           "index_cpu_s": index_cpu, "total_cpu_s": convert_cpu + index_cpu, "patches": report.info.n_patches,
           "cached": scene.info.cache is not None, "peak_rss_mib": peak_rss_mib()}
    scene.close()
    return out


def arm_convert(args: dict[str, Any]) -> dict[str, Any]:
    from rsrag.tools.raster import open_scene
    from rsrag.tools.scene_cache import SceneCache

    cache = SceneCache(args["cache"])
    t0, c0 = time.perf_counter(), cpu_s()
    with open_scene(args["image"], cache=cache) as scene:
        seconds, cpu = time.perf_counter() - t0, cpu_s() - c0
        entry = cache.entries()[0]
        return {"convert_s": seconds, "convert_cpu_s": cpu, "peak_rss_mib": peak_rss_mib(), "cache_bytes": entry.bytes,
                "levels": len(entry.levels), "width": scene.width, "source_bytes": Path(args["image"]).stat().st_size}


def arm_windows(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per 448 px patch window read decimated to 224 px, at random places (no cache)."""
    from rsrag.tools.raster import open_scene
    from rsrag.tools.region import PixelBox

    rng = np.random.default_rng(2)
    times = []
    with open_scene(args["image"]) as scene:
        for _ in range(args["n"]):
            x, y = int(rng.integers(0, scene.width - 448)), int(rng.integers(0, scene.height - 448))
            t0 = time.perf_counter()
            scene.read_display(PixelBox.from_xywh(x, y, 448, 448), out_size=(224, 224))
            times.append(time.perf_counter() - t0)
    return {"window_s": statistics.mean(times), "peak_rss_mib": peak_rss_mib()}


def arm_zoom(args: dict[str, Any]) -> dict[str, Any]:
    """Zoom reads: 1024 px windows at full resolution, and the whole scene decimated to 1024 px."""
    from rsrag.tools.raster import open_scene
    from rsrag.tools.region import PixelBox

    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    with open_scene(args["image"]) as scene:
        open_s = time.perf_counter() - t0
        times = []
        for _ in range(args["n"]):
            x, y = int(rng.integers(0, scene.width - 1024)), int(rng.integers(0, scene.height - 1024))
            t1 = time.perf_counter()
            scene.read_display(PixelBox.from_xywh(x, y, 1024, 1024))
            times.append(time.perf_counter() - t1)
        t2 = time.perf_counter()
        scene.read_display(scene.full_box, out_size=scene.full_box.fit_within(1024))
        overview_s = time.perf_counter() - t2
    return {"open_s": open_s, "zoom_median_s": statistics.median(times), "zoom_max_s": max(times),
            "overview_s": overview_s}


def arm_gdal_overviews(args: dict[str, Any]) -> dict[str, Any]:
    """GDAL's internal overviews (average, 2..) built on a copy of a converted full-resolution level."""
    import rasterio
    from rasterio.enums import Resampling

    from rsrag.tools.raster import _bound_gdal_cache

    _bound_gdal_cache()
    work = Path(args["copy"])
    shutil.copy(args["level0"], work)
    t0, c0 = time.perf_counter(), cpu_s()
    with rasterio.open(work, "r+") as ds:
        factors = [2 ** k for k in range(1, 12) if max(ds.width, ds.height) / 2 ** (k - 1) > 512]
        ds.build_overviews(factors, Resampling.average)
    seconds, cpu = time.perf_counter() - t0, cpu_s() - c0
    work.unlink()
    return {"gdal_overviews_s": seconds, "gdal_overviews_cpu_s": cpu, "factors": factors, "peak_rss_mib": peak_rss_mib()}


ARMS = {"index": arm_index, "convert": arm_convert, "windows": arm_windows, "zoom": arm_zoom,
        "gdal_overviews": arm_gdal_overviews}


def run_arm(name: str, env: dict[str, str] | None = None, **args: Any) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--arm", name, "--arm-args", json.dumps(args, default=str)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"arm {name} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {name} {json.dumps({k: v for k, v in args.items() if k in ('image', 'cache')}, default=str)} -> "
          f"{json.dumps(result)}", flush=True)
    return result


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--formats", default="png,jpeg")
    parser.add_argument("--encoder", default=None, help="encoder spec (default: the bundled offline encoder)")
    parser.add_argument("--tiling", default="vit:448")
    parser.add_argument("--striped", default="", help="comma-separated sides of striped TIFFs to convert")
    parser.add_argument("--no-index", action="store_true", help="skip the index arms (conversion and remote zoom only)")
    parser.add_argument("--no-remote", action="store_true")
    parser.add_argument("--in-place-windows", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "input_formats")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--arm-args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(ARMS[args.arm](json.loads(args.arm_args))))
        return

    out: Path = args.out
    work = out / "work"
    results: dict[str, Any] = {"side": args.side, "encoder": args.encoder or "bundled", "tiling": args.tiling,
                               "machine": f"{platform.machine()} {os.cpu_count()} cores", "started": time.ctime()}
    images = make_images(out, args.side)
    formats = [f for f in args.formats.split(",") if f]
    common = {"encoder": args.encoder, "tiling": args.tiling}

    if not args.no_index:
        results["cog_before"] = run_arm("index", image=images["cog"], store=fresh(work / "store"), **common)
        for fmt in formats:
            results[fmt] = run_arm("index", image=images[fmt], cache=fresh(work / f"cache_{fmt}"),
                                   store=fresh(work / "store"), **common)
            results[f"{fmt}_convert_only"] = run_arm("convert", image=images[fmt], cache=fresh(work / f"cache_{fmt}_c"))
        results["cog_after"] = run_arm("index", image=images["cog"], store=fresh(work / "store"), **common)
        base = (results["cog_before"]["index_s"] + results["cog_after"]["index_s"]) / 2
        results["baseline_index_s"] = base
        base_cpu = (results["cog_before"]["index_cpu_s"] + results["cog_after"]["index_cpu_s"]) / 2
        results["baseline_index_cpu_s"] = base_cpu
        for fmt in formats:
            results[f"{fmt}_ratio"] = results[fmt]["total_s"] / base
            results[f"{fmt}_ratio_cpu"] = results[fmt]["total_cpu_s"] / base_cpu
        if args.in_place_windows and "png" in formats:
            w = run_arm("windows", image=images["png"], n=args.in_place_windows)
            results["png_in_place"] = {**w, "implied_index_s": w["window_s"] * results["png"]["patches"]}
    else:
        for fmt in formats:
            results[f"{fmt}_convert_only"] = run_arm("convert", image=images[fmt], cache=fresh(work / f"cache_{fmt}_c"))

    if "png" in formats:
        level0 = next((work / "cache_png_c" / "entries").glob("*/L0.tif"))
        results["gdal_overviews"] = run_arm("gdal_overviews", level0=level0, copy=work / "l0-copy.tif")
        results["gdal_overviews_vs_conversion"] = (results["gdal_overviews"]["gdal_overviews_s"]
                                                   / results["png_convert_only"]["convert_s"])
        results["gdal_overviews_vs_conversion_cpu"] = (results["gdal_overviews"].get("gdal_overviews_cpu_s", 0.0)
                                                       / results["png_convert_only"].get("convert_cpu_s", 1.0))

    if not args.no_remote:
        sys.path.insert(0, str(ROOT))
        from tests.range_server import serve_folder

        with serve_folder(out) as server:
            url = server.url(images["cog"].name)
            results["zoom_local"] = run_arm("zoom", image=images["cog"], n=20)
            server.reset()
            results["zoom_remote"] = run_arm("zoom", image=url, n=20)
            results["zoom_remote"]["bytes_fetched"] = server.stats()["bytes_sent"]
            server.reset()  # GDAL's own default, parallel multi-range reads (rsrag sets SERIAL)
            results["zoom_remote_parallel"] = run_arm("zoom", env={"GDAL_HTTP_MULTIRANGE": "YES"}, image=url, n=20)
            results["zoom_remote_parallel"]["bytes_fetched"] = server.stats()["bytes_sent"]
            if not args.no_index:
                local = run_arm("index", image=images["cog"], store=fresh(work / "store"), **common)
                server.reset()
                remote = run_arm("index", image=url, store=fresh(work / "store"), **common)
                stats = server.stats()
                results["remote_index"] = {"local": local, "remote": remote, "ratio": remote["index_s"] / local["index_s"],
                                           "ratio_cpu": remote["index_cpu_s"] / local["index_cpu_s"],
                                           "bytes_fetched": stats["bytes_sent"], "requests": stats["requests"],
                                           "file_bytes": images["cog"].stat().st_size}

    for side in [int(s) for s in args.striped.split(",") if s]:
        source = make_striped(out, side)
        results[f"striped_{side}"] = run_arm("convert", image=source, cache=fresh(work / f"cache_striped_{side}"))
        shutil.rmtree(work / f"cache_striped_{side}", ignore_errors=True)  # large: do not keep it

    name = f"results-{args.side}{'-striped' if args.striped else ''}{'-' + args.tag if args.tag else ''}.json"
    (out / name).write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
