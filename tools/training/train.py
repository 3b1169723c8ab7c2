"""Training the LiT projection heads on a folder of captioned or class-labelled chips.

Both towers stay frozen, so their features are computed once (:mod:`rsrag.tools.encoders.features`) and
training runs on cached features: an epoch over ~8,000 chips takes seconds on two cores.
Loss: symmetric InfoNCE with a learnable temperature (open_clip's ``logit_scale``). Each step pairs every
image with one of its texts (a caption, or with probability ``class_prompt_prob`` a class prompt); when
several images in a batch drew the same text, all of them count as positives for it (soft targets), so
repeated captions and class prompts are not treated as negatives. Optional, for generalisation: each image
is seen through a random one of several cached views (flips, rotations) or their mean, dropout on the
frozen features the heads read, and a class-supervised term (``class_weight``): every image classified
against all class-prompt embeddings, with the same temperature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rsrag.tools.captioned import Chip, class_prompts
from rsrag.tools.training.evaluate import RetrievalReport, TrainingRecord, class_embeddings_from, evaluate_embeddings
from rsrag.tools.encoders.features import image_features, text_features
from rsrag.tools.encoders.hubness import HubCorrection, fit_hub_correction
from rsrag.tools.encoders.lit import LitConfig, LitTokenizer, build_lit_model, head_state, save_heads
from rsrag.tools.encoders.towers import text_tower_dir
from rsrag.tools.errors import DataError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the defaults are the ones the bundled heads were trained with).

    Cross-validated (BENCHMARKS.md, Encoder): ``epochs=40`` raises the held-out-templates mR from 25.2 to 26.7
    on every fold, but its presence calibration answers fewer absent scenes "not found" (0.85 against 0.93),
    so both heads train 20 epochs; then the text head alone trains ``text_epochs`` more (image head kept:
    windows are stored as before), which raises the templates mR from 26.2 to 27.2 on every fold. Presence
    verdicts keep the text head of the first phase (stored as ``presence.proj.*``): with the longer-trained
    one the analyst benchmark's precision fell from 0.83 to 0.49.
    """

    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_epochs: int = 2
    class_prompt_prob: float = 0.2
    views: tuple[str, ...] = ("id", "rot90")
    view_mode: str = "sample"
    image_dropout: float = 0.2
    text_dropout: float = 0.1
    class_weight: float = 0.5
    soup: int = 1
    seed: int = 0
    hub_bank: int = 2000
    hub_beta: float = 15.0
    text_epochs: int = 40

    def __post_init__(self) -> None:
        if self.view_mode not in ("sample", "mean"):
            raise DataError(f"view_mode must be 'sample' or 'mean', got {self.view_mode!r}")
        if self.soup < 1:
            raise DataError(f"soup must be >= 1, got {self.soup}")
        if self.text_epochs < 0:
            raise DataError(f"text_epochs must be >= 0, got {self.text_epochs}")
        for name in ("image_dropout", "text_dropout", "class_prompt_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise DataError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class FeatureSet:
    """Cached frozen-tower features of one data folder."""

    chips: list[Chip]
    image: np.ndarray  # (n_views, n_chips, F_img)
    texts: list[str]
    text: np.ndarray  # (n_texts, F_txt)
    chip_texts: list[list[int]] = field(default_factory=list)  # caption text ids per chip
    chip_prompts: list[list[int]] = field(default_factory=list)  # class-prompt text ids per chip
    views: tuple[str, ...] = ("id",)  # the view of each row of ``image`` (``id`` first)


def corpus_texts(chips: list[Chip]) -> list[str]:
    """All distinct captions and class prompts of ``chips``, sorted (the text-feature cache key depends on it)."""
    return sorted({t for c in chips for t in c.captions} | {p for c in chips if c.label for p in class_prompts(c.label)})


def compute_features(
    model: torch.nn.Module,
    cfg: LitConfig,
    chips: list[Chip],
    cache_dir: Path,
    views: tuple[str, ...] = ("id",),
    progress: Callable[[int], None] | None = None,
) -> FeatureSet:
    """Frozen-tower features of every chip (for each view) and of every distinct text, cached on disk."""
    texts = corpus_texts(chips)
    index = {t: i for i, t in enumerate(texts)}
    tokenizer = LitTokenizer(text_tower_dir(), cfg.context_length)
    txt = text_features(model, tokenizer, texts, cache_dir, cfg.context_length, progress=progress)
    paths = [c.image for c in chips]
    views = ("id", *[v for v in views if v != "id"])  # evaluation reads the identity view, row 0
    img = np.stack([image_features(model, cfg, paths, cache_dir, view=v, progress=progress) for v in views])
    return FeatureSet(
        chips=chips,
        image=img,
        texts=texts,
        text=txt,
        chip_texts=[[index[t] for t in c.captions] for c in chips],
        chip_prompts=[[index[p] for p in class_prompts(c.label)] if c.label else [] for c in chips],
        views=views,
    )


def _heads(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Parameter]:
    return model.visual.head, model.text.proj, model.logit_scale


def project(model: torch.nn.Module, img: np.ndarray | None, txt: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Apply the heads to cached features; returns unit rows (None passes through)."""
    vhead, thead, _ = _heads(model)
    with torch.inference_mode():
        out = []
        for feats, head in ((img, vhead), (txt, thead)):
            out.append(None if feats is None else F.normalize(head(torch.from_numpy(feats)), dim=-1).numpy())
    return out[0], out[1]


def evaluate_features(model: torch.nn.Module, fs: FeatureSet, rows: list[int], encoder_id: str,
                      hub: HubCorrection | None = None) -> RetrievalReport:
    """Retrieval metrics of ``model`` (with its hub correction, when given) on the chips ``rows`` of ``fs``
    (view ``id``), from cached features."""
    chips = [fs.chips[i] for i in rows]
    text_ids = [t for i in rows for t in fs.chip_texts[i]]
    img, txt = project(model, fs.image[0][rows], fs.text[text_ids] if text_ids else None)
    _, all_txt = project(model, None, fs.text)
    class_emb = class_embeddings_from({t: all_txt[i] for i, t in enumerate(fs.texts)}, [c.label for c in chips])
    return evaluate_embeddings(img, chips, txt, class_emb, encoder_id, hub=hub)


def fit_hub(model: torch.nn.Module, fs: FeatureSet, train_rows: list[int], cfg: TrainConfig) -> HubCorrection | None:
    """The hub correction of trained heads (:mod:`rsrag.tools.encoders.hubness`): a bank of ``cfg.hub_bank``
    training chips, one of each one's texts (a caption, or a class prompt for chips without captions), drawn
    with ``cfg.seed``; centred on the training images. ``None`` when ``cfg.hub_bank`` is 0."""
    rows = [i for i in train_rows if fs.chip_texts[i] or fs.chip_prompts[i]]
    if cfg.hub_bank <= 0 or not rows:
        return None
    gen = np.random.default_rng(cfg.seed)
    bank_rows = gen.choice(np.asarray(rows), size=min(cfg.hub_bank, len(rows)), replace=False)
    texts = [fs.chip_texts[i] or fs.chip_prompts[i] for i in bank_rows]
    text_ids = [t[int(gen.integers(len(t)))] for t in texts]
    img, bank = project(model, fs.image[0][train_rows], fs.text[text_ids])
    assert img is not None and bank is not None
    return fit_hub_correction(img, bank, beta=cfg.hub_beta)


def train_heads(
    fs: FeatureSet,
    train_rows: list[int],
    lit_cfg: LitConfig,
    cfg: TrainConfig,
    model: torch.nn.Module | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> torch.nn.Module:
    """Train the heads (and temperature) of a LiT model on cached features.

    Args:
        fs: features from :func:`compute_features`.
        train_rows: chip indices to train on (never the validation split).
        lit_cfg: architecture.
        cfg: optimisation settings.
        model: a model from :func:`build_lit_model` to train in place (built when None).
        progress: called after each epoch with (epoch, mean loss); epochs count on across a soup's members.

    Returns:
        The model (eval mode) with trained heads; with ``cfg.text_epochs`` its ``presence_head`` attribute holds
        the text head of the first phase (the one presence verdicts use; ``None`` otherwise).
    """
    if not train_rows:
        raise DataError("no training chips")
    if all(not fs.chip_texts[i] and not fs.chip_prompts[i] for i in train_rows):
        raise DataError("training chips have neither captions nor class labels")
    model = model if model is not None else build_lit_model(lit_cfg, seed=cfg.seed)
    _, thead, _ = _heads(model)
    if cfg.soup == 1:
        _train_once(fs, train_rows, cfg, model, progress)
    else:
        # a "soup": the same initial heads trained with soup different seeds (data order, text draws, dropout),
        # then their weights averaged (one head's size and cost at run time)
        init = {k: v.clone() for k, v in head_state(model).items()}
        states = []
        for j in range(cfg.soup):
            model.load_state_dict(init, strict=False)
            shifted = None if progress is None else (lambda e, loss, j=j: progress(j * cfg.epochs + e, loss))
            _train_once(fs, train_rows, replace(cfg, seed=cfg.seed + j, soup=1), model, shifted)
            states.append({k: v.clone() for k, v in head_state(model).items()})
        model.load_state_dict({k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}, strict=False)
    model.presence_head = None  # type: ignore[assignment]
    if cfg.text_epochs > 0:
        # a second phase for the text head alone: the image head (what windows are stored as) stays as trained,
        # and the first phase's text head is kept for presence verdicts (``save_trained`` stores both)
        model.presence_head = {k: v.detach().clone() for k, v in thead.state_dict().items()}  # type: ignore[assignment]
        done = cfg.soup * cfg.epochs
        later = None if progress is None else (lambda e, loss: progress(done + e, loss))
        _train_once(fs, train_rows, replace(cfg, epochs=cfg.text_epochs, warmup_epochs=1, seed=cfg.seed + cfg.soup),
                    model, later, image_frozen=True)
    return model.eval()


def _train_once(fs: FeatureSet, train_rows: list[int], cfg: TrainConfig, model: torch.nn.Module,
                progress: Callable[[int, float], None] | None, image_frozen: bool = False) -> torch.nn.Module:
    vhead, thead, scale = _heads(model)
    params = [p for m in ((thead,) if image_frozen else (vhead, thead)) for p in m.parameters()]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1] + [scale]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    gen = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    rows = np.asarray(train_rows)
    steps_per_epoch = max(1, math.ceil(len(rows) / cfg.batch_size))
    total, warm = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    view_rows = [fs.views.index(v) for v in cfg.views if v in fs.views] if cfg.views else [0]
    if len(view_rows) != len(cfg.views):
        raise DataError(f"views {cfg.views} not all in the feature set ({fs.views})")
    img_all = torch.from_numpy(fs.image[view_rows])
    if cfg.view_mode == "mean":
        img_all = img_all.mean(dim=0, keepdim=True)
    txt_all = torch.from_numpy(fs.text)
    classes = sorted({fs.chips[i].label for i in train_rows if fs.chip_prompts[i]})
    use_classes = cfg.class_weight > 0 and len(classes) > 1
    if use_classes:
        class_of = {c: j for j, c in enumerate(classes)}
        prompt_ids = torch.tensor([next(fs.chip_prompts[i] for i in train_rows if fs.chips[i].label == c) for c in classes])
        labels_all = torch.tensor([class_of.get(c.label, -100) for c in fs.chips])  # type: ignore[arg-type]
    vhead.train(not image_frozen), thead.train()
    step = 0
    for epoch in range(cfg.epochs):
        order = gen.permutation(rows)
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            if len(batch) < 2:
                continue
            tids = np.asarray([_pick_text(fs, i, cfg.class_prompt_prob, gen) for i in batch])
            views = gen.integers(0, img_all.shape[0], size=len(batch))
            lr = cfg.lr * (step + 1) / warm if step < warm else 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for g in opt.param_groups:
                g["lr"] = lr
            img_in = img_all[torch.from_numpy(views), torch.from_numpy(batch)]
            if image_frozen:
                with torch.no_grad():
                    img = F.normalize(vhead(img_in), dim=-1)
            else:
                img = F.normalize(vhead(F.dropout(img_in, cfg.image_dropout)), dim=-1)
            txt = F.normalize(thead(F.dropout(txt_all[torch.from_numpy(tids)], cfg.text_dropout)), dim=-1)
            logits = scale.exp() * img @ txt.T
            same = torch.from_numpy(tids[:, None] == tids[None, :]).float()
            target = same / same.sum(dim=1, keepdim=True)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            if use_classes:
                # class prompts through the text head, averaged over the templates as in zero-shot use
                protos = F.normalize(thead(txt_all[prompt_ids.flatten()]), dim=-1).view(*prompt_ids.shape, -1).mean(1)
                class_logits = scale.exp() * img @ F.normalize(protos, dim=-1).T
                loss = loss + cfg.class_weight * F.cross_entropy(class_logits, labels_all[torch.from_numpy(batch)], ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            step += 1
        if progress is not None:
            progress(epoch + 1, float(np.mean(losses)) if losses else float("nan"))
    return model.eval()


def _pick_text(fs: FeatureSet, row: int, prompt_prob: float, gen: np.random.Generator) -> int:
    caps, prompts = fs.chip_texts[row], fs.chip_prompts[row]
    if prompts and (not caps or gen.random() < prompt_prob):
        return int(prompts[gen.integers(len(prompts))])
    return int(caps[gen.integers(len(caps))])


def save_trained(path: Path, model: torch.nn.Module, lit_cfg: LitConfig, cfg: TrainConfig, data: Path,
                 record: TrainingRecord, report: RetrievalReport | None, hub: HubCorrection | None = None) -> Path:
    """Write the trained heads with a record of how, and on what data, they were trained.

    Args:
        path: destination file.
        model: the trained model.
        lit_cfg: its architecture.
        cfg: the optimisation settings used.
        data: the training folder (recorded for people; the fingerprint in ``record`` is what tools compare).
        record: fingerprint of the folder and of the trained images (``rsrag eval retrieval`` reads it).
        report: validation metrics, recorded when given.
        hub: the hub correction (:func:`fit_hub`), stored with the heads.
    """
    info = {"data": str(data), "train_config": repr(cfg), **record.to_metadata()}
    if report is not None:
        info["val_metrics"] = repr({k: round(v, 2) for k, v in report.metrics.items()})
    return save_heads(path, model, lit_cfg, info, hub=hub, presence=getattr(model, "presence_head", None))
