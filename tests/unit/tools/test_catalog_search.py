"""Searching a whole catalog: the scene that holds the target ranks first and its sites lie on the target.

Real data and the real bundled encoder: three 4 x 4-chip scenes of farmland and forest (AID chips from the
shared data), storage tanks planted in one of them only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.catalog import Catalog
from rsrag.tools.catalog_search import search_catalog
from rsrag.tools.indexing import index_scene
from rsrag.tools.store import PatchStore, open_store
from tests.catalog_scenes import CELL, chips, write_scene


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "aid-rsicd").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    folder = tmp_path_factory.mktemp("archive")
    farm, forest = chips(SHARED_DATA, "Farmland", 8), chips(SHARED_DATA, "Forest", 8)
    tanks = chips(SHARED_DATA, "StorageTanks", 2)
    sources = [
        write_scene(folder / "a.tif", farm, {}, 500_000.0),
        write_scene(folder / "b.tif", forest + farm, {(1, 2): tanks[0], (3, 0): tanks[1]}, 510_000.0),
        write_scene(folder / "c.tif", forest, {}, 520_000.0),
    ]
    return folder, sources


def test_target_scene_ranks_first_with_its_sites(archive: tuple[Path, list[str]], tmp_path: Path) -> None:
    from rsrag.tools.encoders import load_encoder

    folder, sources = archive
    store = open_store(tmp_path / "store")
    patches = PatchStore(store)
    encoder = load_encoder(None)
    catalog = Catalog(store, name="archive")
    catalog.add(sources)
    for source in sources[:2] + sources[2:]:
        index_scene(source, encoder, f"grid:{CELL}", patches)
    catalog.add([str(folder / "missing.tif")])  # reported, not fatal

    from rsrag.tools.calibration import load_presence

    presence = load_presence(encoder)
    result = search_catalog(catalog, patches, encoder, phrases=["storage tanks"], top_k=5, threshold=0.5,
                            presence=presence)
    assert [s.scene.id for s in result.scenes][0] == "b"  # the only scene with tanks ranks first
    best = result.scenes[0]
    assert best.scene.source == sources[1]
    planted = {(CELL * 2, CELL * 1), (CELL * 0, CELL * 3)}  # (x0, y0) of the two planted cells
    top = best.result.all_sites[0]
    assert top.best.region.scene == best.scene.fingerprint
    assert (top.best.region.box.x0, top.best.region.box.y0) in planted
    assert presence.calibrated  # the bundled encoder ships its calibration: verdicts comparable across scenes
    assert [s.scene.id for s in result.matching] == ["b"]

    # a scene without an index is skipped and named, never indexed on the fly
    extra = write_scene(folder / "d.tif", _chips_from(best), {}, 530_000.0)
    catalog.add([extra])
    again = search_catalog(catalog, patches, encoder, phrases=["storage tanks"], top_k=5, threshold=0.5, presence=presence)
    assert again.skipped == ["d"]

    # the same search from the command line, as JSON: every site names its scene
    import json

    from typer.testing import CliRunner

    from rsrag.agent.interfaces.cli import app

    out = CliRunner().invoke(app, ["catalog", "search", "storage tanks", "--catalog", "archive", "--store",
                                   str(tmp_path / "store"), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["skipped"] == ["d"] and doc["scenes"][0]["id"] == "b" and doc["scenes"][0]["source"] == sources[1]
    near = CliRunner().invoke(app, ["catalog", "search", "storage tanks", "--catalog", "archive", "--store",
                                    str(tmp_path / "store"), "--near", "15.0,45.14", "--radius-km", "1", "--json"])
    assert [s["id"] for s in json.loads(near.stdout)["scenes"]] == ["a"]  # only the scene near that point


def _chips_from(result) -> list[np.ndarray]:  # noqa: ANN001
    return [np.full((CELL, CELL, 3), 90 + 10 * i, np.uint8) for i in range(3)]
