"""Indexing on Ray vs the in-process indexer: same scenes, same encoder, same run.

Measures windows/s of :func:`rsrag.tools.indexing.index_scene` (the baseline: one process with reader
threads) and of :func:`rsrag.tools.ray_indexing.index_on_ray` with 1 and 2 encoder actors on a local Ray
instance, each into a fresh store. The in-process encoder is loaded before its clock starts; for Ray the
figure is given both from the first task submitted (actors already started and their encoder loaded) and
with actor start-up. Overhead per task: (Ray seconds with one actor - in-process seconds) / chunks.

    .venv/bin/python benchmarks/ray_index.py --scenes 4 --size 1024 --tiling grid:128
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _scenes(folder: Path, n: int, size: int) -> list[str]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.rasters import write_raster

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    return [str(write_raster(folder / f"s{i}.tif", rng.integers(0, 255, (3, size, size), dtype=np.uint8))) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--tiling", default="grid:128")
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.indexing import index_scene
    from rsrag.tools.ray_indexing import index_on_ray, start_ray

    work = Path(tempfile.mkdtemp(prefix="rsrag-ray-bench-"))
    sources = _scenes(work / "scenes", args.scenes, args.size)
    encoder = load_encoder(None, batch_size=args.batch_size)
    encoder.encode_images([np.zeros((64, 64, 3), np.uint8)])  # warm up

    t0 = time.perf_counter()
    reports = [index_scene(s, encoder, args.tiling, work / "inproc", chunk_size=args.chunk_size, batch_size=args.batch_size)
               for s in sources]
    base_s = time.perf_counter() - t0
    windows = sum(r.encoded for r in reports)
    chunks = sum(r.chunks_written for r in reports)
    results = {"machine": f"{os.cpu_count()} cores, CPU only", "windows": windows, "chunks": chunks,
               "in_process": {"seconds": base_s, "windows_per_s": windows / base_s}}

    start_ray("local", num_cpus=os.cpu_count())
    try:
        for workers in (1, 2):
            t0 = time.perf_counter()
            out = index_on_ray(sources, store=work / f"ray{workers}", tiling=args.tiling, chunk_size=args.chunk_size,
                               batch_size=args.batch_size, workers=workers)
            total_s = time.perf_counter() - t0
            encode_s = max(r.seconds for r in out)  # from the first task submitted to the last scene finished
            results[f"ray_{workers}"] = {
                "seconds_with_startup": total_s, "seconds": encode_s, "windows_per_s": windows / encode_s,
                "ratio_vs_in_process": (windows / encode_s) / (windows / base_s),
                "overhead_per_task_s": (encode_s - base_s) / chunks if workers == 1 else None,
            }
    finally:
        ray.shutdown()
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
