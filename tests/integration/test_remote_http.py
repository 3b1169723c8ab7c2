"""Remote inputs over a real HTTP server on 127.0.0.1 (tests/range_server.py, in its own process): a COG read
by byte ranges, a PNG converted through the cache, the same server as an S3 endpoint, and the servers users
meet when things go wrong: one that ignores ``Range``, one that answers 404 or 403, one too slow, none."""

from __future__ import annotations

import hashlib
import json
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning

from rsrag.tools.errors import (
    RangeRequestsUnsupportedError,
    RasterNotFoundError,
    RemoteAccessError,
    RemoteTimeoutError,
    RemoteUnavailableError,
)
from rsrag.tools.raster import open_scene
from rsrag.tools.region import PixelBox
from rsrag.tools.scene_cache import SceneCache
from tests.range_server import serve_folder
from tests.rasters import gradient, write_raster

DATA = gradient(3, 384, 512)
NOISE = np.random.default_rng(3).integers(0, 255, (3, 384, 512), dtype=np.uint8)  # a PNG bigger than the probes


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COG (tiled, overviews), a PNG, and the COG under bucket/ for the S3 endpoint."""
    root = tmp_path_factory.mktemp("served")
    plain = write_raster(root / "plain.tif", DATA)
    rasterio.shutil.copy(plain, root / "scene.tif", driver="COG", blocksize=256, overview_resampling="average")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(root / "photo.png", "w", driver="PNG", width=512, height=384, count=3, dtype="uint8") as d:
            d.write(NOISE)
    (root / "bucket").mkdir()
    (root / "bucket" / "scene.tif").write_bytes((root / "scene.tif").read_bytes())
    return root


@pytest.fixture(scope="module")
def server(folder: Path):  # type: ignore[no-untyped-def]
    with serve_folder(folder) as srv:
        yield srv


@pytest.fixture
def cache(tmp_path: Path) -> SceneCache:
    return SceneCache(tmp_path / "cache", min_pixels=0)


def test_a_remote_cog_is_read_in_place_by_byte_ranges(server, folder: Path, cache: SceneCache) -> None:
    size = (folder / "scene.tif").stat().st_size
    server.reset()
    with open_scene(server.url("scene.tif"), cache=cache) as remote, open_scene(folder / "scene.tif") as local:
        assert remote.info.cache is None and cache.entries() == []  # tiled: no conversion
        assert str(remote.path) == server.url("scene.tif") and remote.path.name == "scene.tif"
        assert remote.info.path == server.url("scene.tif") and remote.info.overviews == local.info.overviews
        box = PixelBox(x0=300, y0=200, x1=420, y1=330)
        np.testing.assert_array_equal(remote.read(box), local.read(box))
        np.testing.assert_array_equal(remote.read(remote.full_box, out_shape=(96, 128)),
                                      local.read(local.full_box, out_shape=(96, 128)))
        assert remote.crs == local.crs and remote.info.transform == local.info.transform
        assert remote.region(box).map_box == local.region(box).map_box
        assert remote.sha256() == hashlib.sha256((folder / "scene.tif").read_bytes()).hexdigest()
    stats = server.stats()
    assert stats["range_requests"] >= 2 and stats["bytes_sent"] < 3 * size  # ranges, not one whole download each


def test_the_remote_fingerprint_is_stable_and_follows_the_content(tmp_path: Path) -> None:
    write_raster(tmp_path / "x.tif", DATA)
    with serve_folder(tmp_path) as srv:
        with open_scene(srv.url("x.tif")) as a, open_scene(srv.url("x.tif")) as b:
            first = a.fingerprint
            assert b.fingerprint == first and len(first) == 32
        write_raster(tmp_path / "x.tif", DATA[:, ::-1].copy())
        with open_scene(srv.url("x.tif")) as c:
            assert c.fingerprint != first


def test_a_remote_png_is_converted_once_through_the_cache(server, folder: Path, cache: SceneCache) -> None:
    seen = []
    with open_scene(server.url("photo.png"), cache=cache, progress=seen.append) as scene:
        assert scene.info.cache is not None and scene.info.driver == "PNG" and seen[-1].done == 384
        np.testing.assert_array_equal(scene.read(scene.full_box), NOISE)
    server.reset()
    with open_scene(server.url("photo.png"), cache=cache, progress=seen.append) as again:
        np.testing.assert_array_equal(again.read(PixelBox(x0=5, y0=6, x1=70, y1=80)), NOISE[:, 6:80, 5:70])
    assert server.stats()["bytes_sent"] < (folder / "photo.png").stat().st_size  # only the probe, no re-download
    assert [e.source for e in cache.entries()] == [server.url("photo.png")]


def test_s3_urls_read_through_gdal_against_an_s3_endpoint(server, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_S3_ENDPOINT", server.base_url.removeprefix("http://"))
    monkeypatch.setenv("AWS_HTTPS", "NO")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "FALSE")
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    with open_scene("s3://bucket/scene.tif") as scene:
        assert scene.info.path == "s3://bucket/scene.tif"
        np.testing.assert_array_equal(scene.read(scene.full_box), DATA)
    with pytest.raises(RasterNotFoundError, match="s3://bucket/missing.tif"):
        open_scene("s3://bucket/missing.tif")


@pytest.mark.parametrize(("mode", "error", "words"), [
    ("norange", RangeRequestsUnsupportedError, "ignores byte-range requests"),
    ("404", RasterNotFoundError, "404"),
    ("403", RemoteAccessError, "403"),
])
def test_servers_that_cannot_serve_windows_get_clear_errors(mode: str, error: type, words: str, folder: Path) -> None:
    with serve_folder(folder, mode) as srv:
        with pytest.raises(error) as info:
            open_scene(srv.url("scene.tif"))
    assert words in str(info.value) and str(info.value).startswith(srv.url("scene.tif"))


def test_a_server_that_does_not_answer_in_time(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    with serve_folder(folder, "slow", delay_s=5) as srv, pytest.raises(RemoteTimeoutError, match="GDAL_HTTP_TIMEOUT"):
        open_scene(srv.url("scene.tif"))


def test_no_server_at_all() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(RemoteUnavailableError, match="connection refused"):
        open_scene(f"http://127.0.0.1:{port}/scene.tif")


def test_cli_describe_and_index_a_remote_cog(server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import main
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    assert main(["describe", server.url("scene.tif"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == server.url("scene.tif") and info["width"] == 512 and info["cache"] is None
    store = tmp_path / "store"
    assert main(["index", server.url("scene.tif"), "--encoder", "rsrag-tiny-test:random", "--tiling", "grid:128",
                 "--store", str(store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["info"]["source"] == server.url("scene.tif") and report["info"]["n_patches"] == 12
    assert main(["describe", server.url("missing.tif")]) == 2
    out = capsys.readouterr()
    assert "404" in out.out + out.err and "Traceback" not in out.out + out.err


def test_ask_about_a_remote_cog(server, tmp_path: Path) -> None:
    from rsrag.agent.interfaces.api import Analyst
    from tests.configured import settings_for
    from tests.scripted import ScriptedChatModel, call, last_evidence

    model = ScriptedChatModel(steps=[
        call("search_patches", phrases=["roofs"], top_k=2),
        lambda msgs: call("answer", text=f"Roofs at {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
    ])
    with Analyst(settings_for(tmp_path), model=model) as analyst:
        answer = analyst.ask(server.url("scene.tif"), "where are the roofs?", thread_id="remote")
        assert answer.evidence and answer.evidence[0].region is not None
        with open_scene(server.url("scene.tif")) as scene:
            assert answer.evidence[0].region.scene == scene.fingerprint


def test_the_web_registry_registers_a_remote_image(server, tmp_path: Path) -> None:
    from rsrag.agent.interfaces.web.registry import ImageRegistry

    registry = ImageRegistry(tmp_path / "uploads", opener=lambda p: open_scene(p))
    entry = registry.register(server.url("scene.tif"))
    try:
        assert entry.name == "scene.tif" and str(entry.path) == server.url("scene.tif")
        assert registry.register(server.url("scene.tif")).id == entry.id
        assert entry.to_json()["width"] == 512
    finally:
        entry.scene.close()
