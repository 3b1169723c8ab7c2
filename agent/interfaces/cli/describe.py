"""``rsrag describe IMAGE``: what a scene is (size, bands, CRS, footprint, overviews) and a thumbnail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rsrag.agent.interfaces.cli.app import app, console, state

if TYPE_CHECKING:
    from rsrag.tools.raster import Scene

THUMBNAIL_SIDE = 512


def describe_scene(scene: Scene, with_sha256: bool = False) -> dict[str, Any]:
    """A JSON-friendly description of a scene: metadata, fingerprint, footprint in map and lon/lat."""
    from rsrag.tools.georef import map_box_to_lonlat

    info = scene.info.as_dict()
    info["fingerprint"] = scene.fingerprint
    info["display_bands"] = list(scene.bands)
    if with_sha256:
        info["sha256"] = scene.sha256()
    if scene.georeferenced:
        footprint = scene.region(scene.full_box).map_box
        assert footprint is not None
        info["map_bounds"] = list(footprint.as_tuple())
        info["lonlat_bounds"] = list(map_box_to_lonlat(footprint))
    return info


def save_thumbnail(scene: Scene, path: Path, side: int = THUMBNAIL_SIDE) -> tuple[int, int]:
    """Write a PNG overview of the whole scene, longest side ``side`` px; returns its (width, height)."""
    from PIL import Image

    out = scene.full_box.fit_within(side)
    Image.fromarray(scene.read_display(scene.full_box, out_size=out)).save(path)
    return out[1], out[0]


@app.command()
def describe(
    image: Path = typer.Argument(..., help="Image file (GeoTIFF, COG, VRT, JPEG, PNG...) or URL (https://, s3://, gs://, az://)."),
    thumbnail: Path | None = typer.Option(None, "--thumbnail", help="Write a PNG overview of the scene here."),
    bands: str | None = typer.Option(None, "--bands", help="Display bands as R,G,B (1-based), e.g. 4,3,2."),
    sha256: bool = typer.Option(False, "--sha256", help="Also compute the full SHA-256 of the file (reads it all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Describe a scene: size, bands, data type, nodata, CRS, footprint, overviews, fingerprint."""
    from rich.text import Text

    from rsrag.agent.interfaces.cli.display import fitting_table

    from rsrag.agent.interfaces.cli.cache import conversion_progress
    from rsrag.tools.display import DisplayOptions
    from rsrag.tools.raster import open_scene

    display = DisplayOptions(bands=_parse_bands(bands)) if bands else None
    cache = state.settings().scene_cache()  # PNG, JPEG, striped TIFF... are converted once, then read from it
    with conversion_progress(enabled=not as_json) as on_convert, \
            open_scene(image, display, cache=cache, progress=on_convert) as scene:
        info = describe_scene(scene, with_sha256=sha256)
        if thumbnail is not None:
            info["thumbnail"] = {"path": str(thumbnail), "size": list(save_thumbnail(scene, thumbnail))}
    if as_json:
        print(json.dumps(info))
        return
    table = fitting_table("key", "value", title=f"{image.name}", show_header=False)
    for key, value in info.items():
        table.add_row(key, Text(value_text(key, value)))  # text, not markup: "[a, b]" is data
    console.print(table)


def _parse_bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--bands must be comma-separated band numbers like 3,2,1, not {text!r}") from None


#: Decimals per key: degrees 6 (~0.1 m), map coordinates and ground sample distance 2 or 4 (CRS units).
DECIMALS = {"lonlat_bounds": 6, "map_bounds": 2, "transform": 6, "gsd": 4, "nodata": 2}


def value_text(key: str, value: Any) -> str:
    """A described value as text, numbers with a fixed precision per key (never scientific notation)."""
    from rsrag.agent.interfaces.cli.display import fixed

    def one(v: Any) -> str:
        if isinstance(v, float):
            return str(int(v)) if v.is_integer() and key not in ("lonlat_bounds", "map_bounds", "gsd") else fixed(v, DECIMALS.get(key, 4))
        return str(v)

    if isinstance(value, list | tuple):
        return "[" + ", ".join(one(v) for v in value) + "]"
    return one(value)
