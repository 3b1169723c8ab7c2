"""Second query on an indexed image: no re-encoding of patches, only the question's text.

Indexes an image once (``benchmarks/out/mosaic_8000.tif`` from ``index_ingest.py`` by default), then asks
questions of it through :func:`rsrag.tools.fastpath.fast_search` in the same process, counting the image
encoder's calls (must stay 0 after indexing), and finally runs ``rsrag search`` as a fresh process (model
load included) against the same store. Baseline: the indexing time of the same image in the same run.

Usage: ``.venv/bin/python benchmarks/second_query.py [--image PATH] [--encoder rsrag-lit:random]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=ROOT / "benchmarks" / "out" / "mosaic_8000.tif")
    parser.add_argument("--encoder", default="rsrag-lit:random")
    parser.add_argument("--tiling", default="vit:448")
    args = parser.parse_args()

    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.fastpath import fast_search
    from rsrag.tools.indexing import index_scene

    encoder = load_encoder(args.encoder)
    calls = {"images": 0}
    original = encoder.encode_image_tensors

    def counting(batch):  # type: ignore[no-untyped-def]
        calls["images"] += len(batch)
        return original(batch)

    encoder.encode_image_tensors = counting  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="rsrag-q2-") as store:
        t0 = time.perf_counter()
        report = index_scene(args.image, encoder, args.tiling, store)
        index_s = time.perf_counter() - t0
        encoded_by_index = calls["images"]
        queries = []
        for question in ("Where is the river?", "Where are the farm fields and roads?", "Where is the river?"):
            t0 = time.perf_counter()
            again = index_scene(args.image, encoder, args.tiling, store)  # what `rsrag search` does first
            res = fast_search(again.info, encoder, question=question, store=store, top_k=20)
            queries.append({"question": question, "total_ms": round((time.perf_counter() - t0) * 1e3, 1),
                            "text_ms": round(res.text_ms, 1), "search_ms": round(res.search_ms, 1),
                            "index_no_op": again.no_op, "hits": len(res.hits)})
        cli_cmd = [str(Path(sys.executable).with_name("rsrag")), "search", str(args.image), "Where is the river?",
                   "--encoder", args.encoder, "--tiling", args.tiling, "--store", store, "--no-index", "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cli_cmd, capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
        assert proc.returncode == 0, proc.stdout + proc.stderr
    second = queries[1]["total_ms"] / 1e3
    print(json.dumps({
        "image": str(args.image), "encoder": encoder.id, "tiling": args.tiling, "patches": report.info.n_patches,
        "index_s": round(index_s, 1), "patches_encoded_by_index": encoded_by_index,
        "patches_encoded_by_queries": calls["images"] - encoded_by_index, "queries": queries,
        "second_query_vs_index_time": round(second / index_s, 5),
        "cli_search_fresh_process_s": round(cli_s, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
