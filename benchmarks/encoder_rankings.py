"""Diagnosis (issue 16): two query-time re-rankings of the bundled heads, cross-validated on the templates folds.

* ``classterm``: score + lam * p(class | text) . p(class | image), p a softmax (``--scales``) over the class-prompt
  embeddings, for text -> image and image -> text;
* ``prf``: pseudo-relevance feedback for text -> image: the query key plus lam times the mean key of its top
  ``--scales`` images (read as integers), searched again.

The bundled recipe is retrained on each fold's training chips exactly as ``encoder_cv.py cv bundled`` does (its
hub correction included), so ``lam 0`` reproduces that command's figure. Needs the feature cache of
``encoder_cv.py features`` (text, id, rot90). Prints per-fold mR and the mean and worst paired difference
against ``lam 0``. Figures: BENCHMARKS.md, "Fifth round (issue 16, tenth session)".

Run:  .venv/bin/python benchmarks/encoder_rankings.py classterm --lams 0 0.02 0.05 0.1 0.2 0.3 --scales 30 100
      .venv/bin/python benchmarks/encoder_rankings.py prf --lams 0 0.25 0.5 1 --scales 3 5 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["classterm", "prf"])
    ap.add_argument("--lams", type=float, nargs="+", required=True)
    ap.add_argument("--scales", type=float, nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from encoder_cv import BASE_LIT, BASE_TRAIN, CACHE, DATA, Features, _embed, _HeadView, _recipe
    from rsrag.tools.captioned import kfold
    from rsrag.tools.encoders.hubness import as_queries
    from rsrag.tools.encoders.lit import LitConfig, build_lit_model, head_state
    from rsrag.tools.training.evaluate import hub_scores, retrieval_metrics
    from rsrag.tools.training.train import TrainConfig, fit_hub, train_heads

    torch.set_num_threads(args.threads)
    feats = Features(DATA, CACHE)
    lit_kw, train_kw, _ = _recipe("bundled")
    cfg = LitConfig(**{**BASE_LIT, **lit_kw})
    tcfg = TrainConfig(**{**BASE_TRAIN, **train_kw})
    fs = feats.get(cfg, tcfg.views)
    model = feats.model(cfg)
    init = head_state(build_lit_model(cfg, seed=tcfg.seed))
    per_fold: list[dict[tuple[float, float], float]] = []
    for f, test in enumerate(kfold(feats.chips, 5, by="templates", seed=0)):
        t0 = time.time()
        held = set(test)
        train_rows = [i for i in range(len(feats.chips)) if i not in held]
        model.load_state_dict(init, strict=False)
        train_heads(fs, train_rows, cfg, tcfg, model)
        view = _HeadView(model, {k: v.clone() for k, v in head_state(model).items()})
        hub = fit_hub(view, fs, train_rows, tcfg)
        perm = np.random.default_rng(f).permutation(len(test))
        scores: dict[tuple[float, float], list[float]] = {}
        for chunk in np.array_split(perm, max(1, round(len(test) / 1000))):  # galleries of ~1,000, as `cv`
            sub = [test[i] for i in sorted(chunk)]
            img, txt, cls = _embed([view], fs, sub, False)
            text_image = np.asarray([j for j, i in enumerate(sub) for _ in feats.chips[i].captions])
            sim = img @ txt.T
            for scale in args.scales:
                for lam in args.lams:
                    if args.kind == "classterm":
                        classes = np.stack([cls[c] for c in sorted(cls)])
                        term = _softmax_rows(scale * img @ classes.T) @ _softmax_rows(scale * txt @ classes.T).T
                        t2i = hub_scores(hub, img, txt)
                        m = retrieval_metrics(sim + lam * term, text_image, t2i_sim=t2i + lam * term)
                    else:
                        keys = hub.keys(img)
                        queries = as_queries(txt, keys.shape[1])
                        top = np.argsort(-(keys @ queries.T), axis=0)[: int(scale)]
                        m = retrieval_metrics(sim, text_image, t2i_sim=keys @ (queries + lam * keys[top].mean(axis=0)).T)
                    scores.setdefault((scale, lam), []).append(m["mR"])
        per_fold.append({k: float(np.mean(v)) for k, v in scores.items()})
        print(f"fold {f} ({time.time() - t0:.0f} s):",
              json.dumps({f"{s:g}/{lam:g}": round(v, 2) for (s, lam), v in per_fold[-1].items()}), flush=True)
    base_lam = min(args.lams)
    print(f"mean mR over folds, and the paired difference against lam {base_lam:g} (mean; worst fold)")
    for scale in args.scales:
        for lam in args.lams:
            diffs = [fold[(scale, lam)] - fold[(scale, base_lam)] for fold in per_fold]
            mean_mr = np.mean([fold[(scale, lam)] for fold in per_fold])
            print(f"scale {scale:g} lam {lam:g}: {mean_mr:.2f}  {np.mean(diffs):+.2f} ({min(diffs):+.2f})")


if __name__ == "__main__":
    main()
