"""A question across a catalog of 100 small indexed scenes, against one scene's query, in the same run.

Builds (once, cached under ``benchmarks/out/catalog_query/``) ``--scenes`` georeferenced scenes of
``--cells`` x ``--cells`` real AID chips (random classes, storage tanks planted in a few scenes), registers
them in a catalog and indexes each with the bundled encoder on a flat grid of one chip per window. Then,
with the encoder loaded and one warm-up query run, it times, for each of ``--phrases``:

* ``one scene``: :func:`rsrag.tools.catalog_search.search_catalog` restricted to one scene (the baseline:
  the same cascade a single-scene question runs, through the same code);
* ``catalog``: the same function over every scene of the catalog;
* ``catalog tool``: the agent's ``search_catalog`` tool (:mod:`rsrag.agent.toolkit`), which adds evidence
  records per site and the text the model reads, over every scene.

    .venv/bin/python benchmarks/catalog_query.py                  # 100 scenes of 512 px
    .venv/bin/python benchmarks/catalog_query.py --scenes 20 --rounds 3

Writes ``benchmarks/out/catalog_query.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "aid-rsicd" / "images"
CLASSES = ("Farmland", "Forest", "Meadow", "Desert", "Mountain", "Pond", "River", "DenseResidential")
PLANTED = "StorageTanks"


def _build(folder: Path, n: int, cells: int, cell: int) -> list[str]:
    """The scenes (written once): ``cells`` x ``cells`` chips each, storage tanks in every 25th scene."""
    from PIL import Image
    from rasterio.transform import from_origin

    sys.path.insert(0, str(ROOT))
    from tests.rasters import write_raster

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    pools = {c: sorted((SHARED / c).glob("*.jpg"))[:40] for c in (*CLASSES, PLANTED)}
    if not all(pools.values()):
        raise SystemExit(f"AID chips not found under {SHARED}")
    cache: dict[Path, np.ndarray] = {}

    def chip(path: Path) -> np.ndarray:
        if path not in cache:
            cache[path] = np.asarray(Image.open(path).convert("RGB").resize((cell, cell)))
        return cache[path]

    sources = []
    for i in range(n):
        path = folder / f"s{i:03d}.tif"
        sources.append(str(path))
        if path.exists():
            continue
        img = np.zeros((cells * cell, cells * cell, 3), np.uint8)
        for r in range(cells):
            for c in range(cells):
                cls = CLASSES[int(rng.integers(len(CLASSES)))]
                files = pools[cls]
                img[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = chip(files[int(rng.integers(len(files)))])
        if i % 25 == 7:  # a few scenes hold storage tanks
            img[cell:2 * cell, cell:2 * cell] = chip(pools[PLANTED][i % len(pools[PLANTED])])
        east, north = 500_000.0 + (i % 10) * 5_000.0, 5_000_000.0 - (i // 10) * 5_000.0
        write_raster(path, img.transpose(2, 0, 1).copy(), transform=from_origin(east, north, 2.0, 2.0))
    return sources


def _timed(fn: Any) -> tuple[float, float, Any]:
    """Wall-clock and CPU milliseconds (this process, all threads) of one call, and its result."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--cells", type=int, default=4, help="chips per scene side")
    ap.add_argument("--cell", type=int, default=128, help="chip side in px (scene side = cells x cell)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--phrases", nargs="+", default=["storage tanks", "a pond", "houses"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "catalog_query")
    args = ap.parse_args()

    from rsrag.tools.calibration import load_presence
    from rsrag.tools.catalog import Catalog
    from rsrag.tools.catalog_search import scene_index, search_catalog
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.indexing import index_scene
    from rsrag.tools.store import PatchStore, open_store

    tiling = f"grid:{args.cell}"
    t0 = time.perf_counter()
    sources = _build(args.out / f"scenes-{args.cells}x{args.cell}", args.scenes, args.cells, args.cell)
    built_s = time.perf_counter() - t0
    store = open_store(args.out / f"store-{args.cells}x{args.cell}")
    patches, encoder = PatchStore(store), load_encoder(None)
    catalog = Catalog(store, name=f"bench{args.scenes}")
    catalog.add(sources)
    scenes = catalog.scenes()
    t0 = time.perf_counter()
    indexed = 0
    for scene in scenes:
        if scene_index(patches, scene.fingerprint, encoder.id, tiling) is None:
            index_scene(scene.source, encoder, tiling, patches)
            indexed += 1
    index_s = time.perf_counter() - t0
    presence = load_presence(encoder)
    windows = sum(s.width // args.cell * (s.height // args.cell) for s in scenes)
    print(f"{len(scenes)} scenes of {args.cells * args.cell} px ({windows} windows), {indexed} indexed now "
          f"in {index_s:.1f} s (scenes written in {built_s:.1f} s)")

    common = {"top_k": 5, "threshold": 0.5, "presence": presence, "tiling": tiling}
    one = [scenes[7]]  # a scene with storage tanks
    t0 = time.perf_counter()
    search_catalog(catalog, patches, encoder, phrases=[args.phrases[0]], **common)  # warm-up: tables opened
    first_ms = (time.perf_counter() - t0) * 1e3

    tool_call = _tool_caller(store, catalog.name, args, encoder)
    arms = {
        "one scene": lambda p: search_catalog(catalog, patches, encoder, phrases=[p], scenes=one, **common),
        "catalog": lambda p: search_catalog(catalog, patches, encoder, phrases=[p], **common),
        "catalog tool": tool_call,
    }
    wall: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    matching: dict[str, list[str]] = {}
    for _ in range(args.rounds):  # arms interleaved, so a busy machine slows them alike
        for phrase in args.phrases:
            for name, arm in arms.items():
                w, c, result = _timed(lambda a=arm, p=phrase: a(p))
                wall[name].append(w)
                cpu[name].append(c)
                if name == "catalog":
                    matching[phrase] = [s.scene.id for s in result.matching]
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"first catalog query (tables opened): {first_ms:.0f} ms; load average {os.getloadavg()[0]:.1f}")
    print("| query | median wall ms | median CPU ms | CPU ms per scene | wall vs one scene | CPU vs one scene |")
    print("|---|---|---|---|---|---|")
    for k, v in med.items():
        n = 1 if k == "one scene" else len(scenes)
        print(f"| {k} | {v:.1f} | {med_cpu[k]:.1f} | {med_cpu[k] / n:.2f} | {v / med['one scene']:.1f}x | "
              f"{med_cpu[k] / med_cpu['one scene']:.1f}x |")
    for phrase, ids in matching.items():
        print(f"'{phrase}': found in {len(ids)} scene(s): {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}")
    report = {"scenes": len(scenes), "scene_px": args.cells * args.cell, "windows": windows, "tiling": tiling,
              "rounds": args.rounds, "phrases": args.phrases, "index_s": round(index_s, 1), "indexed_now": indexed,
              "first_ms": round(first_ms, 1), "median_ms": {k: round(v, 2) for k, v in med.items()},
              "median_cpu_ms": {k: round(v, 2) for k, v in med_cpu.items()},
              "ratio": {k: round(v / med["one scene"], 2) for k, v in med.items()},
              "cpu_ratio": {k: round(v / med_cpu["one scene"], 2) for k, v in med_cpu.items()}, "matching": matching,
              "cpu": os.cpu_count(), "load_average": os.getloadavg()[0]}
    out = ROOT / "benchmarks" / "out" / "catalog_query.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def _tool_caller(store: Any, name: str, args: argparse.Namespace, encoder: Any) -> Any:
    """The agent's ``search_catalog`` tool, called as the graph's tool node calls it (state, context, runtime)."""
    from langgraph.prebuilt import ToolRuntime

    from rsrag.agent.context import AgentContext, Resources
    from rsrag.agent.settings import load_settings
    from rsrag.agent.toolkit import search_catalog as tool
    from rsrag.agent.workspace import Workspace

    settings = load_settings(overrides={"store.path": args.out / f"store-{args.cells}x{args.cell}",
                                        "store.tiling": f"grid:{args.cell}", "vlm.spec": "rule",
                                        "retrieval.top_k": 5})
    resources = Resources(settings, workspace=Workspace(settings, encoder=encoder))
    context = AgentContext(settings)

    def call(phrase: str) -> Any:
        runtime = ToolRuntime(state={"catalog": name, "evidence": {}, "messages": []}, context=context,
                              config=resources.config({"configurable": {"thread_id": "bench"}}),
                              stream_writer=lambda _: None, tool_call_id="bench", store=None)
        return tool.func(phrases=[phrase], runtime=runtime)  # type: ignore[misc]

    return call


if __name__ == "__main__":
    main()
