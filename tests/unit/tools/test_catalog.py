"""The scene catalog: registration from paths, globs, folders and static STAC, place/time/property queries,
STAC and GeoJSON export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
from rasterio.transform import from_origin

from rsrag.tools.catalog import Catalog
from rsrag.tools.errors import QueryError
from rsrag.tools.store import open_store
from tests.rasters import write_raster

# Three UTM 33N scenes (0.5 m pixels) at increasing eastings: ~15.0 E, ~15.13 E and ~16.3 E at 45.1 N.
EASTINGS = (500_000.0, 510_000.0, 600_000.0)


def _scenes(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8)
    return [write_raster(folder / f"scene_{i}.tif", data + i, transform=from_origin(e, 5_000_000.0, 0.5, 0.5))
            for i, e in enumerate(EASTINGS)]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(open_store(tmp_path / "store"), name="test")


def test_add_folder_glob_and_missing_reports_failures(tmp_path: Path, catalog: Catalog) -> None:
    paths = _scenes(tmp_path / "scenes")
    (tmp_path / "scenes" / "notes.txt").write_text("not an image")
    report = catalog.add([str(tmp_path / "scenes" / "scene_0.tif"), str(tmp_path / "scenes" / "*.tif"), str(tmp_path / "nope.tif")])
    assert sorted(report.added) == ["scene_0", "scene_1", "scene_2"]
    assert report.updated == ["scene_0"]  # the glob names scene_0 again: updated, not duplicated
    assert report.failed == [(str(tmp_path / "nope.tif"), "no such file or folder")]
    scenes = catalog.scenes()
    assert [s.source for s in scenes] == [str(p.resolve()) for p in paths]
    first = scenes[0]
    assert first.crs == "EPSG:32633" and first.gsd == pytest.approx(0.5) and (first.width, first.height) == (80, 64)
    west, south, east, north = first.bbox
    assert 14.99 < west < east < 15.01 and 45.1 < south < north < 45.2
    assert first.footprint["type"] == "Polygon" and len(first.footprint["coordinates"][0]) == 5
    # idempotent: re-adding the folder adds nothing
    again = catalog.add([str(tmp_path / "scenes")])
    assert again.added == [] and sorted(again.updated) == ["scene_0", "scene_1", "scene_2"]
    assert len(catalog.scenes()) == 3


def test_find_by_place_time_and_property(tmp_path: Path, catalog: Catalog) -> None:
    paths = _scenes(tmp_path / "scenes")
    # a static STAC catalog over the same files, with times and a property
    stac = pystac.Catalog(id="archive", description="test archive")
    for i, path in enumerate(paths):
        item = pystac.Item(id=f"item-{i}", geometry=None, bbox=None,
                           datetime=pystac.utils.str_to_datetime(f"2024-0{i + 1}-15T10:00:00Z"),
                           properties={"platform": "drone" if i < 2 else "satellite"})
        item.add_asset("visual", pystac.Asset(href=str(path), media_type=pystac.MediaType.GEOTIFF))
        stac.add_item(item)
    stac.normalize_hrefs(str(tmp_path / "stac"))
    stac.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    report = catalog.add([str(tmp_path / "stac" / "catalog.json")])
    assert sorted(report.added) == ["item-0", "item-1", "item-2"] and not report.failed

    near = catalog.find(point=(15.0, 45.15), radius_km=5)
    assert [s.id for s in near] == ["item-0"]
    wide = catalog.find(point=(15.0, 45.15), radius_km=20)
    assert [s.id for s in wide] == ["item-0", "item-1"]  # nearest first
    assert [s.id for s in catalog.find(bbox=(16.0, 45.0, 17.0, 45.3))] == ["item-2"]
    assert [s.id for s in catalog.find(start="2024-02-01", end="2024-03-31")] == ["item-1", "item-2"]
    assert [s.id for s in catalog.find(where={"platform": "drone"}, start="2024-02-01")] == ["item-1"]
    with pytest.raises(QueryError, match="bbox must be"):
        catalog.find(bbox=(17, 45, 16, 46))
    with pytest.raises(QueryError, match="ISO 8601"):
        catalog.find(start="last tuesday")


def test_exports_and_remove(tmp_path: Path, catalog: Catalog) -> None:
    _scenes(tmp_path / "scenes")
    catalog.add([str(tmp_path / "scenes")])
    status = {s.fingerprint: ("indexed" if s.id == "scene_1" else "not indexed") for s in catalog.scenes()}
    stac = catalog.to_stac(index_status=status.__getitem__)
    collection = pystac.ItemCollection.from_dict(stac)
    assert len(collection) == 3
    item = next(i for i in collection if i.id == "scene_1")
    assert item.assets["data"].extra_fields["rsrag:index"] == "indexed"
    assert item.properties["proj:code"] == "EPSG:32633" and item.geometry["type"] == "Polygon"
    geo = catalog.to_geojson()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 3
    json.dumps(geo)  # serialisable as written to disk
    assert catalog.remove(["scene_0"]) == ["scene_0"]
    assert [s.id for s in catalog.scenes()] == ["scene_1", "scene_2"]
    with pytest.raises(QueryError, match="has no scene 'scene_0'"):
        catalog.get("scene_0")


def test_bad_stac_file_is_reported_not_raised(tmp_path: Path, catalog: Catalog) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    report = catalog.add([str(bad)])
    assert report.added == [] and report.failed and "not a readable STAC file" in report.failed[0][1]


def test_catalog_cli_add_list_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rsrag.agent.interfaces.cli import app

    _scenes(tmp_path / "scenes")
    store = str(tmp_path / "store")
    runner = CliRunner()
    added = runner.invoke(app, ["catalog", "add", str(tmp_path / "scenes"), str(tmp_path / "missing.tif"), "--store", store])
    assert added.exit_code == 0, added.output
    assert "3 added" in added.output and "missing.tif: no such file" in added.output
    listed = runner.invoke(app, ["catalog", "list", "--store", store, "--json"])
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == ["scene_0", "scene_1", "scene_2"] and {r["index"] for r in rows} == {"not indexed"}
    out = tmp_path / "catalog.geojson"
    exported = runner.invoke(app, ["catalog", "export", str(out), "-f", "geojson", "--store", store])
    assert exported.exit_code == 0 and len(json.loads(out.read_text())["features"]) == 3
    nothing = runner.invoke(app, ["catalog", "add", str(tmp_path / "missing.tif"), "--store", store])
    assert nothing.exit_code == 2
