"""Encoder throughput on CPU: the offline rsrag-lit encoder next to open_clip ViT-B-32 (random weights).

Both encoders get the same images (real AID chips when ../shared/data is present, else random pixels) and
the same texts in the same process; images/s is measured on pre-decoded, preprocessed tensors
(``encode_image_tensors``), texts/s on ``encode_texts``. With ``--malloc-compare`` the script re-runs itself
in fresh processes, once with the default glibc allocator settings and once with tuned ones (they must be set
before a process starts), and prints both. With ``--precisions float32 bfloat16`` each encoder also runs in each
precision of its image forward passes (``encoder.precision``), in the same process, and every arm reports how
close its image vectors come to the float32 arm's (cosine, min and mean over the images).

    .venv/bin/python benchmarks/encoder_speed.py --threads 2 --malloc-compare
    .venv/bin/python benchmarks/encoder_speed.py --specs rsrag-lit --precisions float32 bfloat16 --batch 8 --images 128
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # glibc's 64-bit maximum: big tensors come from the heap, no mmap churn
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),  # don't hand freed heap back to the OS after every batch
    "MALLOC_TOP_PAD_": str(256 << 20),  # grow the heap in large steps
}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "aid-rsicd"


def _inputs(n_images: int, n_texts: int) -> tuple[list, list[str]]:
    import numpy as np
    from PIL import Image

    if (SHARED / "captions.jsonl").is_file():
        rows = [json.loads(line) for line in (SHARED / "captions.jsonl").read_text().splitlines()[:: 8973 // max(n_images, n_texts // 5) or 1]]
        images = [Image.open(SHARED / r["image"]).convert("RGB") for r in rows[:n_images]]
        texts = [c for r in rows for c in r["captions"]][:n_texts]
        if len(images) == n_images and len(texts) == n_texts:
            return images, texts
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)) for _ in range(n_images)]
    texts = [f"many buildings and {i} green trees are around a parking lot" for i in range(n_texts)]
    return images, texts


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(specs: list[str], threads: int, batch: int, n_images: int, n_texts: int, repeats: int,
            precisions: tuple[str, ...] = ("auto",)) -> dict:
    """Images/s and texts/s of each encoder spec (in each precision) on the same inputs, best of ``repeats``.

    The arms take turns within each repeat, so load from other jobs on a shared machine hits all alike. An arm
    is named by its spec, followed by ``@precision`` when several precisions are measured.
    """
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from rsrag.tools.encoders import load_encoder

    images, texts = _inputs(n_images, n_texts)
    encs = {(spec if len(precisions) == 1 else f"{spec}@{p}"): load_encoder(spec, device="cpu", batch_size=batch, precision=p)
            for spec in specs for p in precisions}
    tensors, prep = {}, {}
    for spec, enc in encs.items():
        prep[spec] = n_images / _timed(lambda: tensors.__setitem__(spec, torch.stack([enc.preprocess(im) for im in images])))
        enc.encode_image_tensors(tensors[spec][:batch])  # warm-up
        enc.encode_texts(texts[:batch])
    best = {spec: {"img": float("inf"), "txt": float("inf")} for spec in encs}
    for _ in range(repeats):
        for spec, enc in encs.items():
            best[spec]["img"] = min(best[spec]["img"], _timed(lambda: enc.encode_image_tensors(tensors[spec])))
            best[spec]["txt"] = min(best[spec]["txt"], _timed(lambda: enc.encode_texts(texts)))
    out: dict = {"threads": threads, "batch": batch, "n_images": n_images, "n_texts": n_texts, "encoders": {}}
    vectors = {spec: enc.encode_image_tensors(tensors[spec]) for spec, enc in encs.items()}
    for spec, enc in encs.items():
        out["encoders"][spec] = {
            "id": enc.id,
            "image_size": enc.image_size,
            "precision": enc.precision,
            "images_per_s": round(n_images / best[spec]["img"], 2),
            "texts_per_s": round(n_texts / best[spec]["txt"], 2),
            "preprocess_per_s": round(prep[spec], 1),
        }
        ref = next((k for k in encs if encs[k].id == enc.id and encs[k].precision == "float32"), None)
        if ref is not None and len(precisions) > 1:
            agree = (vectors[ref] * vectors[spec]).sum(axis=1)
            out["encoders"][spec]["cosine_to_float32"] = {"min": round(float(np.min(agree)), 5), "mean": round(float(np.mean(agree)), 5)}
            out["encoders"][spec]["images_vs_float32"] = round(best[ref]["img"] / best[spec]["img"], 2)
    base = out["encoders"].get("ViT-B-32:random")
    if base:
        for rec in out["encoders"].values():
            rec["images_vs_vit_b32"] = round(rec["images_per_s"] / base["images_per_s"], 2)
            rec["texts_vs_vit_b32"] = round(rec["texts_per_s"] / base["texts_per_s"], 2)
    return out


def main() -> None:
    from rsrag.tools.encoders.runtime import tune_cpu_runtime

    tune_cpu_runtime()  # the encoder runtime the rsrag command sets, before torch is loaded
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", nargs="+", default=["rsrag-lit", "ViT-B-32:random"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["auto"], help="encoder.precision values to measure (arms)")
    parser.add_argument("--malloc-compare", action="store_true", help="run default and tuned glibc malloc settings")
    parser.add_argument("--rounds", type=int, default=2, help="alternating default/tuned rounds (best of each kept)")
    args = parser.parse_args()
    if not args.malloc_compare:
        print(json.dumps(measure(args.specs, args.threads, args.batch, args.images, args.texts, args.repeats,
                                 tuple(args.precisions))))
        return
    results = {}
    base_env = {k: v for k, v in os.environ.items() if k not in TUNED_MALLOC}
    child = [sys.executable, __file__, "--threads", str(args.threads), "--batch", str(args.batch), "--images",
             str(args.images), "--texts", str(args.texts), "--repeats", str(args.repeats), "--specs", *args.specs]
    for _ in range(args.rounds):  # alternate, so drifting load on a shared machine hits both alike
        for name, env in (("default", base_env), ("tuned", {**base_env, **TUNED_MALLOC})):
            done = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            results.setdefault(f"{name}_rounds", []).append(run)
            best = results.get(name)
            if best is None:
                results[name] = copy.deepcopy(run)
            else:
                for spec, rec in run["encoders"].items():
                    for key in ("images_per_s", "texts_per_s"):
                        best["encoders"][spec][key] = max(best["encoders"][spec][key], rec[key])
    results["tuned_env"] = TUNED_MALLOC
    for spec in args.specs:
        d, t = results["default"]["encoders"][spec], results["tuned"]["encoders"][spec]
        results.setdefault("tuned_vs_default", {})[spec] = {
            "images": round(t["images_per_s"] / d["images_per_s"], 3), "texts": round(t["texts_per_s"] / d["texts_per_s"], 3)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
