"""Cost of the one retrieval cascade against the fast path it replaced, on the same index, same run.

The baseline is ``tools/fastpath.py`` as it was before issue 11 (commit ``--baseline``, read from git and
loaded as a module of its own): phrases -> text embedding -> top-k patches -> confidence -> NMS. The new path
is :func:`rsrag.tools.retrieval.cascade` with ``slow="never"`` (every window above the threshold, fused,
grouped into sites). Both run interleaved on one index of ``--patches`` random unit vectors of the encoder's
dimension, written through :class:`PatchStore` (the encoder embeds the query phrases, as in use).

Run:  .venv/bin/python benchmarks/cascade_overhead.py [--patches 400] [--rounds 3] [--baseline d49b33b]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rsrag.tools.encoders import load_encoder
from rsrag.tools.region import PixelBox, Region
from rsrag.tools.retrieval import cascade
from rsrag.tools.store import IndexInfo, PatchStore, index_key, open_store

ROOT = Path(__file__).resolve().parents[1]
PHRASES = ["storage tanks", "airport", "stadium", "church", "harbour", "bridge"]


def baseline_module(commit: str, folder: Path):  # type: ignore[no-untyped-def]
    source = subprocess.run(["git", "show", f"{commit}:tools/fastpath.py"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    path = folder / "baseline_fastpath.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_fastpath", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_fastpath"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patches", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default="d49b33b", help="commit whose tools/fastpath.py is the baseline")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rsrag-cascade-ab-"))
    old = baseline_module(args.baseline, work)
    encoder = load_encoder(None)
    rng = np.random.default_rng(0)
    n, side = args.patches, int(np.ceil(np.sqrt(args.patches)))
    vectors = rng.standard_normal((n, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = PatchStore(open_store(work / "store"))
    info = IndexInfo(key=index_key("ab", "grid:150", encoder.id), scene="ab", tiling="grid:150", encoder=encoder.id,
                     dim=encoder.dim, patch_table="", source="ab", width=side * 150, height=side * 150, n_patches=n,
                     chunk_size=4096, status="building", updated=0.0)
    info = store.begin(info.model_copy(update={"patch_table": store.patch_table(info).name}))
    regions = [Region(scene="ab", box=PixelBox.from_xywh((i % side) * 150, (i // side) * 150, 150, 150), scale=0)
               for i in range(n)]
    for c in range(0, n, 4096):
        store.add_chunk(info, c // 4096, list(range(c, min(n, c + 4096))), regions[c:c + 4096], vectors[c:c + 4096])
    info = store.finish(info)
    old.fast_search(info, encoder, phrases=["warm up"], store=store, top_k=5)
    base, new = [], []
    for phrase in PHRASES * args.rounds:
        t = time.perf_counter()
        old.fast_search(info, encoder, phrases=[phrase], store=store, top_k=5)
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        cascade(info, encoder, phrases=[phrase], store=store, kb=None, top_k=5, threshold=0.5)
        new.append(time.perf_counter() - t)
    b, c = statistics.median(base), statistics.median(new)
    print(f"patches={n} queries={len(base)} baseline fast_search p50 {b * 1e3:.1f} ms; "
          f"cascade(slow='never') p50 {c * 1e3:.1f} ms; ratio {c / b:.2f}")


if __name__ == "__main__":
    main()
