"""``rsrag encoder ...``: train the offline encoder's heads on your own chips; inspect an encoder spec."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rsrag.agent.interfaces.cli.app import app, console

encoder_app = typer.Typer(help="Train and inspect encoders.", no_args_is_help=True)
app.add_typer(encoder_app, name="encoder")


def _progress() -> Progress:
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
    tower: str = typer.Option("effnet-lite0", "--tower", help="Image tower: effnet-lite0, effnet-lite1, effnet-lite2."),
    dim: int = typer.Option(256, "--dim", help="Dimension of the shared embedding space."),
    image_proj: str = typer.Option("mlp", "--image-proj", help="Image head: linear or mlp."),
    text_proj: str = typer.Option("mlp", "--text-proj", help="Text head: linear or mlp."),
    epochs: int = typer.Option(20, "--epochs", min=1),
    batch_size: int = typer.Option(512, "--batch-size", min=2),
    lr: float = typer.Option(1e-3, "--lr"),
    weight_decay: float = typer.Option(0.1, "--weight-decay"),
    class_prompt_prob: float = typer.Option(0.2, "--class-prompt-prob", help="Share of steps pairing an image with a class prompt."),
    views: str = typer.Option("id", "--views", help="Comma-separated cached views: id, hflip, rot90, rot270."),
    seed: int = typer.Option(0, "--seed"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fixed class-stratified share held out (never trained on)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Feature cache folder (default: user cache dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the validation metrics as one JSON object."),
) -> None:
    """Train the projection heads of the offline LiT encoder on captioned or class-labelled chips."""
    from rsrag.tools.captioned import read_chips, split_chips
    from rsrag.tools.encoders.features import VIEWS
    from rsrag.tools.encoders.lit import LitConfig, build_lit_model
    from rsrag.tools.training.train import TrainConfig, compute_features, evaluate_features, save_trained, train_heads
    from rsrag.tools.errors import ConfigError

    view_list = tuple(v.strip() for v in views.split(",") if v.strip())
    bad = [v for v in view_list if v not in VIEWS] + [p for p in (image_proj, text_proj) if p not in ("linear", "mlp")]
    if bad or not view_list:
        raise ConfigError(f"invalid --views/--image-proj/--text-proj value(s): {bad or views!r}")
    lit_cfg = LitConfig(image_tower=tower, embed_dim=dim, image_proj=image_proj, text_proj=text_proj)
    lit_cfg.tower  # validates the tower name  # noqa: B018
    train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                            class_prompt_prob=class_prompt_prob, views=view_list, seed=seed)
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
        etask = bar.add_task("training heads", total=epochs, info="")
        train_heads(fs, train_rows, lit_cfg, train_cfg, model,
                    progress=lambda e, loss: bar.update(etask, completed=e, info=f"loss {loss:.3f}"))
    report = evaluate_features(model, fs, val_rows, f"rsrag-lit:{out}") if val_rows else None
    save_trained(out, model, lit_cfg, train_cfg, data, len(train_rows), report)
    if as_json:
        print(json.dumps({"out": str(out), "spec": f"rsrag-lit:{out}", **(report.metrics if report else {})}))
        return
    if report is not None:
        console.print("validation: " + ", ".join(f"{k} {v:.1f}" for k, v in report.metrics.items()))
    console.print(f"wrote {out}; use it with --encoder rsrag-lit:{out}")


@encoder_app.command("info")
def info(
    spec: str = typer.Argument("rsrag-lit", help="Encoder spec (see `rsrag.tools.encoders.spec`)."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Load an encoder and print its id, dimension and input size."""
    from rsrag.tools.encoders import load_encoder

    enc = load_encoder(spec, device=device)
    print(json.dumps({"spec": spec, "id": enc.id, "dim": enc.dim, "image_size": enc.image_size}))
