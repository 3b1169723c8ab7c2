"""Indexing an archive on real Ray processes: a local Ray instance and a two-node cluster on this machine.

The bundled offline encoder runs inside the Ray actors (real weights, no network). Every window must be
stored exactly once, with the vectors the in-process indexer computes, even when a worker is killed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from rsrag.tools.indexing import index_scene  # noqa: E402 (after the importorskip guard)
from rsrag.tools.ray_indexing import index_on_ray, start_ray  # noqa: E402
from rsrag.tools.store import as_patch_store  # noqa: E402
from tests.rasters import write_raster  # noqa: E402

TILING = "grid:64"


def _scenes(folder: Path, n: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    return [str(write_raster(folder / f"s{i}.tif", rng.integers(0, 255, (3, 192, 256), dtype=np.uint8))) for i in range(n)]


def _stored(store: Path, report) -> dict[int, np.ndarray]:  # noqa: ANN001
    patches = as_patch_store(store)
    table = patches.patch_table(report.info)
    rows: dict[int, np.ndarray] = {}
    count = 0
    for batch in table.scan(where={"index_key": report.info.key}, fields=["patch", "vector"]):
        for patch, vec in zip(batch["patch"], batch["vector"]):
            rows[int(patch)] = vec
            count += 1
    assert count == len(rows), "a window was stored twice"
    return rows


@pytest.fixture(scope="module")
def local_ray():
    start_ray("local", num_cpus=2)
    yield
    ray.shutdown()


def test_archive_indexed_once_per_window_and_matches_in_process(tmp_path: Path, local_ray: None) -> None:
    sources = _scenes(tmp_path / "scenes")
    seen: list = []
    reports = index_on_ray(sources, store=tmp_path / "store", tiling=TILING, chunk_size=4, batch_size=4, workers=2,
                           progress=seen.append)
    assert [r.info.n_patches for r in reports] == [12, 12, 12] and all(r.info.complete for r in reports)
    assert seen[-1].done == seen[-1].total == 36 and seen[-1].scenes_done == 3
    local = index_scene(sources[1], _bundled(), TILING, tmp_path / "local", chunk_size=4, batch_size=4)
    ray_rows, local_rows = _stored(tmp_path / "store", reports[1]), _stored(tmp_path / "local", local)
    assert sorted(ray_rows) == sorted(local_rows) == list(range(12))
    for patch, vec in local_rows.items():
        np.testing.assert_allclose(ray_rows[patch], vec, atol=1e-4)
    # a second run is a no-op
    again = index_on_ray(sources, store=tmp_path / "store", tiling=TILING, chunk_size=4, workers=1)
    assert all(r.no_op for r in again)


def test_killed_worker_leaves_no_gap_and_no_duplicate(tmp_path: Path, local_ray: None) -> None:
    sources = _scenes(tmp_path / "scenes", n=2)
    pids: list[int] = []
    killed: list[int] = []

    def kill_once(progress) -> None:  # noqa: ANN001
        if not killed and progress.done >= 4:
            killed.append(pids[0])
            os.kill(pids[0], signal.SIGKILL)

    reports = index_on_ray(sources, store=tmp_path / "store", tiling=TILING, chunk_size=2, batch_size=2, workers=2,
                           on_worker=pids.extend, progress=kill_once)
    assert killed, "the test did not kill a worker"
    for report in reports:
        assert report.info.complete and sorted(_stored(tmp_path / "store", report)) == list(range(12))


def test_pyramid_levels_filled_like_in_process(tmp_path: Path, local_ray: None) -> None:
    from rsrag.tools.pyramid import build_index

    sources = _scenes(tmp_path / "scenes", n=1)
    index_on_ray(sources, store=tmp_path / "store", tiling="pyramid:64", chunk_size=8, batch_size=8, workers=2)
    local = build_index(sources[0], _bundled(), "pyramid:64", tmp_path / "local", batch_size=8)
    ray_patches, local_patches = as_patch_store(tmp_path / "store"), as_patch_store(tmp_path / "local")
    for level in local.levels:
        ray_info, local_info = ray_patches.info(level.key), local_patches.info(level.key)
        assert ray_info is not None and ray_info.complete and ray_info.n_patches == local_info.n_patches
        assert ray_patches.count(ray_info) == level.windows


def test_cli_index_catalog_on_ray(tmp_path: Path, local_ray: None) -> None:
    from typer.testing import CliRunner

    from rsrag.agent.interfaces.cli import app

    sources = _scenes(tmp_path / "scenes", n=2)
    store = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(app, ["catalog", "add", str(tmp_path / "scenes"), "--store", store]).exit_code == 0
    done = runner.invoke(app, ["index", "--catalog", "default", "--ray", "auto", "--workers", "1", "--tiling", TILING,
                               "--store", store, "--json"])
    assert done.exit_code == 0, done.output
    import json

    listed = json.loads(runner.invoke(app, ["catalog", "list", "--store", store, "--json"]).stdout)
    assert [r["index"].split(",")[0] for r in listed] == ["indexed (grid:64:overlap=0:scales=1"] * 2
    again = runner.invoke(app, ["index", *sources, "--tiling", TILING, "--store", store])  # in process: a no-op
    assert again.exit_code == 0 and again.stdout.count("already indexed") == 2


def test_two_node_cluster(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the module's local instance, if a test before this one started it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        start_ray(cluster.address)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        sources = _scenes(tmp_path / "scenes", n=2)
        reports = index_on_ray(sources, store=tmp_path / "store", tiling=TILING, chunk_size=4, workers=2)
        for report in reports:
            assert report.info.complete and sorted(_stored(tmp_path / "store", report)) == list(range(12))
    finally:
        ray.shutdown()
        cluster.shutdown()


def _bundled():  # noqa: ANN202
    from rsrag.tools.encoders import load_encoder

    return load_encoder(None, batch_size=4)
