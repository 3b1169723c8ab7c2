"""Benchmark: the first answer on a fresh UHR scene from the pyramid index, against a full flat index.

Two kinds of scene, built once and cached under ``benchmarks/out/pyramid/``:

* ``mosaic``: ``--sizes`` px square mosaics of 150 px AID chips from the encoder's validation split (never
  trained on): four land-cover quadrants (as the analyst benchmark's scenes) and ``--targets`` target classes
  planted at ``--sites`` sites each (alternately one chip and a 2 x 2 block), sites at least a cell apart.
  Tiled DEFLATE GeoTIFFs with overviews, written strip by strip (bounded memory at any size).
* ``cog``: a ``--side`` px (default 100,000) sparse GeoTIFF with overviews as the raster benchmark builds it
  (about 1% of 512 px blocks carry drawn structures, the rest is nodata), with real content planted at known
  places: for each site a 3 x 3 block of land-cover chips with the target chip (or a 2 x 2 target block) in it.

Each measurement runs in a fresh process (so its peak RSS, VmHWM, is its own), loads the encoder first
(not timed; the same in every mode), then times what a user's first question costs on a fresh store:

* ``pyramid``: the cascade the agent runs (:func:`rsrag.tools.retrieval.cascade`, fast path, ``slow="never"``)
  over the scene's :class:`~rsrag.tools.pyramid.PyramidIndex`: it encodes level 0 and the windows it visits.
  Then every target class in turn (later queries reuse what the first encoded). With ``--fill`` the finest
  level is then completed (``Pyramid.fill``) and every query re-run: that is the *full index* (a flat search
  of the finest level, the limit the pyramid converges to), the recall reference.
* ``flat``: ``index_scene`` with a flat tiling (``--flat``, default ``vit:448``, today's default before the
  pyramid) and the same cascade: the first answer waits for the whole index.

Metrics per query: time, windows encoded; *site recall*: planted sites covered by at least half by the union
box of a confident site (confidence >= 0.5); *needle recall@k*: planted sites among the top-k places (all hits
grouped into sites, ranked by confidence; a place hits a planted site when their boxes overlap by at least
half of the smaller) / min(k, planted sites).

``sweep`` replays first queries on a scene whose whole pyramid is encoded (``rsrag index`` into ``--store``)
for several beams, statistics samples, level-0 sizes and ways of choosing children (``--children``) without
encoding anything (how the defaults were chosen). The pyramid arm's beam, expand, sample and tiling default
to the product's (``agent/settings.py``).

Run:  .venv/bin/python benchmarks/pyramid.py mosaic --sizes 10000 20000 [--fill] [--flat vit:448]
      .venv/bin/python benchmarks/pyramid.py cog --side 100000
      .venv/bin/python benchmarks/pyramid.py sweep --tiling pyramid:top=128 --scenes-stores SCENE.tif STORE ...
      .venv/bin/python benchmarks/pyramid.py reads --scene SCENE.tif   # read + preprocess ms per window, per level
      .venv/bin/python benchmarks/pyramid.py user --user-scenes SCENE.tif ...  # `rsrag ask`, fresh homes, both arms

``user`` runs the product's command (``rsrag ask --json``) on fresh homes for both arms: the first answer as a
user meets it (process start, encoder load, refinement and presence verdicts included), see :func:`user`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "pyramid"
DATA = ROOT.parent / "shared" / "data" / "aid-rsicd"
CELL = 150
TARGETS = ["StorageTanks", "Airport", "Stadium", "BaseballField", "Playground", "Port", "Bridge", "Church",
           "Pond", "Parking", "RailwayStation", "Viaduct"]
BACKGROUNDS = ["Farmland", "Forest", "Meadow", "DenseResidential", "MediumResidential", "SparseResidential",
               "BareLand", "Desert", "Mountain", "Industrial", "Commercial"]
OVERVIEWS = (2, 4, 8, 16, 32, 64, 128)
EXCLUSIVE = ({"Bridge", "Viaduct"}, {"Playground", "Stadium"})
"""Classes too alike at chip scale to be asked for in one scene (a "viaduct" found on a bridge is no miss)."""


def _targets(rng: random.Random, n: int) -> list[str]:
    for _ in range(1000):
        picked = rng.sample(TARGETS, n)
        if all(len(group & set(picked)) <= 1 for group in EXCLUSIVE):
            return picked
    raise RuntimeError("no compatible target set")


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- scenes ---------------------------------------------------------------------------------------------


def _chip_arrays(labels: set[str]) -> dict[str, list[np.ndarray]]:
    """Decoded 150 px validation-split chips of the given classes."""
    from PIL import Image

    from rsrag.tools.captioned import read_chips, select_split

    out: dict[str, list[np.ndarray]] = {}
    for chip in select_split(read_chips(DATA), "val"):
        if chip.label in labels:
            with Image.open(chip.image) as im:
                out.setdefault(chip.label, []).append(np.asarray(im.convert("RGB").resize((CELL, CELL))))
    return out


def _place(rng: random.Random, cells: int, n: int, taken: set[tuple[int, int]], size: int) -> tuple[int, int]:
    for _ in range(100_000):
        r, c = rng.randrange(1, cells - size - 1), rng.randrange(1, cells - size - 1)
        block = {(r + dr, c + dc) for dr in range(-1, size + 1) for dc in range(-1, size + 1)}
        if not block & taken:
            taken.update(block)
            return r, c
    raise RuntimeError("no room for another site")


def build_mosaic(path: Path, side: int, seed: int, n_targets: int, n_sites: int) -> dict[str, Any]:
    """Write a quadrant mosaic with planted multi-site targets (strip by strip); return its truth."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = random.Random(seed)
    backgrounds = rng.sample(BACKGROUNDS, 4)
    targets = _targets(rng, n_targets)
    chips = _chip_arrays(set(backgrounds) | set(targets))
    cells = side // CELL
    size_px = cells * CELL
    taken: set[tuple[int, int]] = set()
    planted: dict[tuple[int, int], np.ndarray] = {}
    truth: dict[str, list[list[int]]] = {}
    for t in targets:
        pool = list(chips[t])
        rng.shuffle(pool)
        for i in range(n_sites):
            size = 1 if i % 2 == 0 else 2
            r, c = _place(rng, cells, n_sites, taken, size)
            for dr in range(size):
                for dc in range(size):
                    planted[(r + dr, c + dc)] = pool[(i * 4 + dr * 2 + dc) % len(pool)]
            truth.setdefault(t, []).append([c * CELL, r * CELL, (c + size) * CELL, (r + size) * CELL])
    profile = {"driver": "GTiff", "width": size_px, "height": size_px, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500000.0, 5000000.0, 0.5, 0.5), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "photometric": "RGB", "bigtiff": "yes"}
    tmp = path.with_suffix(".partial.tif")
    half = cells // 2
    with rasterio.open(tmp, "w", **profile) as dst:
        for r in range(cells):
            strip = np.empty((CELL, size_px, 3), np.uint8)
            for c in range(cells):
                chip = planted.get((r, c))
                if chip is None:
                    back = chips[backgrounds[(r >= half) * 2 + (c >= half)]]
                    chip = np.rot90(back[rng.randrange(len(back))], rng.randrange(4))
                    if rng.random() < 0.5:
                        chip = chip[:, ::-1]
                strip[:, c * CELL:(c + 1) * CELL] = chip
            dst.write(strip.transpose(2, 0, 1), window=Window(0, r * CELL, size_px, CELL))
    with rasterio.open(tmp, "r+") as dst:
        dst.build_overviews([f for f in OVERVIEWS if size_px // f >= 256], Resampling.average)
    tmp.rename(path)
    info = {"side": size_px, "seed": seed, "backgrounds": backgrounds, "targets": truth, "kind": "mosaic"}
    path.with_suffix(".truth.json").write_text(json.dumps(info, indent=1))
    return info


def build_cog(path: Path, side: int, seed: int, n_targets: int, n_sites: int) -> dict[str, Any]:
    """The raster benchmark's sparse image with real chips planted at known places; return its truth."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    block = 512
    per_side = -(-side // block)
    n_content = max(4, int(per_side ** 2 * 0.01))
    picks = nrng.choice(per_side ** 2, size=n_content, replace=False)
    targets = _targets(rng, n_targets)
    backgrounds = rng.sample(BACKGROUNDS, 4)
    chips = _chip_arrays(set(targets) | set(backgrounds))
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500000.0, 5000000.0, 0.3, 0.3), "tiled": True,
               "blockxsize": block, "blockysize": block, "compress": "deflate", "sparse_ok": True,
               "bigtiff": "yes", "nodata": 0}
    tmp = path.with_suffix(".partial.tif")
    truth: dict[str, list[list[int]]] = {}
    with rasterio.open(tmp, "w", **profile) as dst:
        for i in picks:  # the raster benchmark's content: blocks of drawn "buildings"
            col, row = int(i % per_side), int(i // per_side)
            w, h = min(block, side - col * block), min(block, side - row * block)
            tile = np.full((3, h, w), 40, dtype=np.uint8)
            for _ in range(6):
                x0, y0 = nrng.integers(0, w - 8), nrng.integers(0, h - 8)
                x1, y1 = x0 + nrng.integers(8, w // 2), y0 + nrng.integers(8, h // 2)
                tile[:, y0:y1, x0:x1] = nrng.integers(60, 255, size=(3, 1, 1))
            dst.write(tile, window=Window(col * block, row * block, w, h))
        for t in targets:  # real content: a 3 x 3 (or 4 x 4) block of land-cover chips around each target site
            for s in range(n_sites):
                size = 1 if s % 2 == 0 else 2
                n = size + 2
                x0 = rng.randrange(0, side - n * CELL) // CELL * CELL
                y0 = rng.randrange(0, side - n * CELL) // CELL * CELL
                back = chips[rng.choice(backgrounds)]
                patch = np.empty((n * CELL, n * CELL, 3), np.uint8)
                for r in range(n):
                    for c in range(n):
                        patch[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = back[rng.randrange(len(back))]
                pool = chips[t]
                for dr in range(size):
                    for dc in range(size):
                        patch[(1 + dr) * CELL:(2 + dr) * CELL, (1 + dc) * CELL:(2 + dc) * CELL] = pool[rng.randrange(len(pool))]
                patch = np.maximum(patch, 1)  # 0 is nodata
                dst.write(patch.transpose(2, 0, 1), window=Window(x0, y0, n * CELL, n * CELL))
                truth.setdefault(t, []).append([x0 + CELL, y0 + CELL, x0 + (1 + size) * CELL, y0 + (1 + size) * CELL])
    with rasterio.open(tmp, "r+") as dst:
        dst.build_overviews([f for f in OVERVIEWS if side // f >= 256], Resampling.average)
    tmp.rename(path)
    info = {"side": side, "seed": seed, "backgrounds": backgrounds, "targets": truth, "kind": "cog"}
    path.with_suffix(".truth.json").write_text(json.dumps(info, indent=1))
    return info


# --- measuring ------------------------------------------------------------------------------------------


def _overlap(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def evaluate(result: Any, truth: list[list[int]], threshold: float) -> dict[str, Any]:
    """Site recall and needle recall@1/@5 of one query's result against the planted sites."""
    from rsrag.tools.sites import group_sites

    confident = [s.region.box.as_tuple() for s in result.sites]
    covered = sum(1 for t in truth if any(_area_in(t, s) >= 0.5 for s in confident))
    ranked = [s.region.box.as_tuple() for s in group_sites(result.hits)]
    out: dict[str, Any] = {"site_recall": covered / len(truth), "sites": len(confident),
                           "confident_hits": len([h for h in result.hits if h.confidence >= threshold])}
    for name, pick in (("one_chip", lambda t: t[2] - t[0] <= CELL), ("block", lambda t: t[2] - t[0] > CELL)):
        group = [t for t in truth if pick(t)]
        if group:  # site recall by site size: single 150 px chips, and 2 x 2 blocks
            out[f"site_recall_{name}"] = sum(1 for t in group if any(_area_in(t, s) >= 0.5 for s in confident)) / len(group)
            out[f"ranked5_{name}"] = sum(1 for t in group if any(_overlap(s, t) >= 0.5 for s in ranked[:5])) / len(group)
    for k in (1, 5):
        hit = {i for i, t in enumerate(truth) for s in ranked[:k] if _overlap(s, t) >= 0.5}
        out[f"r@{k}"] = len(hit) / min(k, len(truth))
    return out


def _area_in(truth: list[int], box: tuple[int, ...]) -> float:
    """Share of the planted site's area inside ``box``."""
    w = min(truth[2], box[2]) - max(truth[0], box[0])
    h = min(truth[3], box[3]) - max(truth[1], box[1])
    return max(0, w) * max(0, h) / ((truth[2] - truth[0]) * (truth[3] - truth[1]))


def _torch_op_transform(enc: Any) -> Any:
    """The bundled encoder's preprocessing as it was before the runtime was tuned: the same values, computed
    with torch element-wise ops (on the reader threads, where they start a second team of intra-op threads)."""
    import torch
    from PIL import Image

    from rsrag.tools.encoders.lit import DEFAULT_HEADS, read_heads

    cfg = read_heads(DEFAULT_HEADS)[0]
    size = cfg.size
    mean_t = torch.tensor(cfg.tower.mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(cfg.tower.std, dtype=torch.float32).view(3, 1, 1)

    def transform(image: Any) -> Any:
        resized = image.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
        x = torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255)
        return x.sub_(mean_t).div_(std_t)

    return transform


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this (fresh) process: ``args.mode`` is ``pyramid`` or ``flat``."""
    from rsrag.tools.encoders import runtime

    # the runtime arms first: libgomp reads its wait policy when torch is loaded (runtime module docstring)
    if args.runtime in ("before", "nothp"):  # the encoder runtime before it was tuned (the same-run baseline)
        runtime.keep_system_allocator()
    elif args.runtime == "spin":  # the baseline before idle OpenMP threads were made to sleep
        runtime.keep_spinning_threads()
    elif args.runtime == "blas":  # the baseline before numpy's BLAS was put on one thread
        runtime.keep_blas_threads()
    runtime.tune_cpu_runtime()  # what load_encoder does for users, here before this script imports torch
    import torch

    from rsrag.tools.captioned import class_phrase
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.fastpath import embed_phrases
    from rsrag.tools.indexing import index_scene
    from rsrag.tools.pyramid import Pyramid, PyramidIndex
    from rsrag.tools.raster import open_scene
    from rsrag.tools.retrieval import cascade
    from rsrag.tools.store import PatchStore, open_store

    if args.runtime == "heap":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from encoder_runtime import heap_buffers

        heap_buffers()
    if args.trunk == "unprepared":  # the baseline before the trunk was prepared (batch norms folded, channels-last)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from encoder_runtime import unprepared_trunk

        unprepared_trunk()
    if args.trunk == "dynpad":  # the baseline before stride-2 convolutions padded in place
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from encoder_runtime import dynamic_padding

        dynamic_padding()
    if args.trunk == "timm":  # the baseline before the trunk was built without timm (its import and build paid)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from encoder_runtime import timm_build

        timm_build()
    if args.store_import == "eager":  # the baseline before the store deferred lancedb's REST-client validators
        from rsrag.tools.store import _lancedb

        _lancedb._deferred = lambda original: original  # every validator built during the import, as before
    if args.encode_empty:  # the baseline before windows without data were skipped: every read counts as data
        from rsrag.tools.raster import Scene

        plain = Scene.read_display_valid

        def all_valid(self: Any, box: Any, out_size: Any = None) -> tuple[np.ndarray, np.ndarray]:
            rgb, valid = plain(self, box, out_size)
            return rgb, np.ones_like(valid)

        Scene.read_display_valid = all_valid  # type: ignore[method-assign]
    torch.set_num_threads(args.threads)
    scene_path = Path(args.scene)
    truth = json.loads(scene_path.with_suffix(".truth.json").read_text())
    store_dir = Path(args.store)
    shutil.rmtree(store_dir, ignore_errors=True)
    t_load = time.perf_counter()
    enc = load_encoder(args.encoder, batch_size=args.batch, precision=args.precision)
    if args.runtime == "before":
        enc._transform = _torch_op_transform(enc)  # type: ignore[attr-defined]
    embed_phrases(enc, ["warm-up"])  # both modes start with a loaded, warm encoder
    # the encoder alone on pre-decoded tensors, just before the run: the machine's speed at that moment
    probe = torch.stack([enc.preprocess(np.full((enc.image_size, enc.image_size, 3), v, np.uint8))
                         for v in range(0, 256, 8)])  # 32 windows in forward passes of the run's batch: its peak RSS is theirs
    enc.encode_image_tensors(probe[:8])  # builds the image trunk
    load_s = time.perf_counter() - t_load
    tp = time.perf_counter()
    enc.encode_image_tensors(probe)
    encoder_rate = len(probe) / (time.perf_counter() - tp)
    counted = {"n": 0, "forward_s": 0.0, "calls": 0}
    original = enc.encode_image_tensors

    def counting(batch: Any) -> np.ndarray:
        counted["n"] += int(batch.shape[0])
        counted["calls"] += 1
        tf = time.perf_counter()
        try:
            return original(batch)
        finally:
            counted["forward_s"] += time.perf_counter() - tf

    enc.encode_image_tensors = counting  # type: ignore[method-assign]
    rss_loaded = peak_rss_mib()
    patches = PatchStore(open_store(store_dir))
    out: dict[str, Any] = {"mode": args.mode, "runtime": args.runtime, "runtime_env": runtime.tuned(), "batch": args.batch,
                           "precision": enc.precision,
                           "encode_empty": args.encode_empty, "trunk": args.trunk, "store_import": args.store_import, "readers": args.readers, "scene": scene_path.name, "side": truth["side"], "queries": [],
                           "encoder": enc.id, "load_s": load_s, "rss_loaded_mib": rss_loaded, "encoder_alone_per_s": encoder_rate}
    with open_scene(scene_path) as scene:
        t0 = time.perf_counter()
        cpu_start = resource.getrusage(resource.RUSAGE_SELF)
        if args.mode == "flat":
            report = index_scene(scene, enc, args.flat, patches, batch_size=args.batch, readers=args.readers)
            index: Any = report.info
            out.update(index_s=time.perf_counter() - t0, windows=report.info.n_patches, tiling=args.flat,
                       index_forward_s=counted["forward_s"], index_forward_calls=counted["calls"])
        else:
            pyr = Pyramid(scene, enc, args.tiling, patches, sample=args.sample, batch_size=args.batch, readers=args.readers)
            index = PyramidIndex(pyr, beam=args.beam, expand=args.expand)
            out.update(tiling=pyr.id, levels=[(lv.level, lv.window, lv.count) for lv in pyr.levels],
                       windows=sum(lv.count for lv in pyr.levels), finest_windows=pyr.finest.count)

        def run(tag: str) -> None:
            for label, sites in truth["targets"].items():
                before, forward_before, calls_before = counted["n"], counted["forward_s"], counted["calls"]
                tq = time.perf_counter()
                result = cascade(index, enc, phrases=[class_phrase(label)], store=patches, kb=None, top_k=5,
                                 threshold=args.threshold, slow="never")
                q = {"run": tag, "class": label, "s": time.perf_counter() - tq, "encoded": counted["n"] - before,
                     "forward_s": counted["forward_s"] - forward_before, "forward_calls": counted["calls"] - calls_before,
                     "since_start_s": time.perf_counter() - t0, **evaluate(result, sites, args.threshold)}
                ru = resource.getrusage(resource.RUSAGE_SELF)  # CPU seconds since the start: less sensitive to load
                q.update(cpu_user_s=ru.ru_utime - cpu_start.ru_utime, cpu_sys_s=ru.ru_stime - cpu_start.ru_stime)
                extra = result.hits[0].extra if result.hits else {}
                q["searched_share"] = extra.get("searched_share", 1.0)
                out["queries"].append(q)
                print(json.dumps(q), file=sys.stderr, flush=True)

        run("first")
        out["first_answer_s"] = out["queries"][0]["since_start_s"]
        out["first_encoded"] = out["queries"][0]["encoded"] if args.mode == "pyramid" else counted["n"]
        out["all_queries_s"] = time.perf_counter() - t0
        out["encoded_after_queries"] = counted["n"]
        out["rss_after_queries_mib"] = peak_rss_mib()
        if args.mode == "pyramid" and args.fill:
            tf = time.perf_counter()
            pyr.fill(pyr.n_levels - 1)
            out["fill_s"] = time.perf_counter() - tf
            out["encoded_total"] = counted["n"]
            run("full")
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def sweep(args: argparse.Namespace) -> None:
    """Replay descents on scenes whose pyramids are fully encoded (``--scenes-stores SCENE STORE ...``), for
    several beams, level-0 sizes and rankings, without encoding: each level's candidates are what a fresh
    descent would have encoded (the visited children plus the statistics sample, scored with the sample's
    statistics), so recall and windows encoded are exactly those of a first query on a fresh store. Prints
    one line per setting: the mean over every planted class of every scene, and its ratio to a flat search
    of the complete finest level (the full index)."""
    from rsrag.tools.captioned import class_phrase
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.encoders.hubness import as_queries
    from rsrag.tools.fastpath import embed_phrases
    from rsrag.tools.hit import Hit
    from rsrag.tools.pyramid import PyramidTiling, select_regions
    from rsrag.tools.raster import open_scene
    from rsrag.tools.region import Region
    from rsrag.tools.retrieval import Calibration
    from rsrag.tools.sites import group_sites
    from rsrag.tools.store import PatchStore, SceneStats, index_key, open_store
    from rsrag.tools.tiling import parse_tiling

    enc = load_encoder(args.encoder)
    cal = Calibration()
    spec = parse_tiling(args.tiling)
    assert isinstance(spec, PyramidTiling)
    pairs = list(zip(args.scenes_stores[::2], args.scenes_stores[1::2]))
    table: dict[tuple[Any, ...], list[tuple[dict[str, Any], float, float]]] = {}
    full_all: list[dict[str, Any]] = []
    metrics = ("site_recall", "r@1", "r@5", "site_recall_one_chip", "site_recall_block", "ranked5_one_chip", "ranked5_block")

    class _R:  # what evaluate() reads from a result
        def __init__(self, hs: list[Hit], threshold: float) -> None:
            self.hits = [h for h in hs if h.confidence >= threshold] + [h for h in hs if h.confidence < threshold][:5]
            self.sites = group_sites([h for h in hs if h.confidence >= threshold])

    for scene_name, store_name in pairs:
        scene_path = Path(scene_name)
        truth = json.loads(scene_path.with_suffix(".truth.json").read_text())
        patches = PatchStore(open_store(Path(store_name)))
        with open_scene(scene_path) as scene:
            levels = spec.resolve(enc.image_size).levels(scene.width, scene.height)
            fp = scene.fingerprint
        vectors: list[np.ndarray] = []
        for lv in levels:
            info = patches.info(index_key(fp, lv.tiling_id, enc.id))
            assert info is not None and info.complete, f"level {lv.level} of {scene_name} is not complete in {store_name}"
            tab = patches.store.open_table(patches.patch_table(info).schema)
            arr = np.zeros((lv.count, info.dim), np.float32)
            for batch in tab.scan(where={"index_key": info.key}, fields=["patch", "vector"]):
                arr[np.asarray(batch["patch"])] = np.asarray(batch["vector"]).reshape(-1, info.dim)
            vectors.append(arr)

        def stats(level: int, members: np.ndarray) -> SceneStats:
            v = vectors[level][members].astype(np.float64)
            mean = v.mean(axis=0)
            return SceneStats(n=len(v), mean=mean, cov=(v.T @ v) / len(v) - np.outer(mean, mean))

        def hits(level: int, members: np.ndarray, q: np.ndarray, st: SceneStats) -> list[Hit]:
            scores = vectors[level][members] @ q
            conf = cal.confidence(st.zscores(q, scores))
            order = np.argsort(-scores)
            lv = levels[level]
            return [Hit(region=Region(scene=fp, box=lv.box(int(members[i])), scale=lv.scale), score=float(scores[i]),
                        confidence=float(conf[i]), path="fast", query="q", patch=int(members[i])) for i in order]

        finest = len(levels) - 1
        everything = np.arange(levels[finest].count)
        exact = [stats(lv.level, np.arange(lv.count)) for lv in levels]
        for label, sites in truth["targets"].items():
            q = as_queries(embed_phrases(enc, [class_phrase(label)]), vectors[0].shape[1])[0]  # as search_index scores
            full_all.append(evaluate(_R(hits(finest, everything, q, exact[finest]), args.threshold), sites, args.threshold))
            for start, beam, n_sample, rank in [(a, b, c, r) for a in range(len(levels)) for b in args.beams
                                                for c in args.samples for r in args.ranks]:
                encoded = levels[start].count
                members = np.arange(levels[start].count)
                st = exact[start]
                for level in range(start, len(levels)):
                    ranked = hits(level, members, q, st)
                    if level == finest:
                        break
                    parents = select_regions(levels[level], ranked, beam=beam, expand=max(args.expand, beam),
                                             threshold=args.threshold, contrast=rank == "contrast")
                    nxt = levels[level + 1]
                    sample = np.asarray(nxt.sample(n_sample))
                    tiled = args.children == "tiled-all" or (args.children == "tiled" and level + 1 < finest)
                    kids = sorted({i for h in parents for i in nxt.inside(h.region.box, tiled=tiled)})
                    members = np.unique(np.concatenate([sample, np.asarray(kids, dtype=int)]))
                    encoded += len(members)
                    st = exact[level + 1] if args.exact_stats else stats(level + 1, sample)
                key = (rank, levels[start].window, beam, n_sample)
                table.setdefault(key, []).append((evaluate(_R(ranked, args.threshold), sites, args.threshold), encoded,
                                                  encoded / levels[finest].count))
    ref = {k: float(np.mean([v[k] for v in full_all if k in v])) for k in metrics}
    print(json.dumps({"setting": "full finest level", "queries": len(full_all), **ref}))
    for (rank, window, beam, n_sample), rows in sorted(table.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2], kv[0][3])):
        got = {k: float(np.mean([r[0][k] for r in rows if k in r[0]])) for k in metrics}
        print(json.dumps({"rank": rank, "top_level_window": window, "beam": beam, "sample": n_sample, "queries": len(rows),
                          "encoded_mean": round(float(np.mean([r[1] for r in rows])), 1),
                          "share_of_finest": round(float(np.mean([r[2] for r in rows])), 4),
                          **{k: round(v, 3) for k, v in got.items()},
                          **{f"{k}_vs_full": round(got[k] / ref[k], 3) if ref[k] else None for k in got}}))


def reads(args: argparse.Namespace) -> None:
    """Milliseconds per window of reading and preprocessing (what the indexer's reader thread does per window)
    at every pyramid level and for the flat tiling, 40 neighbouring windows from the middle of each, rounds
    alternating; one thread, no encoder running."""
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.indexing import _read_size
    from rsrag.tools.pyramid import PyramidTiling
    from rsrag.tools.raster import open_scene
    from rsrag.tools.tiling import parse_tiling

    enc = load_encoder(args.encoder)
    with open_scene(Path(args.scene)) as sc:
        spec = PyramidTiling(enc.image_size)
        levels = spec.levels(sc.width, sc.height)
        flat = list(parse_tiling(args.flat).patches(sc.width, sc.height))
        arms = {f"flat {args.flat}": lambda r: flat[len(flat) // 2 + 40 * r:len(flat) // 2 + 40 * (r + 1)]}
        for lv in levels:
            arms[f"L{lv.level} {lv.window} px"] = lambda r, lv=lv: [
                lv.spec(i, enc.image_size) for i in range(min(lv.count - 40, lv.count // 2 + 40 * r) if lv.count > 40 else 0,
                                                          min(lv.count, lv.count // 2 + 40 * (r + 1)) if lv.count > 40 else lv.count)]
        sc.read_display(flat[0].box, out_size=(enc.image_size, enc.image_size))
        times: dict[str, list[float]] = {k: [] for k in arms}
        for r in range(args.rounds):
            for name, pick in arms.items():
                specs = pick(r)
                t0 = time.perf_counter()
                for s in specs:
                    enc.preprocess(sc.read_display(s.box, out_size=_read_size(s, enc.image_size)))
                times[name].append(1000 * (time.perf_counter() - t0) / len(specs))
        # what the pyramid does for its coarse levels instead: one decimated read of the scene, then crops
        from rsrag.tools.pyramid import Pyramid
        from rsrag.tools.store import PatchStore, open_store

        cropped: dict[str, dict[str, float]] = {}
        with __import__("tempfile").TemporaryDirectory() as tmp:
            pyr = Pyramid(sc, enc, spec, PatchStore(open_store(tmp)))
            for lv in levels:
                read = pyr.reader(lv.level)
                if read is None:
                    continue
                t0 = time.perf_counter()
                read(lv.spec(0, enc.image_size))  # the whole level's decimated image, once
                once = time.perf_counter() - t0
                specs = [lv.spec(i, enc.image_size) for i in range(min(lv.count, 40))]
                t0 = time.perf_counter()
                for s in specs:
                    enc.preprocess(read(s)[0])
                cropped[f"L{lv.level} {lv.window} px"] = {
                    "whole_level_read_ms": round(1000 * once, 1),
                    "crop_ms_per_window": round(1000 * (time.perf_counter() - t0) / len(specs), 1),
                    "amortised_ms_per_window": round(1000 * once / lv.count + 1000 * (time.perf_counter() - t0) / len(specs), 1)}
    print(json.dumps({"scene": Path(args.scene).name, "load_avg": round(os.getloadavg()[0], 1),
                      "ms_per_window_median": {k: round(float(np.median(v)), 1) for k, v in times.items()},
                      "cropped_from_one_decimated_read": cropped}, indent=1))


def _plural(phrase: str) -> str:
    """The plural an analyst would ask with ("ponds", "churches", "storage tanks" stays)."""
    if phrase.endswith("s"):
        return phrase
    if phrase.endswith(("ch", "sh", "x")):
        return phrase + "es"
    if phrase.endswith("y") and phrase[-2:-1] not in "aeiou":
        return phrase[:-1] + "ies"
    return phrase + "s"


def _ask(scene: Path, question: str, home: Path, extra: list[str], precision: str) -> dict[str, Any]:
    """One ``rsrag ask --json`` in a fresh process, timed from its start: what the user waits for."""
    cmd = [str(ROOT / ".venv" / "bin" / "rsrag"), "ask", str(scene), question, "--json", *extra]
    timer = ["/usr/bin/time", "-f", "maxrss_kib=%M"] if Path("/usr/bin/time").exists() else []  # the process's peak RSS
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RSRAG_HOME": str(home), "RSRAG_ENCODER__PRECISION": precision}
    t0 = time.perf_counter()
    proc = subprocess.run([*timer, *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"rsrag ask failed ({scene.name}, {question!r}): {proc.stderr.strip().splitlines()[-1:]}")
    peak = [int(line.split("=")[1]) / 1024 for line in proc.stderr.splitlines() if line.startswith("maxrss_kib=")]
    return {"wall_s": wall, "answer": json.loads(proc.stdout), "maxrss_mib": peak[-1] if peak else None}


def user(args: argparse.Namespace) -> None:
    """``rsrag ask`` as a user runs it on a fresh scene, each arm in its own fresh ``RSRAG_HOME``: ``pyramid``
    (the default) and ``flat`` (``--tiling`` ``--flat``, which first builds the whole flat index). Every target
    class of the scene is asked in turn ("where are the <class>s?"), each question its own process, so the first
    question pays the process start, the encoder load and the index work; later ones reuse the store. Arms take
    turns, the first arm alternating between scenes. Per question: wall time from the command's start, finding,
    and, over the sites the answer cites as found, *site recall* (planted sites covered by at least half by a
    cited site) and *precision* (cited sites that cover half of a planted site of the class). ``--precision`` is
    the encoder's (``RSRAG_ENCODER__PRECISION``); records go to ``user/<precision>/``."""
    from rsrag.tools.captioned import class_phrase

    rows: list[dict[str, Any]] = []
    for n, scene_name in enumerate(args.user_scenes):
        scene = Path(scene_name)
        truth = json.loads(scene.with_suffix(".truth.json").read_text())
        arms = ["pyramid", "flat"] if n % 2 == 0 else ["flat", "pyramid"]
        for arm in arms:
            home = OUT / "user" / args.precision / f"{scene.stem}_{arm}"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            extra = ["--tiling", args.flat] if arm == "flat" else []
            for i, (label, sites) in enumerate(truth["targets"].items()):
                phrase = _plural(class_phrase(label))
                asked = _ask(scene, f"where are the {phrase}?", home, extra, args.precision)
                answer = asked["answer"]
                finding = (answer.get("findings") or {}).get(phrase, answer.get("finding"))
                cited = set(answer.get("cited") or [])
                boxes = [e["bbox"] for e in answer.get("evidence", []) if e["id"] in cited
                         and e.get("path") in ("fast", "slow") and e.get("query") == phrase] if finding == "found" else []
                covered = sum(1 for t in sites if any(_area_in(t, b) >= 0.5 for b in boxes))
                on_site = sum(1 for b in boxes if any(_area_in(t, b) >= 0.5 for t in sites))
                row = {"scene": scene.name, "arm": arm, "class": label, "question": i, "wall_s": round(asked["wall_s"], 2),
                       "finding": finding, "cited": len(boxes), "covered": covered, "sites": len(sites),
                       "on_site": on_site, "maxrss_mib": asked["maxrss_mib"] and round(asked["maxrss_mib"])}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    summary: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "load_avg": os.getloadavg()[0],
                               "precision": args.precision}
    for arm in ("pyramid", "flat"):
        mine = [r for r in rows if r["arm"] == arm]
        firsts = [r["wall_s"] for r in mine if r["question"] == 0]
        summary[arm] = {
            "first_answer_s": firsts, "all_questions_s": round(sum(r["wall_s"] for r in mine), 1),
            "site_recall": round(sum(r["covered"] for r in mine) / max(1, sum(r["sites"] for r in mine)), 3),
            "precision": round(sum(r["on_site"] for r in mine) / max(1, sum(r["cited"] for r in mine)), 3),
            "found": round(sum(r["finding"] == "found" for r in mine) / max(1, len(mine)), 3),
            "sites_covered": f"{sum(r['covered'] for r in mine)} of {sum(r['sites'] for r in mine)}",
            "peak_rss_mib": max((r["maxrss_mib"] or 0) for r in mine) if mine else None,
        }
    p, f = summary["pyramid"]["first_answer_s"], summary["flat"]["first_answer_s"]
    summary["first_answer_ratio"] = [round(a / b, 3) for a, b in zip(p, f)]
    (OUT / "user" / args.precision / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps(summary, indent=1))


def child(args: argparse.Namespace, mode: str, scene: Path, store: Path, fill: bool) -> dict[str, Any]:
    cmd = ([sys.executable, __file__, "measure", "--mode", mode, "--scene", str(scene), "--store", str(store),
           "--encoder", args.encoder, "--tiling", args.tiling, "--flat", args.flat, "--beam", str(args.beam),
           "--expand", str(args.expand), "--sample", str(args.sample), "--threshold", str(args.threshold),
           "--threads", str(args.threads), "--batch", str(args.batch), "--runtime", args.runtime,
            "--precision", args.precision]
           + (["--fill"] if fill else []) + (["--encode-empty"] if args.encode_empty else []))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode:
        raise SystemExit(f"measurement failed ({mode}, {scene.name})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, Any]], tag: str) -> dict[str, float]:
    qs = [q for r in runs for q in r["queries"] if q["run"] == tag]
    keys = ("site_recall", "r@1", "r@5", "site_recall_one_chip", "site_recall_block")
    return {k: float(np.mean([q[k] for q in qs if k in q])) for k in keys} if qs else {}


def main() -> None:
    from rsrag.agent.settings import EncoderSettings, PyramidSettings, StoreSettings

    class DEFAULTS:  # the product's defaults (agent/settings.py): the pyramid arm runs what users get
        pyramid, store, encoder = PyramidSettings(), StoreSettings(), EncoderSettings()

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["mosaic", "cog", "measure", "sweep", "reads", "user"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000])
    parser.add_argument("--side", type=int, default=100_000)
    parser.add_argument("--scenes", type=int, default=1, help="mosaics per size (seeds 0..N-1)")
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--encoder", default="rsrag-lit")
    parser.add_argument("--tiling", default=DEFAULTS.store.tiling)
    parser.add_argument("--flat", default="vit:448")
    parser.add_argument("--beam", type=int, default=DEFAULTS.pyramid.beam)
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 8, 16, 32], help="sweep: beams to replay")
    parser.add_argument("--samples", type=int, nargs="+", default=[DEFAULTS.pyramid.sample],
                        help="sweep: statistics samples to replay")
    parser.add_argument("--ranks", nargs="+", default=["contrast", "score"], help="sweep: how the beam is ranked")
    parser.add_argument("--children", choices=["all", "tiled", "tiled-all"], default="all",
                        help="sweep: a region's children: all (3 x 3 at half overlap), tiled above the finest level "
                             "(2 x 2, side by side), or tiled at every level")
    parser.add_argument("--exact-stats", action="store_true", help="sweep: exact statistics at every level (diagnosis)")
    parser.add_argument("--scenes-stores", nargs="+", default=[], help="sweep: SCENE STORE pairs")
    parser.add_argument("--expand", type=int, default=DEFAULTS.pyramid.expand)
    parser.add_argument("--sample", type=int, default=DEFAULTS.pyramid.sample)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="reads: rounds of every arm")
    parser.add_argument("--batch", type=int, default=DEFAULTS.encoder.batch_size, help="windows per encoder call")
    parser.add_argument("--precision", default=DEFAULTS.encoder.precision,
                        help="measure: encoder.precision of image forward passes (default: the product's)")
    parser.add_argument("--trunk", choices=["prepared", "unprepared", "dynpad", "timm"], default="prepared",
                        help="measure: the image trunk as users run it, as it ran before prepare_for_inference, "
                             "with stride-2 convolutions padding a copy of their input (before static_same_padding), "
                             "or with timm imported and its network built as well (before effnet_lite)")
    parser.add_argument("--store-import", choices=["deferred", "eager"], default="deferred",
                        help="measure: eager = the baseline that builds lancedb's REST-client validators on import")
    parser.add_argument("--encode-empty", action="store_true",
                        help="measure: encode windows without data too (the baseline before they were skipped)")
    parser.add_argument("--runtime", choices=["current", "before", "nothp", "spin", "blas", "heap"], default="current",
                        help="measure: the encoder runtime; 'before' = torch's and glibc's allocation defaults and "
                             "torch-op preprocessing (before it was tuned), 'nothp' = the allocation defaults only, "
                             "'spin' = current but OpenMP's default wait policy (idle threads spin), "
                             "'blas' = current but numpy's BLAS on its default threads, "
                             "'heap' = current plus large blocks kept in glibc's heap (BENCHMARKS.md, Pyramid index, follow-up)")
    parser.add_argument("--readers", type=int, default=None, help="measure: reader threads (default: the product's)")
    parser.add_argument("--fill", action="store_true", help="complete the finest level and re-run (the full index)")
    parser.add_argument("--no-flat", action="store_true", help="skip the flat baseline")
    parser.add_argument("--mode", default="pyramid")
    parser.add_argument("--user-scenes", nargs="+", default=[], help="user: scenes to ask about (with .truth.json)")
    parser.add_argument("--scene")
    parser.add_argument("--store")
    args = parser.parse_args()
    if args.kind == "measure":
        print(json.dumps(measure(args)))
        return
    if args.kind == "sweep":
        sweep(args)
        return
    if args.kind == "reads":
        reads(args)
        return
    if args.kind == "user":
        user(args)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; encoder {args.encoder}",
          file=sys.stderr)
    results: list[dict[str, Any]] = []
    sizes = args.sizes if args.kind == "mosaic" else [args.side]
    for side in sizes:
        for seed in range(args.scenes):
            scene = OUT / f"{args.kind}_{side}_s{seed}.tif"
            if not scene.exists():
                t0 = time.perf_counter()
                build = build_mosaic if args.kind == "mosaic" else build_cog
                build(scene, side, seed, args.targets, args.sites)
                print(f"built {scene} ({scene.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
            runs = {"pyramid": child(args, "pyramid", scene, OUT / f"store_p_{side}_s{seed}", args.fill)}
            if args.kind == "mosaic" and not args.no_flat:
                runs["flat"] = child(args, "flat", scene, OUT / f"store_f_{side}_s{seed}", False)
            results.append({"side": side, "seed": seed, **runs})
            (OUT / f"result_{args.kind}_{side}_s{seed}.json").write_text(json.dumps(results[-1], indent=1))
    for r in results:
        p, f = r["pyramid"], r.get("flat")
        line = {"side": r["side"], "seed": r["seed"], "pyramid_first_s": round(p["first_answer_s"], 1),
                "pyramid_first_encoded": p["first_encoded"], "pyramid_all_queries_s": round(p["all_queries_s"], 1),
                "pyramid_encoded": p["encoded_after_queries"], "pyramid_peak_rss_mib": round(p["peak_rss_mib"]),
                "pyramid": summarise([p], "first"), "levels": p["levels"]}
        if "fill_s" in p:
            line.update(full_fill_s=round(p["fill_s"], 1), full=summarise([p], "full"))
        if f:
            line.update(flat_first_s=round(f["first_answer_s"], 1), flat_windows=f["windows"], flat=summarise([f], "first"),
                        ratio=round(p["first_answer_s"] / f["first_answer_s"], 3), flat_peak_rss_mib=round(f["peak_rss_mib"]))
        print(json.dumps(line))


if __name__ == "__main__":
    main()
