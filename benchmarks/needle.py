"""UHR needle benchmark: planted target scenes in large AID mosaics; recall of fast, slow and cascade paths.

For each trial (``--trials``, seeded by ``--seed``) a target class is taken in turn from ``--targets`` and
``--backgrounds`` other classes are drawn; a ``--size`` px mosaic is tiled with 150 px AID chips of the
background classes, and ``--plant`` chips of the target class are planted at random cells (known boxes).
Mosaic chips come only from the encoder's fixed validation split (never trained on) and are never in the
concept library, which is built from the training split (``--per-class`` chips per class).

The patch index uses tiling ``grid:150`` aligned with the cells, so each patch is one chip. Its vectors are
the chips' embeddings, computed once per chip and cached (``benchmarks/out``) and written through
:class:`PatchStore` exactly as the indexer writes them; ``--real-index`` instead writes the mosaic as a PNG
and indexes it with :func:`index_scene` (slow on 2 cores; use for small sizes to check the shortcut).

Queries: the target's class phrase and synonyms that avoid the class name (``SYNONYMS``). For each query:
fast path alone (the product's cascade with ``slow="never"``), slow path alone (mean proxy), and the
cascade itself (:func:`rsrag.tools.retrieval.cascade`, what the agent's ``search_patches`` tool and the
ImageRAG pipeline graph run: slow path only when no fast hit reaches the confidence threshold; then RRF
fusion). ``recall@k`` = planted cells among the top-k places (windows merged as the tool merges them) /
min(k, planted).
Baseline in the same run: the expected recall@k of a random ranking of the mosaic's cells.

Usage: ``.venv/bin/python benchmarks/needle.py --encoder SPEC --sizes 3000 12000 --trials 6``
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import time
from pathlib import Path

import numpy as np

from rsrag.tools.encoders import load_encoder
from rsrag.tools.captioned import class_phrase, read_chips, split_chips
from rsrag.tools.knowledge import KnowledgeBase, build_concepts
from rsrag.tools.knowledge.base import load_rgb
from rsrag.tools.region import PixelBox, Region
from rsrag.tools.retrieval import cascade
from rsrag.tools.slowpath import slow_search
from rsrag.tools.store import IndexInfo, PatchStore, index_key, open_store

ROOT = Path(__file__).resolve().parents[1]
CELL = 150
TARGETS = ["StorageTanks", "Airport", "Stadium", "Church", "BaseballField", "Port", "Bridge", "Playground"]
SYNONYMS = {
    "StorageTanks": ["oil tanks", "round fuel containers"], "Airport": ["airfield with runways", "aircraft terminal"],
    "Stadium": ["sports arena", "football ground with stands"], "Church": ["cathedral", "chapel with a steeple"],
    "BaseballField": ["baseball diamond", "ballpark"], "Port": ["harbour with docked ships", "marina"],
    "Bridge": ["overpass across a river", "span over water"], "Playground": ["running track", "school sports ground"],
}
BACKGROUND_POOL = ["Farmland", "Forest", "Meadow", "DenseResidential", "MediumResidential", "SparseResidential",
                   "BareLand", "Desert", "Mountain", "Industrial", "Commercial", "Park", "Parking", "River", "School"]


def chip_vectors(encoder, paths: list[Path], cache: Path) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Embeddings of chips (cached per encoder id)."""
    got: dict[str, np.ndarray] = {}
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        got = dict(zip(data["names"].tolist(), data["vectors"]))
    todo = [p for p in paths if str(p) not in got]
    for i in range(0, len(todo), 64):
        batch = todo[i:i + 64]
        vecs = encoder.encode_images([load_rgb(str(p)) for p in batch])
        got.update(zip(map(str, batch), vecs))
        print(f"  encoded {min(i + 64, len(todo))}/{len(todo)} chips", flush=True)
    if todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(got)
        np.savez(cache, names=np.array(names), vectors=np.stack([got[n] for n in names]))
    return got


def build_index(ps: PatchStore, name: str, cells: list[Path], side: int, vecs: dict[str, np.ndarray], encoder) -> IndexInfo:  # type: ignore[no-untyped-def]
    n = len(cells)
    info = IndexInfo(key=index_key(name, f"grid:{CELL}", encoder.id), scene=name, tiling=f"grid:{CELL}", encoder=encoder.id,
                     dim=encoder.dim, patch_table="", source=name, width=side * CELL, height=side * CELL, n_patches=n,
                     chunk_size=4096, status="building", updated=0.0)
    info = info.model_copy(update={"patch_table": ps.patch_table(info).name})
    info = ps.begin(info)
    regions = [Region(scene=name, box=PixelBox.from_xywh((i % side) * CELL, (i // side) * CELL, CELL, CELL), scale=0) for i in range(n)]
    matrix = np.stack([vecs[str(p)] for p in cells])
    for c in range(0, n, 4096):
        ps.add_chunk(info, c // 4096, list(range(c, min(n, c + 4096))), regions[c:c + 4096], matrix[c:c + 4096])
    return ps.finish(info)


def recall(hits, planted: set[tuple[int, int]], k: int) -> float:  # type: ignore[no-untyped-def]
    found = set()
    for h in hits[:k]:
        for (x, y) in planted:
            if h.region.box.intersection(PixelBox.from_xywh(x, y, CELL, CELL)) >= CELL * CELL // 2:
                found.add((x, y))
    return len(found) / min(k, len(planted))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "aid-rsicd")
    ap.add_argument("--encoder", default=None, help="encoder spec (default: the offline default encoder)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[3000, 12000])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", nargs="+", default=TARGETS)
    ap.add_argument("--backgrounds", type=int, default=4)
    ap.add_argument("--plant", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--reduce", default="mean", choices=["mean", "cluster", "topk"])
    ap.add_argument("--label-threshold", type=float, default=0.3)
    ap.add_argument("--threshold", type=float, default=0.5, help="confidence threshold (retrieval.fast_threshold)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument("--keep-store", action="store_true", help="keep the run's store (several GB at 20,000 px)")
    args = ap.parse_args()

    encoder = load_encoder(args.encoder)
    chips = read_chips(args.data)
    train, val = split_chips(chips)
    by_class: dict[str, list[Path]] = {}
    for c in val:
        by_class.setdefault(str(c.label), []).append(c.image)
    tag = encoder.id.replace("/", "_").replace(":", "_").replace("#", "_")
    vecs = chip_vectors(encoder, [c.image for c in val], args.out / f"needle_chips_{tag}.npz")
    run = args.out / f"needle_store_{tag}_{int(time.time())}"
    store = open_store(run)
    ps = PatchStore(store)
    kb = KnowledgeBase(store, encoder, name="needle-concepts")
    t0 = time.perf_counter()
    report = kb.add(build_concepts(args.data, per_class=args.per_class, exclude={c.image.resolve() for c in val}), batch_entries=4)
    print(f"concept library: {report.added} concepts, {report.images} chips, {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for size in args.sizes:
        side = size // CELL
        for trial in range(args.trials):
            rng = random.Random(args.seed * 1000 + trial * 7 + size)
            target = args.targets[trial % len(args.targets)]
            backs = rng.sample([b for b in BACKGROUND_POOL if b != target], args.backgrounds)
            cells = [rng.choice(by_class[rng.choice(backs)]) for _ in range(side * side)]
            spots = rng.sample(range(side * side), args.plant)
            for s in spots:
                cells[s] = rng.choice(by_class[target])
            planted = {((s % side) * CELL, (s // side) * CELL) for s in spots}
            info = build_index(ps, f"needle-{size}-{trial}", cells, side, vecs, encoder)
            for query in [class_phrase(target), *SYNONYMS.get(target, [])]:
                t = time.perf_counter()
                fast = cascade(info, encoder, phrases=[query], store=ps, kb=None, top_k=5, threshold=args.threshold)
                tf = time.perf_counter()
                slow = slow_search(info, encoder, kb, phrases=[query], store=ps, top_k=5, threshold=args.threshold,
                                   reduce=args.reduce, label_threshold=args.label_threshold)
                ts = time.perf_counter()
                casc = cascade(info, encoder, phrases=[query], store=ps, kb=kb, top_k=5, threshold=args.threshold,
                               reduce=args.reduce, label_threshold=args.label_threshold)
                tc = time.perf_counter()
                n = side * side
                row = {"size": size, "trial": trial, "target": target, "query": query, "patches": n,
                       "labels": [m.label for m in slow.matches], "used_slow": casc.used_slow,
                       "chance@1": args.plant / n, "chance@5": 5 * args.plant / n / min(5, args.plant),
                       "ms": {"fast": (tf - t) * 1e3, "slow": (ts - tf) * 1e3, "cascade": (tc - ts) * 1e3}}
                for name, hits in (("fast", fast.top(5)), ("slow", slow.hits), ("cascade", casc.top(5))):
                    row[f"{name}@1"], row[f"{name}@5"] = recall(hits, planted, 1), recall(hits, planted, 5)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "ms"}), flush=True)
    summary: dict = {"encoder": encoder.id, "machine": platform.processor() or platform.machine(), "seed": args.seed,
                     "per_class": args.per_class, "reduce": args.reduce, "label_threshold": args.label_threshold,
                     "threshold": args.threshold}
    for size in args.sizes:
        sel = [r for r in rows if r["size"] == size]
        summary[str(size)] = {k: round(float(np.mean([r[k] for r in sel])), 4) for k in
                              ("fast@1", "fast@5", "slow@1", "slow@5", "cascade@1", "cascade@5", "chance@1", "chance@5", "used_slow")}
        summary[str(size)]["queries"] = len(sel)
        summary[str(size)]["ms_p50"] = {p: round(float(np.median([r["ms"][p] for r in sel])), 1) for p in ("fast", "slow", "cascade")}
    print(json.dumps(summary, indent=1))
    (args.out / f"needle_{tag}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    if not args.keep_store:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
