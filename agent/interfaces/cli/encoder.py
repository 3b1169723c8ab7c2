"""``rsrag encoder ...``: train the offline encoder's heads on your own chips; inspect an encoder spec."""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli.app import app, console, state

if TYPE_CHECKING:
    from rich.progress import Progress

encoder_app = typer.Typer(help="Train and inspect encoders.", no_args_is_help=True)
app.add_typer(encoder_app, name="encoder")


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


def default_cache_dir() -> Path:
    """Where frozen-tower features are cached (outside the data folder and the repository)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("rsrag")) / "features"


@encoder_app.command("train")
def train(
    data: Path = typer.Argument(..., help="Folder with captions.jsonl (image, class, captions) and the images."),
    out: Path | None = typer.Option(None, "--out", help="Heads file to write (default ./rsrag-lit-<DATA name>.safetensors)."),
    tower: str | None = typer.Option(None, "--tower", help="Image tower: effnet-lite0, effnet-lite1, effnet-lite2."),
    image_size: int | None = typer.Option(None, "--image-size", min=0, help="Input side in pixels (0: the tower's native size)."),
    taps: str | None = typer.Option(None, "--taps", help="Comma-separated trunk outputs the image head reads: s2..s6 (stages), head."),
    dim: int | None = typer.Option(None, "--dim", help="Dimension of the shared embedding space."),
    image_proj: str | None = typer.Option(None, "--image-proj", help="Image head: linear or mlp."),
    text_proj: str | None = typer.Option(None, "--text-proj", help="Text head: linear or mlp."),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    text_epochs: int | None = typer.Option(None, "--text-epochs", min=0, help="Epochs of the text head alone after training both heads (the image head kept)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2),
    lr: float | None = typer.Option(None, "--lr"),
    weight_decay: float | None = typer.Option(None, "--weight-decay"),
    class_prompt_prob: float | None = typer.Option(None, "--class-prompt-prob", help="Share of steps pairing an image with a class prompt."),
    class_weight: float | None = typer.Option(None, "--class-weight", help="Weight of the class-supervised term (0: off)."),
    image_dropout: float | None = typer.Option(None, "--image-dropout", help="Dropout on the frozen image features."),
    text_dropout: float | None = typer.Option(None, "--text-dropout", help="Dropout on the frozen text features."),
    views: str | None = typer.Option(None, "--views", help="Comma-separated cached views: id, hflip, vflip, rot90, rot180, rot270, transpose, transverse."),
    view_mode: str | None = typer.Option(None, "--view-mode", help="sample: a random view per image and step; mean: the mean over views."),
    seed: int | None = typer.Option(None, "--seed"),
    hub_bank: int | None = typer.Option(None, "--hub-bank", help="Training captions in the hub bank of the window vectors (0: no hub correction)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fixed class-stratified share held out (never trained on)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Feature cache folder (default: user cache dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the validation metrics as one JSON object."),
) -> None:
    """Train the projection heads of the offline LiT encoder on captioned or class-labelled chips.

    Every option left out takes the bundled heads' recipe: `rsrag encoder train ../shared/data/aid-rsicd` reproduces
    them (see BENCHMARKS.md, Encoder).
    """
    from dataclasses import replace

    from rsrag.tools.captioned import read_chips, split_chips
    from rsrag.tools.encoders.features import VIEWS
    from rsrag.tools.encoders.lit import TAPS, LitConfig, build_lit_model
    from rsrag.tools.training.evaluate import TrainingRecord
    from rsrag.tools.training.train import TrainConfig, compute_features, evaluate_features, fit_hub, save_trained, train_heads
    from rsrag.tools.errors import ConfigError

    def given(**kw: object) -> dict[str, object]:  # options left out keep the bundled recipe's value
        return {k: v for k, v in kw.items() if v is not None}

    split_list = lambda text: None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())  # noqa: E731
    view_list, tap_list = split_list(views), split_list(taps)
    bad = ([v for v in view_list or () if v not in VIEWS] + [t for t in tap_list or () if t not in TAPS]
           + [p for p in (image_proj, text_proj) if p not in (None, "linear", "mlp")])
    if bad or view_list == () or tap_list == ():
        raise ConfigError(f"invalid --views/--taps/--image-proj/--text-proj value(s): {bad or (views, taps)!r}")
    try:
        lit_cfg = replace(LitConfig(), **given(image_tower=tower, embed_dim=dim, image_proj=image_proj,
                                               text_proj=text_proj, image_size=image_size, taps=tap_list))
        lit_cfg.tower  # validates the tower name  # noqa: B018
        train_cfg = replace(TrainConfig(), **given(
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, class_prompt_prob=class_prompt_prob,
            views=view_list, view_mode=view_mode, image_dropout=image_dropout, text_dropout=text_dropout,
            class_weight=class_weight, seed=seed, hub_bank=hub_bank, text_epochs=text_epochs))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    epochs, seed, view_list = train_cfg.epochs, train_cfg.seed, train_cfg.views
    out = out or Path(f"rsrag-lit-{data.resolve().name}.safetensors")
    chips = read_chips(data)
    train_chips, val_chips = split_chips(chips, val_fraction)
    pos = {c.image: i for i, c in enumerate(chips)}
    train_rows, val_rows = [pos[c.image] for c in train_chips], [pos[c.image] for c in val_chips]
    console.print(f"{len(chips)} chips: {len(train_rows)} train, {len(val_rows)} validation (held out)")
    model = build_lit_model(lit_cfg, seed=seed)
    with _progress() as bar:
        n_texts = len({t for c in chips for t in c.captions}) + 3 * len({c.label for c in chips if c.label})
        task = bar.add_task("frozen-tower features", total=n_texts + len(chips) * len(view_list), info="(cached on disk)")
        fs = compute_features(model, lit_cfg, chips, cache_dir or default_cache_dir(), view_list,
                              progress=lambda n: bar.advance(task, n))
        bar.update(task, completed=bar.tasks[task].total)
        etask = bar.add_task("training heads", total=epochs + train_cfg.text_epochs, info="")
        train_heads(fs, train_rows, lit_cfg, train_cfg, model,
                    progress=lambda e, loss: bar.update(etask, completed=e, info=f"loss {loss:.3f}"))
    hub = fit_hub(model, fs, train_rows, train_cfg)
    report = evaluate_features(model, fs, val_rows, f"rsrag-lit:{out}", hub=hub) if val_rows else None
    save_trained(out, model, lit_cfg, train_cfg, data, TrainingRecord.of(chips, train_chips, val_fraction), report, hub=hub)
    if as_json:
        print(json.dumps({"out": str(out), "spec": f"rsrag-lit:{out}", **(report.metrics if report else {})}))
        return
    if report is not None:
        console.print("validation: " + ", ".join(f"{k} {v:.1f}" for k, v in report.metrics.items()))
    console.print(f"wrote {out}; use it with --encoder rsrag-lit:{out}")


@encoder_app.command("info")
def info(
    spec: str | None = typer.Argument(None, help="Encoder spec (see `rsrag.tools.encoders.spec`; default: settings, encoder.spec)."),
    device: str | None = typer.Option(None, "--device", help="Torch device (default: settings, encoder.device)."),
) -> None:
    """Load an encoder and print its id, dimension, input size and the window vectors' hub bank."""
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.encoders.hubness import hub_of, index_dim
    from rsrag.tools.encoders.spec import DEFAULT_SPEC

    settings = state.settings(**{"encoder.spec": spec, "encoder.device": device}).encoder
    spec = settings.spec or DEFAULT_SPEC
    enc = load_encoder(spec, device=settings.device, batch_size=settings.batch_size, precision=settings.precision)
    hub = hub_of(enc)
    print(json.dumps({"spec": spec, "id": enc.id, "dim": enc.dim, "image_size": enc.image_size,
                      "index_dim": index_dim(enc), "hub_bank": 0 if hub is None else int(hub.bank.shape[0]),
                      "hub_beta": None if hub is None else hub.beta}))


@encoder_app.command("calibrate")
def calibrate(
    data: Path = typer.Argument(..., help="Folder with captions.jsonl and class-labelled chips: the training split fits, the validation split checks."),
    spec: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, encoder.spec)."),
    bundled: bool = typer.Option(False, "--bundled", help="Write the calibration shipped with rsrag (tools/encoders/weights/presence.json) instead of the user's file under RSRAG_HOME."),
    out: Path | None = typer.Option(None, "--out", help="Calibration file to write (wins over --bundled)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Where window embeddings are cached (default: RSRAG_HOME/calibration/cache)."),
    per_class: int = typer.Option(60, "--per-class", min=1, help="Training chips per class used as single-chip windows."),
    mosaics: int = typer.Option(1600, "--mosaics", min=0, help="Training windows cut from chip mosaics."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored record's thresholds and metrics as one JSON object."),
) -> None:
    """Fit the encoder's presence calibration (what `finding` found / not_found / uncertain is judged by).

    Deterministic for a folder and an encoder: rerun it whenever the encoder's weights change (a
    calibration is keyed by encoder id; a stale one makes every finding 'uncertain').
    """
    from rsrag.tools.calibration import (
        BUNDLED_FILE, FitConfig, clear_presence_cache, fit_calibration, home_file, save_calibration,
    )
    from rsrag.agent.interfaces.cli.index import load_cli_encoder

    encoder = load_cli_encoder(state.settings(**{"encoder.spec": spec}))
    target = out or (BUNDLED_FILE if bundled else home_file())
    cache = cache_dir or home_file().parent / "cache"
    bar = _progress()
    bar.disable = as_json  # stdout carries only the JSON object
    with bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="(cached per encoder)")
            bar.update(tasks[stage], completed=done)  # type: ignore[arg-type]

        config = FitConfig(per_class=per_class, n_mosaics=mosaics, val_mosaics=min(FitConfig().val_mosaics, mosaics))
        record = fit_calibration(encoder, data, config=config, cache_dir=cache, progress=progress)
    path = save_calibration(record, target)
    clear_presence_cache()
    if path == BUNDLED_FILE:  # the shipped text vectors embed the calibration's vocabulary: rebuild them
        from rsrag.tools.encoders.identity import DEFAULT_HEADS
        from rsrag.tools.encoders.text_table import bundled_texts, write_text_table

        write_text_table(DEFAULT_HEADS, bundled_texts())
    summary = {"file": str(path), "encoder": record.encoder, "found_at": round(record.found_at, 4),
               "site_at": round(record.site_at, 4), "not_found_below": round(record.not_found_below, 4),
               **record.metrics}
    if as_json:
        print(json.dumps(summary))
        return
    console.print(f"presence calibration for {record.encoder}: found at >= {record.found_at:.3f} "
                  f"(further sites >= {record.site_at:.3f}), not found below {record.not_found_below:.3f}")
    console.print("checks: " + ", ".join(f"{k} {v:.3f}" for k, v in record.metrics.items()))
    console.print(f"wrote {path}")
