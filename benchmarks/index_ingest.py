"""Ingest efficiency: indexing throughput over the encoder's own throughput, in the same run.

Generates (once, cached in ``--out``) a large RGB GeoTIFF mosaic of real imagery (``RGB.byte.tif`` from the
shared data repeated, 512 px tiles, DEFLATE, overviews 2..32). Then, in one process:

1. baseline: every patch of the tiling is read and preprocessed into tensors *before* timing; the encoder's
   ``encode_image_tensors`` is timed over those tensors in batches of ``--batch-size``;
2. indexing: :func:`rsrag.tools.indexing.index_scene` on the same image, tiling, encoder and batch size into
   a fresh store (reads on background threads, encode, commit);
3. the baseline again; steps 2-3 are repeated ``--repeats`` times and the medians are compared, which
   cancels most drift on a shared machine.
4. a second, stricter baseline: ``index_scene`` itself with its patch reader replaced by a lookup of the
   pre-decoded tensors (same threads, same commits, zero decode cost), alternated with the real runs.

Efficiency = indexing patches/s / encoder-only patches/s (goal >= 0.9).

Usage: ``.venv/bin/python benchmarks/index_ingest.py [--encoder rsrag-lit:random] [--side 10000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "geotiff" / "RGB.byte.tif"


def make_mosaic(path: Path, side: int) -> Path:
    """A ``side`` x ``side`` px GeoTIFF tiling RGB.byte.tif's pixels (real texture; cached)."""
    if path.exists():
        return path
    with rasterio.open(SOURCE) as src:
        tile = src.read()
    _, th, tw = tile.shape
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32618",
               "transform": from_origin(100000.0, 3000000.0, 0.5, 0.5), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate"}
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y in range(0, side, 512):
            h = min(512, side - y)
            rows = np.arange(y, y + h) % th
            band = tile[:, rows, :]
            cols = np.arange(side) % tw
            dst.write(band[:, :, cols], window=Window(0, y, side, h))
        dst.build_overviews([2, 4, 8, 16, 32], Resampling.average)
    tmp.rename(path)
    return path


def encoder_only(encoder, batches) -> float:  # type: ignore[no-untyped-def]
    """Patches/s of ``encode_image_tensors`` over pre-decoded batches."""
    n = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for b in batches:
        encoder.encode_image_tensors(b)
    return n / (time.perf_counter() - t0)


def main() -> None:
    from rsrag.tools.encoders.runtime import tune_cpu_runtime

    tune_cpu_runtime()  # the encoder runtime the rsrag command sets, before torch is loaded
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="rsrag-lit:random")
    parser.add_argument("--tiling", default="vit:448")
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--readers", type=int, default=None, help="reader threads (default: index_scene's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    args = parser.parse_args()

    import torch

    import rsrag.tools.indexing as indexing
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.indexing import _read_batch, default_readers, index_scene
    from rsrag.tools.raster import open_scene
    from rsrag.tools.tiling import parse_tiling

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    image = make_mosaic(args.out / f"mosaic_{args.side}.tif", args.side)
    gen_s = time.perf_counter() - t0
    encoder = load_encoder(args.encoder, batch_size=args.batch_size)
    tiling = parse_tiling(args.tiling)
    with open_scene(image) as scene:
        specs = list(tiling.patches(scene.width, scene.height))
        t0 = time.perf_counter()
        decoded = {specs[i].index: _read_batch(scene, encoder, specs[i:i + args.batch_size])
                   for i in range(0, len(specs), args.batch_size)}
        decode_s = time.perf_counter() - t0
    batches = [t for t, _, _ in decoded.values()]

    def predecoded(scene, encoder, batch_specs, *_args):  # type: ignore[no-untyped-def]
        return decoded[batch_specs[0].index]  # (skip_empty, read): the same windows, all holding data

    def run_index(fake_reads: bool) -> tuple[float, float]:
        real = indexing._read_batch
        indexing._read_batch = predecoded if fake_reads else real
        try:
            with tempfile.TemporaryDirectory(prefix="rsrag-ingest-") as store:
                t0 = time.perf_counter()
                report = index_scene(image, encoder, tiling, store, batch_size=args.batch_size, readers=args.readers)
                return report.patches_per_s, time.perf_counter() - t0
        finally:
            indexing._read_batch = real

    encoder.encode_image_tensors(batches[0])  # warm-up
    bases = [encoder_only(encoder, batches)]
    runs, walls, piped = [], [], []
    for _ in range(args.repeats):
        pps, wall_s = run_index(fake_reads=False)
        runs.append(pps)
        walls.append(wall_s)
        bases.append(encoder_only(encoder, batches))
        piped.append(run_index(fake_reads=True)[0])
    base, index_pps, wall = float(np.median(bases)), float(np.median(runs)), float(np.median(walls))
    result = {
        "encoder": encoder.id, "tiling": tiling.id, "image_px": args.side, "patches": len(specs),
        "batch_size": args.batch_size, "readers": args.readers or default_readers(), "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "mosaic_generation_s": round(gen_s, 1), "serial_decode_patches_per_s": round(len(specs) / decode_s, 1),
        "encoder_only_patches_per_s": [round(b, 2) for b in bases],
        "index_patches_per_s": [round(r, 2) for r in runs],
        "index_wall_s_incl_stats_and_compaction": [round(w, 2) for w in walls],
        "efficiency": round(index_pps / base, 3),
        "efficiency_wall": round(len(specs) / wall / base, 3),
        "pipeline_with_predecoded_patches_per_s": [round(p, 2) for p in piped],
        "efficiency_vs_pipeline_with_predecoded": round(index_pps / float(np.median(piped)), 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
