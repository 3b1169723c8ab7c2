"""``rsrag catalog ...``: register an archive of scenes, list and inspect them, export STAC or GeoJSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rsrag.agent.interfaces.cli.app import app, console, err_console, state

if TYPE_CHECKING:
    from rsrag.tools.catalog import Catalog

catalog_app = typer.Typer(name="catalog", help="Scene catalog: add scenes (paths, globs, folders, URLs, STAC), list, show, remove, export.",
                          no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

_STORE = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store).")
_NAME = typer.Option("default", "--catalog", "-c", help="Catalog name; several catalogs can share a store.")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def open_catalog(store: Path | None, name: str) -> Catalog:
    """The catalog ``name`` in the store the options or settings name."""
    from rsrag.tools.catalog import Catalog
    from rsrag.tools.store import open_store

    settings = state.settings(**{"store.path": store})
    return Catalog(open_store(settings.store_path), name=name)


def index_status(catalog: Catalog):  # noqa: ANN201 (a callable fingerprint -> status text)
    """``fingerprint -> "indexed (tiling, encoder)" | "building ..." | "not indexed"`` from the catalog's store."""
    from rsrag.tools.store import PatchStore

    patches = PatchStore(catalog.store)

    def status(fingerprint: str) -> str:
        infos = patches.find(scene=fingerprint, complete_only=False)
        done = [i for i in infos if i.complete]
        if done:
            return "indexed (" + "; ".join(f"{i.tiling}, {i.encoder}" for i in done) + ")"
        return f"building ({infos[0].tiling})" if infos else "not indexed"

    return status


@catalog_app.command("add")
def add_command(
    sources: list[str] = typer.Argument(..., help="Images, glob patterns ('scenes/*.tif'), folders, URLs, or STAC JSON files."),
    store: Path | None = _STORE, name: str = _NAME, as_json: bool = _JSON,
) -> None:
    """Register scenes; a source that cannot be read is reported and the others are still added."""
    catalog = open_catalog(store, name)
    report = catalog.add(sources, progress=None if as_json else (lambda sid: err_console.print(f"  registered {sid}", highlight=False)))
    if as_json:
        print(report.model_dump_json())
    else:
        for source, why in report.failed:
            err_console.print(f"[yellow]skipped[/] {source}: {why}", highlight=False, soft_wrap=True)
        console.print(f"catalog {name!r}: {len(report.added)} added, {len(report.updated)} updated, "
                      f"{len(report.failed)} skipped; {len(catalog.scenes())} scenes in all", highlight=False)
    if report.failed and not report.added and not report.updated:
        raise typer.Exit(2)


@catalog_app.command("list")
def list_command(store: Path | None = _STORE, name: str = _NAME, as_json: bool = _JSON) -> None:
    """List the catalog's scenes with their size, place, time and index status."""
    from rich.table import Table

    catalog = open_catalog(store, name)
    scenes = catalog.scenes()
    status = index_status(catalog)
    if as_json:
        print(json.dumps([{**s.model_dump(exclude={"footprint"}), "index": status(s.fingerprint)} for s in scenes]))
        return
    if not scenes:
        console.print(f"catalog {name!r} is empty: add scenes with `rsrag catalog add PATH|GLOB|URL|STAC.json`")
        return
    table = Table(show_lines=False)
    for col in ("id", "size (px)", "gsd", "lon/lat box", "datetime", "index"):
        table.add_column(col, overflow="fold")
    for s in scenes:
        box = "-" if s.bbox is None else "[{:.4f}, {:.4f}, {:.4f}, {:.4f}]".format(*s.bbox)
        table.add_row(s.id, f"{s.width} x {s.height}", "-" if s.gsd is None else f"{s.gsd:.3g}", box, s.datetime or "-",
                      status(s.fingerprint))
    console.print(table)


@catalog_app.command("show")
def show_command(scene: str = typer.Argument(..., help="Scene id, source or fingerprint."),
                 store: Path | None = _STORE, name: str = _NAME) -> None:
    """Everything the catalog knows about one scene, as JSON."""
    catalog = open_catalog(store, name)
    record = catalog.get(scene)
    print(json.dumps({**record.model_dump(), "index": index_status(catalog)(record.fingerprint)}, indent=1))


@catalog_app.command("remove")
def remove_command(scenes: list[str] = typer.Argument(..., help="Scene ids, sources or fingerprints."),
                   store: Path | None = _STORE, name: str = _NAME) -> None:
    """Remove scenes from the catalog (their patch indexes stay in the store)."""
    removed = open_catalog(store, name).remove(scenes)
    console.print(f"removed {', '.join(removed)}", highlight=False)


@catalog_app.command("export")
def export_command(
    out: Path = typer.Argument(..., help="File to write (.json)."),
    fmt: str = typer.Option("stac", "--format", "-f", help="stac (an ItemCollection) or geojson."),
    store: Path | None = _STORE, name: str = _NAME,
) -> None:
    """Write the catalog as a STAC ItemCollection (the index status as an asset property) or GeoJSON."""
    from rsrag.tools.errors import QueryError

    if fmt not in ("stac", "geojson"):
        raise QueryError(f"--format must be stac or geojson, got {fmt!r}")
    if not out.parent.is_dir():
        raise QueryError(f"cannot write {out}: the folder {out.parent} does not exist")
    catalog = open_catalog(store, name)
    status = index_status(catalog)
    doc = catalog.to_stac(status) if fmt == "stac" else catalog.to_geojson(status)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(out)
    console.print(f"wrote {len(doc['features'])} scenes to {out}", highlight=False)


def _floats(text: str | None, n: int, what: str) -> list[float] | None:
    from rsrag.tools.errors import QueryError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise QueryError(f"{what} needs {n} comma-separated numbers, got {text!r}")
    return values


@catalog_app.command("search")
def search_command(
    text: str = typer.Argument(..., help="A key phrase or a plain question, e.g. 'storage tanks'."),
    phrase: list[str] = typer.Option([], "--phrase", help="Key phrase (repeatable); overrides extraction from TEXT."),
    bbox: str | None = typer.Option(None, "--bbox", help="Only scenes intersecting WEST,SOUTH,EAST,NORTH (degrees)."),
    near: str | None = typer.Option(None, "--near", help="Only scenes within --radius-km of LON,LAT (degrees)."),
    radius_km: float = typer.Option(0.0, "--radius-km", min=0.0, help="Radius around --near, in km (0: scenes containing the point)."),
    since: str | None = typer.Option(None, "--since", help="Only scenes acquired at or after this ISO 8601 time."),
    until: str | None = typer.Option(None, "--until", help="Only scenes acquired at or before this ISO 8601 time."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Sites shown per scene (default: settings, retrieval.top_k)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    store: Path | None = _STORE, name: str = _NAME, as_json: bool = _JSON,
) -> None:
    """Search every indexed scene of the catalog (the retrieval cascade per scene); scenes ranked by their best
    site, each site with its scene's source and fingerprint. Unindexed scenes are listed, not indexed."""
    from rsrag.agent.interfaces.cli import index as index_cli
    from rsrag.tools.calibration import load_presence
    from rsrag.tools.catalog_search import search_catalog
    from rsrag.tools.store import PatchStore

    settings = state.settings(**{"encoder.spec": encoder, "store.path": store, "retrieval.top_k": top_k})
    catalog = open_catalog(store, name)
    point = _floats(near, 2, "--near")
    box = _floats(bbox, 4, "--bbox")
    scenes = catalog.find(bbox=box, point=point, radius_km=radius_km, start=since, end=until)
    if not scenes:
        console.print(f"no scene of catalog {name!r} matches the place and time given")
        return
    enc = index_cli.load_cli_encoder(settings)
    result = search_catalog(catalog, PatchStore(catalog.store), enc, phrases=phrase or None, question=text, scenes=scenes,
                            top_k=settings.retrieval.top_k, threshold=settings.retrieval.fast_threshold,
                            presence=load_presence(enc))
    if as_json:
        print(json.dumps({
            "phrases": result.phrases, "threshold": result.threshold, "skipped": result.skipped,
            "scenes": [{"id": s.scene.id, "source": s.scene.source, "fingerprint": s.scene.fingerprint, "found": s.found,
                        "finding": s.result.finding, "best": round(s.best, 4),
                        "sites": [{"bbox": list(site.region.box.as_tuple()), "confidence": round(site.confidence, 4),
                                   "presence": site.presence, "windows": len(site.members)}
                                  for site in s.result.all_sites[: settings.retrieval.top_k]]}
                       for s in result.scenes]}))
        return
    from rich.table import Table

    table = Table(title=f"{', '.join(result.phrases)} across {len(result.scenes)} indexed scenes of {name!r}")
    for col in ("scene", "finding", "sites (bbox px: confidence)", "source"):
        table.add_column(col, overflow="fold")
    for s in result.scenes:
        shown = s.result.all_sites[: settings.retrieval.top_k]
        sites = "; ".join("[{}, {}, {}, {}]".format(*site.region.box.as_tuple()) + f": {site.confidence:.2f}" for site in shown)
        label = s.result.finding or ("sites above threshold" if s.found else "none above threshold")
        table.add_row(s.scene.id, label, sites or "-", s.scene.source)
    console.print(table)
    if result.skipped:
        err_console.print(f"not indexed (skipped): {', '.join(result.skipped)}; index them with "
                          f"`rsrag index --catalog {name}` (add --ray auto for a cluster)", highlight=False)
