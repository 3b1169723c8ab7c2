"""A georeferenced mosaic of real aerial photos (AID) with one planted target, for the web workspace tests.

Background cells are photos of one class; one cell, at a known place, is a photo of a distinct class. The
result is a tiled GeoTIFF in UTM 33N with overviews, so the viewer's low levels read from overviews.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.rasters import write_raster


@dataclass(frozen=True)
class Mosaic:
    """The written mosaic and where its target is (pixel box ``[x0, y0, x1, y1]``)."""

    path: Path
    target_box: tuple[int, int, int, int]
    width: int
    height: int


def make_mosaic(
    aid_images: Path, out: Path, *, background: str = "Forest", target: str = "Airport",
    grid: tuple[int, int] = (4, 4), target_cell: tuple[int, int] = (2, 1), cell: int = 256,
) -> Mosaic:
    """Write a ``grid`` (columns, rows) mosaic of ``cell`` px photos with ``target`` at ``target_cell`` (col, row).

    Args:
        aid_images: the AID ``images`` folder (one sub-folder per class).
        out: the GeoTIFF to write.
        background: class of the background photos; target: class of the planted photo.
        grid: columns and rows; target_cell: the target's column and row; cell: side of a cell in pixels.
    """
    cols, rows = grid
    backgrounds = sorted((aid_images / background).glob("*.jpg"))
    targets = sorted((aid_images / target).glob("*.jpg"))
    if len(backgrounds) < cols * rows or not targets:
        raise FileNotFoundError(f"not enough AID photos of {background!r} / {target!r} in {aid_images}")
    data = np.zeros((3, rows * cell, cols * cell), dtype=np.uint8)
    for i in range(cols * rows):
        col, row = i % cols, i // cols
        photo = targets[0] if (col, row) == target_cell else backgrounds[i]
        rgb = np.asarray(Image.open(photo).convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR))
        data[:, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = rgb.transpose(2, 0, 1)
    write_raster(out, data, overviews=(2, 4))
    tc, tr = target_cell
    return Mosaic(path=out, target_box=(tc * cell, tr * cell, (tc + 1) * cell, (tr + 1) * cell),
                  width=cols * cell, height=rows * cell)
