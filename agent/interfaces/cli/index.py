"""``rsrag index IMAGE``: fill (or resume) a scene's index ahead of time, with progress.

With the default pyramid tiling every level is filled, coarsest first (one progress bar per level); a flat
tiling (``--tiling vit:448``, ``grid:256:overlap=0.5``...) is built as one index. Both are resumable: re-run
after an interruption to continue; a no-op when complete. :func:`index_progress` is the rich display the
other commands (``ask``, ``chat``) use for the windows a search encodes and for a background fill.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli.app import app, console, state

if TYPE_CHECKING:
    from rich.console import Console

    from rsrag.agent.settings import Settings
    from rsrag.tools.scene_cache import SceneCache
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.indexing import IndexProgress, IndexReport
    from rsrag.tools.pyramid import PyramidReport

STAGES = {"index": "indexing", "descend": "search encodes", "fill": "background fill"}


def load_cli_encoder(settings: Settings) -> Encoder:
    """The encoder the settings name (``encoder.spec``, ``None``: the bundled offline encoder; its batch size,
    device and precision), loaded on first use: an indexed image is found by the encoder's id without loading the model."""
    from rsrag.tools.encoders import lazy_encoder

    e = settings.encoder
    return lazy_encoder(e.spec, batch_size=e.batch_size, device=e.device, precision=e.precision)


@contextlib.contextmanager
def index_progress(out: Console | None = None, *, enabled: bool = True, transient: bool = False,
                   label: str = "") -> Iterator[Callable[[IndexProgress], None]]:
    """A rich progress display for indexing progress events; yields the callback to give the indexer.

    One bar per (stage, pyramid level): ``indexing L2 896px`` for ``rsrag index``, ``search encodes L3
    448px`` for the windows a search visits, ``background fill L4 224px`` for a fill. Thread-safe. Nothing
    is drawn until there is work: a level already complete gets no bar, a no-op run prints no bar at all.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} windows/s"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    lock = threading.Lock()
    bar = Progress(*columns, console=out or console, disable=not enabled, transient=transient)
    tasks: dict[tuple[str, int | None], int] = {}
    started = False

    def on_progress(p: IndexProgress) -> None:
        nonlocal started
        key = (p.stage, p.level)
        with lock:
            if key not in tasks:
                if p.encoded == 0 and p.done >= p.total:
                    return  # this stage and level has nothing left to do: no bar (a no-op draws nothing)
                if not started:
                    bar.start()
                    started = True
                where = f" L{p.level}/{p.levels}" if p.level is not None else ""
                name = f"{STAGES.get(p.stage, p.stage)}{where} {label}".rstrip()
                tasks[key] = bar.add_task(name, total=p.total, rate=0.0)
            bar.update(tasks[key], completed=p.done, total=p.total, rate=p.rate)

    try:
        yield on_progress
    finally:
        if started:
            bar.stop()


def run_index(image: Path, encoder: Encoder, tiling: str, store: Path | None, batch_size: int, readers: int | None,
              wait: bool, show_progress: bool, sample: int | None = None,
              cache: SceneCache | None = None) -> IndexReport | PyramidReport:
    """Index ``image`` with a rich progress display: every level of a pyramid, or one flat index. With a
    scene ``cache``, a PNG, JPEG, striped TIFF... is converted into it first (with its own progress bar)."""
    from rsrag.agent.interfaces.cli.cache import conversion_progress
    from rsrag.tools.indexing import index_scene
    from rsrag.tools.pyramid import DEFAULT_SAMPLE, build_index, is_pyramid
    from rsrag.tools.raster import open_scene
    from rsrag.tools.store import open_store

    with conversion_progress(console, enabled=show_progress) as on_convert:
        scene = open_scene(image, cache=cache, progress=on_convert)
    try:
        with index_progress(enabled=show_progress, label=image.name) as on_progress:
            if is_pyramid(tiling):
                return build_index(scene, encoder, tiling, open_store(store), batch_size=batch_size, readers=readers,
                                   progress=on_progress, sample=sample or DEFAULT_SAMPLE)
            return index_scene(scene, encoder, tiling, open_store(store), batch_size=batch_size, readers=readers,
                               wait=wait, progress=on_progress)
    finally:
        scene.close()


@app.command("index")
def index_command(
    images: list[Path] = typer.Argument(None, help="Image files (GeoTIFF, COG, VRT, JPEG, PNG...) or URLs (https://, s3://, gs://, az://)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    tiling: str | None = typer.Option(None, "--tiling", help="pyramid (default: settings, store.tiling) or a flat tiling, e.g. vit:448, grid:512:overlap=0.25:scales=1,2, cc."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store or the user data dir)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Patches per encoder call (default: settings, 8)."),
    readers: int | None = typer.Option(None, "--readers", min=1, help="Reader threads decoding patches (default: half the cores, 1-4)."),
    wait: bool = typer.Option(False, "--wait", help="If another process is indexing this image, wait for it."),
    catalog: str | None = typer.Option(None, "--catalog", "-c", help="Index every scene of this catalog (see `rsrag catalog`)."),
    ray: str | None = typer.Option(None, "--ray", help="Index on Ray: 'auto' (a running cluster, else a local instance), 'local', or a cluster address."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="With --ray: encoder actors (default: one per CPU of the cluster)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (no progress bar)."),
) -> None:
    """Fill scenes' indexes ahead of time: every pyramid level, or a flat tiling (resumable; no-op when done).
    Several images, or a whole catalog, can be given; ``--ray`` spreads the work over a Ray cluster."""
    from rsrag.tools.errors import QueryError

    settings = state.settings(**{"encoder.spec": encoder, "store.tiling": tiling, "store.path": store,
                                 "encoder.batch_size": batch_size})
    sources = [str(i) for i in images or []]
    if catalog is not None:
        from rsrag.agent.interfaces.cli.catalog import open_catalog

        sources += [s.source for s in open_catalog(store, catalog).scenes()]
    if not sources:
        raise QueryError("name the images to index (or --catalog NAME for every scene of a catalog)")
    if workers is not None and ray is None:
        raise QueryError("--workers needs --ray (the in-process indexer uses --readers threads)")
    if ray is not None:
        _index_on_ray(sources, ray, workers, settings, as_json)
        return
    enc = load_cli_encoder(settings)
    for source in sources:
        report = run_index(Path(source), enc, settings.store.tiling, settings.store_path, settings.encoder.batch_size,
                           readers, wait, show_progress=not as_json, sample=settings.pyramid.sample,
                           cache=settings.scene_cache())
        _print_report(report, as_json)


def _index_on_ray(sources: list[str], address: str, workers: int | None, settings: Settings, as_json: bool) -> None:
    """``rsrag index --ray``: every scene's index filled by encoder actors on a Ray cluster, one bar for all."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from rsrag.tools.ray_indexing import index_on_ray, start_ray

    how = start_ray(address)
    if not as_json:
        from rsrag.agent.interfaces.cli.app import err_console

        err_console.print(f"ray: {how}", highlight=False)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[scenes]}"), TextColumn("{task.fields[rate]:.1f} windows/s"), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=as_json) as bar:
        task = bar.add_task(f"indexing {len(sources)} scenes on Ray", total=None, scenes="", rate=0.0)
        reports = index_on_ray(
            sources, store=settings.store_path, encoder=settings.encoder.spec, tiling=settings.store.tiling,
            device=settings.encoder.device, batch_size=settings.encoder.batch_size, precision=settings.encoder.precision,
            workers=workers,
            progress=lambda p: bar.update(task, completed=p.done, total=p.total, rate=p.rate,
                                          scenes=f"{p.scenes_done}/{p.scenes} scenes"),
        )
    for source, report in zip(sources, reports):
        if as_json:
            print(json.dumps({"source": source, **report.model_dump(mode="json")}))
        else:
            what = "already indexed" if report.no_op else f"indexed {report.encoded} windows"
            console.print(f"{Path(source).name}: {what} ({report.info.tiling}, {report.info.encoder})", highlight=False)


def _print_report(report: IndexReport | PyramidReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.model_dump(mode="json")))
        return
    from rsrag.tools.pyramid import PyramidReport

    if isinstance(report, PyramidReport):
        levels = ", ".join(f"L{s.level} {s.window}px {s.windows}" for s in report.levels)
        if report.no_op:
            console.print(f"already indexed: {report.n_patches} windows in {len(report.levels)} levels ({levels}); "
                          "nothing to do", highlight=False)
        else:
            resumed = f", {report.skipped} kept from earlier runs and searches" if report.skipped else ""
            console.print(f"indexed {report.encoded} windows in {report.seconds:.1f} s ({report.patches_per_s:.1f} "
                          f"windows/s){resumed}; pyramid {report.pyramid}: {levels}", highlight=False)
        return
    info = report.info
    if report.no_op:
        console.print(f"already indexed: {info.n_patches} patches ({info.tiling}, {info.encoder}); nothing to do")
    else:
        resumed = f", {report.skipped} kept from an earlier run" if report.skipped else ""
        console.print(f"indexed {report.encoded} patches in {report.seconds:.1f} s "
                      f"({report.patches_per_s:.1f} patches/s){resumed}; index {info.key}")
