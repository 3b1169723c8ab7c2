"""Knowledge search latency at 100,000 entries in the embedded store, against numpy brute force.

Builds (once, cached in ``--out``) a knowledge base of ``--n`` synthetic entries through
:class:`KnowledgeBase`'s own tables (512-d unit text and image vectors, a category, a lon/lat, and a text of
12 words drawn from a 2,000-word vocabulary with a Zipf-like law), then times, for ``--queries`` queries
(query vectors given, so text/image encoding is excluded):

* ``text``: the knowledge base's text search (hybrid BM25 + vector, alpha 0.5) via ``hybrid_search``;
* ``bm25``: BM25 only; ``vector``: text-vector search; ``vector+filter``: with a category and a lon/lat box;
* ``image+text``: :meth:`KnowledgeBase.search` with both query kinds (candidates + RS-RAG re-ranking), with
  a stub encoder returning the prepared vectors;
* the knowledge base's own indexes (:meth:`KnowledgeBase.maintain`: BM25, a scalar index on ids, IVF-PQ on
  both vectors with exact re-ranking of the candidates);
* baseline: numpy brute force (``vectors @ q`` + ``argpartition`` top-10) over the same vectors in RAM.

Usage: ``.venv/bin/python benchmarks/kb_latency.py [--n 100000]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from rsrag.tools.knowledge import KnowledgeBase
from rsrag.tools.knowledge.entry import KnowledgeEntry

ROOT = Path(__file__).resolve().parents[1]
DIM = 512


class StubEncoder:
    """Returns prepared vectors (the benchmark excludes encoding)."""

    id, dim, image_size = "bench-stub-512", DIM, 224

    def __init__(self) -> None:
        self.next_text = np.zeros(DIM, np.float32)
        self.next_image = np.zeros(DIM, np.float32)

    def encode_texts(self, texts):  # type: ignore[no-untyped-def]
        return np.stack([self.next_text] * len(texts))

    def encode_images(self, images):  # type: ignore[no-untyped-def]
        return np.stack([self.next_image] * len(images))


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(kb: KnowledgeBase, n: int, rng: np.random.Generator, vocab: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = kb.store.table(kb.entry_schema)
    have = table.count()
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    tv, iv = unit(rng, n), unit(rng, n)
    for s in range(have, n, 20_000):
        m = min(20_000, n - s)
        words = rng.choice(len(vocab), size=(m, 12), p=weights)
        texts = [" ".join(vocab[w] for w in row) for row in words]
        cats = [f"cat{c}" for c in rng.integers(0, 50, m)]
        lon, lat = rng.uniform(-180, 180, m), rng.uniform(-80, 80, m)
        entries = [KnowledgeEntry(id=f"e{s + i}", name=f"entry {s + i}", category=cats[i], description=texts[i]) for i in range(m)]
        table.add({"id": [e.id for e in entries], "kind": ["knowledge"] * m, "name": [e.name for e in entries],
                   "category": cats, "search_text": [e.search_text() for e in entries],
                   "entry_json": [e.model_dump_json() for e in entries], "content_hash": [e.content_hash() for e in entries],
                   "n_images": [1] * m, "has_image": [True] * m, "lon": lon.tolist(), "lat": lat.tolist(),
                   "source": ["bench"] * m, "licence": [""] * m, "text": tv[s:s + m], "image": iv[s:s + m]})
        print(f"  wrote {s + m}/{n}", flush=True)
    table.optimize()
    kb.maintain()
    vecs: dict[str, list] = {k: [] for k in ("id", "text", "image")}
    for b in table.scan(fields=["id", "text", "image"]):
        for k in vecs:
            vecs[k].append(b[k])
    return [i for part in vecs["id"] for i in part], np.concatenate(vecs["text"]), np.concatenate(vecs["image"])


def pct(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(xs, 50)) * 1e3, 2), "p95_ms": round(float(np.percentile(xs, 95)) * 1e3, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    vocab = [f"w{i}" for i in range(2000)]
    enc = StubEncoder()
    kb = KnowledgeBase(args.out / f"kb_latency_{args.n}", enc, name="bench")  # type: ignore[arg-type]
    t0 = time.perf_counter()
    ids, text_m, image_m = build(kb, args.n, np.random.default_rng(args.seed), vocab)
    print(f"store ready ({len(text_m)} entries) in {time.perf_counter() - t0:.0f} s", flush=True)
    table = kb.store.open_table(kb.entry_schema)
    qs = unit(rng, args.queries)
    words = [" ".join(rng.choice(vocab[:300], 3)) for _ in range(args.queries)]
    box = kb.where(category="cat7", bbox=(-90.0, -40.0, 90.0, 40.0))
    timings: dict[str, list[float]] = {k: [] for k in ("numpy", "vector", "vector+filter", "bm25", "text", "image+text")}
    recalls = []
    for i, (q, w) in enumerate(zip(qs, words)):
        for name, fn in (
            ("numpy", lambda: np.argpartition(-(text_m @ q), 10)[:10]),
            ("vector", lambda: table.search("text", q, 10, fields=["id"])),
            ("vector+filter", lambda: table.search("text", q, 10, where=box, fields=["id"])),
            ("bm25", lambda: table.text_search(w, 10, fields=["id"])),
            ("text", lambda: table.hybrid_search(w, "text", q, 10, alpha=0.5, fields=["id", "entry_json"])),
        ):
            t = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t)
        exact = {ids[j] for j in np.argpartition(-(text_m @ q), 10)[:10]}
        recalls.append(len(exact & {r["id"] for r in table.search("text", q, 10, fields=["id"]).rows}) / 10)
        enc.next_text, enc.next_image = q, qs[(i + 1) % len(qs)]
        t = time.perf_counter()
        kb.search(w, np.zeros((8, 8, 3), np.uint8), k=10)
        timings["image+text"].append(time.perf_counter() - t)
    res = {k: pct(v[3:]) for k, v in timings.items()}
    base = res["numpy"]["p50_ms"]
    for k in res:
        res[k]["x_numpy_p50"] = round(res[k]["p50_ms"] / base, 1)
    out = {"n": len(text_m), "queries": args.queries, "vector_recall@10": round(float(np.mean(recalls)), 3), "machine": platform.processor() or platform.machine(), "results": res}
    print(json.dumps(out, indent=1))
    (args.out / f"kb_latency_{args.n}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
