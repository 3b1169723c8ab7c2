"""``rsrag search IMAGE TEXT``: the fast path (key phrases -> patches) over a scene's patch index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rsrag.agent.interfaces.cli import index as index_cli
from rsrag.agent.interfaces.cli.app import app, console, state


@app.command("search")
def search_command(
    image: Path = typer.Argument(..., help="Image file (indexed with `rsrag index`, or indexed now)."),
    text: str = typer.Argument(..., help="A key phrase or a plain question."),
    phrase: list[str] = typer.Option([], "--phrase", help="Key phrase (repeatable); overrides extraction from TEXT."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Hits to return (default: settings, retrieval.top_k)."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Confidence threshold (default: settings, retrieval.fast_threshold)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder spec (default: settings, else the offline encoder)."),
    tiling: str | None = typer.Option(None, "--tiling", help="Tiling spec of the index to search (default: settings, store.tiling)."),
    store: Path | None = typer.Option(None, "--store", help="Store folder (default: settings, else $RSRAG_HOME/store)."),
    no_index: bool = typer.Option(False, "--no-index", help="Fail instead of indexing an unindexed image."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Find the patches of a scene that match a phrase or question, with confidences and regions."""
    from rich.text import Text

    from rsrag.agent.interfaces.cli.display import box_text, fitting_table, fixed
    from rsrag.tools.fastpath import fast_search, find_index
    from rsrag.tools.raster import open_scene
    from rsrag.tools.store import PatchStore, open_store
    from rsrag.tools.tiling import parse_tiling

    settings = state.settings(**{"encoder.spec": encoder, "store.tiling": tiling, "store.path": store,
                                 "retrieval.fast_threshold": threshold, "retrieval.top_k": top_k})
    threshold, store, top_k = settings.retrieval.fast_threshold, settings.store_path, settings.retrieval.top_k
    enc = index_cli.load_cli_encoder(settings)
    patches = PatchStore(open_store(store))
    scheme = parse_tiling(settings.store.tiling)
    if getattr(scheme, "is_pyramid", False):
        result = _search_pyramid(image, text, phrase, enc, scheme, patches, settings, top_k, threshold, no_index, as_json)
    else:
        with open_scene(image) as scene:
            fingerprint = scene.fingerprint
        if not no_index and not patches.find(scene=fingerprint, encoder=enc.id, tiling=scheme.id):
            if not as_json:
                console.print(f"{image.name} is not indexed for this encoder and tiling yet; indexing it first")
            index_cli.run_index(image, enc, scheme.id, store, settings.encoder.batch_size, 2, wait=True, show_progress=not as_json)
        index = find_index(patches, fingerprint, enc.id, scheme.id)
        result = fast_search(index, enc, phrases=phrase or None, question=text, store=patches, top_k=top_k, threshold=threshold)
    if as_json:
        print(result.model_dump_json())
        return
    table = fitting_table("#", "confidence", "score", "z", "box x0, y0, x1, y1 (px)", "scale", "map box L, B, R, T",
                          "phrase", "merged", title=f"{image.name}: {', '.join(result.phrases)}  (index v{result.index_version}, "
                          f"{len(result.confident)} of {len(result.hits)} hits >= {threshold:g})")
    for i, h in enumerate(result.hits, 1):
        mb = h.region.map_box
        cells = (str(i), fixed(h.confidence, 3), fixed(h.score, 3), fixed(h.z) if h.z is not None else "-",
                 box_text(h.region.box.as_tuple()), str(h.region.scale),
                 box_text(mb.as_tuple(), 2) if mb else "-", ", ".join(h.queries), str(h.merged))
        table.add_row(*(Text(c) for c in cells))
    console.print(table)
    console.print(f"text encoding {result.text_ms:.1f} ms, search {result.search_ms:.1f} ms; encoder {result.encoder}, "
                  f"prompts {result.prompt_version}")


def _search_pyramid(image: Path, text: str, phrase: list[str], enc: Any, scheme: Any, patches: Any, settings: Any,
                    top_k: int, threshold: float, no_index: bool, as_json: bool) -> Any:
    """The fast path over the scene's pyramid: the search encodes the windows it visits (progress shown)."""
    from rsrag.tools.errors import IndexNotFoundError
    from rsrag.tools.fastpath import fast_search
    from rsrag.tools.pyramid import Pyramid, PyramidIndex
    from rsrag.tools.raster import open_scene

    with open_scene(image) as scene:
        p = settings.pyramid
        pyramid = Pyramid(scene, enc, scheme, patches, sample=p.sample, batch_size=settings.encoder.batch_size)
        if no_index and not pyramid.complete(0):
            raise IndexNotFoundError(f"{image.name} has no pyramid level encoded yet for encoder {enc.id!r}; run "
                                     "`rsrag index IMAGE` or search without --no-index (a search encodes what it visits)")
        with index_cli.index_progress(enabled=not as_json, transient=True, label=image.name) as on_progress:
            index = PyramidIndex(pyramid, beam=p.beam, expand=p.expand, progress=on_progress)
            result = fast_search(index, enc, phrases=phrase or None, question=text, store=patches, top_k=top_k,
                                 threshold=threshold)
        if not as_json:
            shares = [h.extra.get("searched_share") for h in result.hits[:1]]
            if shares and shares[0] is not None and float(shares[0]) < 1.0:
                console.print(f"searched {100 * float(shares[0]):.1f}% of the finest level's windows "
                              f"({pyramid.finest.window} px); `rsrag index` fills the rest")
        return result
