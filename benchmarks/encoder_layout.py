"""Benchmark: memory layout of the image batch (contiguous NCHW vs channels-last) for an encoder, same process.

Run:  .venv/bin/python benchmarks/encoder_layout.py [--spec rsrag-lit] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rsrag.tools.encoders.runtime import tune_cpu_runtime

tune_cpu_runtime()  # the encoder runtime the rsrag command sets, before torch is loaded
import torch  # noqa: E402

from rsrag.tools.encoders import load_encoder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    enc = load_encoder(args.spec, batch_size=args.batch)
    rng = np.random.default_rng(0)
    batch = torch.stack([enc.preprocess(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)) for _ in range(args.batch)])
    model = enc.model
    rates: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    with torch.inference_mode():
        for _ in range(args.repeats):  # alternate the two layouts so drift hits both
            for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
                x = batch.contiguous(memory_format=fmt)
                model.encode_image(x)
                t0 = time.perf_counter()
                model.encode_image(x)
                rates[name].append(args.batch / (time.perf_counter() - t0))
    best = {k: round(max(v), 1) for k, v in rates.items()}
    print(json.dumps({"encoder": enc.id, "images_per_s_best": best,
                      "channels_last_over_contiguous": round(best["channels_last"] / best["contiguous"], 2)}))


if __name__ == "__main__":
    main()
