"""Fast-path query latency over 1,000,000 stored 512-d patch vectors, against numpy brute force.

Builds (once, cached in ``--out``) an embedded store holding one patch index of ``--n`` clustered unit
vectors (``--clusters`` random centres plus noise, like CLIP patch embeddings of a large scene), through
the same :class:`~rsrag.tools.store.PatchStore` path indexing uses, including its IVF-PQ index. Then, in one
process, for ``--queries`` query vectors (a cluster centre plus strong noise, cosine ~0.5 to it, like a text
query):

* store search: :meth:`PatchStore.search` top-20 (ANN + exact re-ranking), p50 / p95, per ``nprobes`` and
  ``refine_factor`` setting;
* fast path: :func:`rsrag.tools.fastpath.fast_search` top-20 with a stub text encoder, so the figure
  excludes text encoding but includes the z-score confidence, Region building and NMS;
* baseline: numpy brute force (``vectors @ q`` + ``argpartition``) over the same vectors held in RAM;
* recall@20 of the store search against that exact top-20; exact LanceDB search for reference.

Usage: ``.venv/bin/python benchmarks/query_latency.py [--n 1000000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 512


def vectors(n: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 512) clustered unit vectors and the (clusters, 512) unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        v = centres[rng.integers(0, clusters, m)] + rng.standard_normal((m, DIM)).astype(np.float32) * (0.8 / np.sqrt(DIM))
        out[s:s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, centres


class StubEncoder:
    """Returns a preset query vector for any text (the benchmark excludes text encoding)."""

    def __init__(self, encoder_id: str) -> None:
        self.id, self.dim, self.image_size = encoder_id, DIM, 224
        self.query = np.zeros(DIM, dtype=np.float32)

    def encode_texts(self, texts):  # type: ignore[no-untyped-def]
        return np.repeat(self.query[None], len(texts), axis=0)


def build(store_dir: Path, data: np.ndarray) -> tuple[object, object, dict]:  # type: ignore[type-arg]
    from rsrag.tools.region import PixelBox, Region
    from rsrag.tools.store import IndexInfo, PatchStore, index_key, open_store

    ps = PatchStore(open_store(store_dir))
    n = len(data)
    key = index_key(f"bench-{n}", "grid:1", "bench-512")
    info = ps.info(key)
    timings: dict[str, float] = {}
    if info is None or not info.complete:
        side = int(np.ceil(np.sqrt(n)))
        info = ps.begin(IndexInfo(key=key, scene=f"bench-{n}", tiling="grid:1", encoder="bench-512", dim=DIM,
                                  patch_table="", source="synthetic", width=side * 100, height=side * 100,
                                  n_patches=n, chunk_size=65536, status="building", updated=0.0))
        t0 = time.perf_counter()
        for c, s in enumerate(range(0, n, 65536)):
            ids = list(range(s, min(n, s + 65536)))
            regions = [Region(scene=info.scene, box=PixelBox(x0=(i % side) * 100, y0=(i // side) * 100,
                                                             x1=(i % side) * 100 + 100, y1=(i // side) * 100 + 100), scale=0)
                       for i in ids]
            ps.add_chunk(info, c, ids, regions, data[s:s + len(ids)])
        timings["write_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = ps.finish(info)
        timings["finish_s_incl_stats_and_ivfpq_build"] = time.perf_counter() - t0
    return ps, info, timings


def pct(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(values, 50)) * 1e3, 2), "p95_ms": round(float(np.percentile(values, 95)) * 1e3, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--settings", nargs="+", default=["8:10", "16:10", "16:30", "32:30"],
                        help="ANN settings to sweep, as NPROBES:REFINE_FACTOR")
    parser.add_argument("--exact-queries", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--build-only", action="store_true", help="Build (and cache) the store, then stop.")
    args = parser.parse_args()

    from rsrag.tools.fastpath import fast_search

    data, centres = vectors(args.n, args.clusters, seed=0)
    ps, info, timings = build(args.out / f"query_store_{args.n}", data)
    if args.build_only:
        print(json.dumps({k: round(v, 1) for k, v in timings.items()}))
        return
    rng = np.random.default_rng(1)
    queries = centres[rng.integers(0, args.clusters, args.queries)] + rng.standard_normal((args.queries, DIM)).astype(np.float32) * (1.5 / np.sqrt(DIM))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    # baseline: numpy brute force over the same vectors in RAM
    exact_ids, brute = [], []
    for q in queries:
        t0 = time.perf_counter()
        scores = data @ q
        top = np.argpartition(-scores, 20)[:20]
        top = top[np.argsort(-scores[top])]
        brute.append(time.perf_counter() - t0)
        exact_ids.append(set(top.tolist()))
    result: dict[str, object] = {"n": args.n, "dim": DIM, "queries": args.queries, "cpus": os.cpu_count(),
                                 "machine": platform.machine(), **{k: round(v, 1) for k, v in timings.items()},
                                 "numpy_brute_force": pct(brute)}
    store = ps.store  # type: ignore[attr-defined]
    base_nprobes, base_refine = store.nprobes, store.refine_factor
    sweep = {}
    for setting in args.settings:
        store.nprobes, store.refine_factor = (int(v) for v in setting.split(":"))
        for q in queries[:5]:
            ps.search(info, q, 20)  # type: ignore[attr-defined]  # warm caches
        lat, recall = [], []
        for q, truth in zip(queries, exact_ids):
            t0 = time.perf_counter()
            res = ps.search(info, q, 20)  # type: ignore[attr-defined]
            lat.append(time.perf_counter() - t0)
            recall.append(len({r["patch"] for r in res.rows} & truth) / 20)
        sweep[f"nprobes={store.nprobes} refine={store.refine_factor}"] = {
            **pct(lat), "recall@20": round(float(np.mean(recall)), 4), "exact": res.exact}
    result["store_search"] = sweep
    store.nprobes, store.refine_factor = base_nprobes, base_refine
    enc = StubEncoder("bench-512")
    fast = []
    for q in queries:
        enc.query = q
        r = fast_search(info, enc, phrases=["x"], store=ps, top_k=20, templates=["{}"])  # type: ignore[arg-type]
        fast.append(r.search_ms / 1e3)
    result["fast_search_excl_text"] = {**pct(fast), "nprobes": base_nprobes, "refine": base_refine}
    ex = []
    for q in queries[:args.exact_queries]:
        t0 = time.perf_counter()
        ps.search(info, q, 20, exact=True)  # type: ignore[attr-defined]
        ex.append(time.perf_counter() - t0)
    result["lancedb_exact_flat"] = pct(ex)
    result["ratio_fast_search_p50_vs_numpy_p50"] = round(result["fast_search_excl_text"]["p50_ms"] / result["numpy_brute_force"]["p50_ms"], 3)  # type: ignore[index]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
