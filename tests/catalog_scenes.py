"""A small indexed archive for tests of questions across scenes.

Three georeferenced 4 x 4-chip scenes of real AID chips (farmland, forest; storage tanks planted in scene
``b`` only), 10 km apart, registered in a catalog from a static STAC catalog (with acquisition times) and
indexed with the bundled encoder on a flat grid of one chip per window. Built once per test module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rasterio.transform import from_origin

from tests.rasters import write_raster

CELL = 150
TILING = f"grid:{CELL}"
CATALOG = "archive"
TIMES = {"a": "2024-01-15T10:00:00Z", "b": "2024-05-15T10:00:00Z", "c": "2024-09-15T10:00:00Z"}
PLANTED = {"b": [(CELL * 2, CELL * 1), (CELL * 0, CELL * 3)]}
"""``(x0, y0)`` of the cells holding storage tanks, per scene."""


@dataclass(frozen=True)
class Archive:
    """The built archive: its folder, store folder, catalog name and each scene's source by id."""

    folder: Path
    store: Path
    catalog: str
    sources: dict[str, str]


def chips(shared: Path, cls: str, n: int) -> list[np.ndarray]:
    """The last ``n`` AID chips of class ``cls`` in the shared data, resized to ``CELL`` px."""
    files = sorted((shared / "aid-rsicd" / "images" / cls).glob("*.jpg"))[-n:]
    return [np.asarray(Image.open(f).convert("RGB").resize((CELL, CELL))) for f in files]


def write_scene(path: Path, background: list[np.ndarray], planted: dict[tuple[int, int], np.ndarray], easting: float) -> str:
    """A georeferenced 4 x 4-chip GeoTIFF: ``planted`` chips by (row, col), the background cycled elsewhere."""
    img = np.zeros((4 * CELL, 4 * CELL, 3), np.uint8)
    for r in range(4):
        for c in range(4):
            img[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = planted.get((r, c), background[(r * 4 + c) % len(background)])
    return str(write_raster(path, img.transpose(2, 0, 1).copy(), transform=from_origin(easting, 5_000_000.0, 2.0, 2.0)))


def build_archive(folder: Path, shared: Path) -> Archive:
    """Write the three scenes and a STAC catalog of them under ``folder``, register it as catalog ``archive``
    in ``folder/store`` and index every scene there with the bundled encoder."""
    import pystac

    from rsrag.tools.catalog import Catalog
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.indexing import index_scene
    from rsrag.tools.store import PatchStore, open_store

    farm, forest = chips(shared, "Farmland", 8), chips(shared, "Forest", 8)
    tanks = chips(shared, "StorageTanks", 2)
    sources = {
        "a": write_scene(folder / "a.tif", farm, {}, 500_000.0),
        "b": write_scene(folder / "b.tif", forest + farm, {(1, 2): tanks[0], (3, 0): tanks[1]}, 510_000.0),
        "c": write_scene(folder / "c.tif", forest, {}, 520_000.0),
    }
    stac = pystac.Catalog(id="archive", description="three scenes, storage tanks in b")
    for sid, path in sources.items():
        item = pystac.Item(id=sid, geometry=None, bbox=None, datetime=pystac.utils.str_to_datetime(TIMES[sid]),
                           properties={"platform": "test-sat"})
        item.add_asset("visual", pystac.Asset(href=path, media_type=pystac.MediaType.GEOTIFF))
        stac.add_item(item)
    stac.normalize_hrefs(str(folder / "stac"))
    stac.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    store = open_store(folder / "store")
    catalog = Catalog(store, name=CATALOG)
    report = catalog.add([str(folder / "stac" / "catalog.json")])
    assert sorted(report.added) == ["a", "b", "c"], report
    patches, encoder = PatchStore(store), load_encoder(None)
    for scene in catalog.scenes():
        index_scene(scene.source, encoder, TILING, patches)
    return Archive(folder=folder, store=folder / "store", catalog=CATALOG,
                   sources={s.id: s.source for s in catalog.scenes()})
