"""The scene cache: which sources are converted, what a conversion keeps, bad files refused, kill and resume,
reuse across processes, eviction; and a tiled source without overviews getting cached levels on demand."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from rsrag.tools.errors import RasterReadError
from rsrag.tools.raster import open_scene
from rsrag.tools.region import PixelBox
from rsrag.tools.scene_cache import SceneCache, conversion_reason, level_sizes
from tests.rasters import UTM_CRS, gradient, write_complex_int16, write_raster

ROOT = Path(__file__).resolve().parents[3]


def raw(path: Path) -> np.ndarray:
    """The source's pixels as GDAL decodes them, read whole (what the cached copy must equal)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # PNG, JPEG, BMP without a world file
        with rasterio.open(path) as ds:
            return ds.read()


def write(path: Path, data: np.ndarray, driver: str, **options) -> Path:
    count, height, width = data.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver=driver, width=width, height=height, count=count, dtype=data.dtype.name,
                           **options) as dst:
            dst.write(data)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> SceneCache:
    return SceneCache(tmp_path / "cache", min_pixels=0)


# --- which sources are converted --------------------------------------------------------------------------


@pytest.mark.parametrize(("driver", "block", "converted"), [
    ("PNG", (1, 10000), True), ("JPEG", (1, 10000), True), ("GIF", (1, 10000), True), ("BMP", (1, 10000), True),
    ("GTiff", (1, 10000), True), ("GTiff", (16, 10000), True), ("GTiff", (10000, 10000), True),
    ("GTiff", (8192, 8192), True), ("GTiff", (512, 512), False), ("COG", (512, 512), False),
    ("JP2OpenJPEG", (10000, 10000), True), ("JP2OpenJPEG", (1024, 1024), False), ("VRT", (128, 128), False),
])
def test_conversion_is_decided_by_driver_and_block_shape(driver: str, block: tuple[int, int], converted: bool) -> None:
    assert (conversion_reason(driver, 10000, 10000, block) is not None) is converted


def test_small_images_are_read_in_place_whatever_their_format() -> None:
    assert conversion_reason("PNG", 1500, 1500, (1, 1500)) is None
    assert conversion_reason("PNG", 1500, 1500, (1, 1500), min_pixels=0) is not None


def test_levels_halve_down_to_the_smallest() -> None:
    assert level_sizes(10000, 6001) == [(10000, 6001), (5000, 3001), (2500, 1501), (1250, 751), (625, 376), (313, 188)]
    assert level_sizes(400, 300) == [(400, 300)]


# --- what a conversion keeps --------------------------------------------------------------------------------


def _formats(tmp: Path) -> dict[str, Path]:
    rgb = gradient(3, 700, 900)
    geo = {"crs": UTM_CRS, "transform": from_origin(500000.0, 5000000.0, 0.5, 0.5)}
    rgba = np.concatenate([rgb, np.full((1, 700, 900), 255, np.uint8)])
    rgba[3, :100] = 0
    return {
        "png": write(tmp / "a.png", rgb, "PNG"),
        "png_rgba": write(tmp / "rgba.png", rgba, "PNG"),
        "jpeg": write(tmp / "a.jpg", rgb, "JPEG", quality=90),
        "bmp": write(tmp / "a.bmp", rgb, "BMP"),
        "striped_tiff": write(tmp / "striped.tif", rgb, "GTiff", compress="deflate", blockysize=8, nodata=7, **geo),
        "untiled_uint16": write(tmp / "u16.tif", (gradient(2, 700, 900).astype("uint16") * 200), "GTiff", **geo),
        "jp2_one_tile": write(tmp / "a.jp2", rgb, "JP2OpenJPEG", blockxsize=900, blockysize=700, quality=100,
                              reversible="YES"),
    }


@pytest.mark.parametrize("name", ["png", "png_rgba", "jpeg", "bmp", "striped_tiff", "untiled_uint16", "jp2_one_tile"])
def test_conversion_keeps_pixels_georeference_and_colours(name: str, tmp_path: Path, cache: SceneCache) -> None:
    source = _formats(tmp_path)[name]
    with warnings.catch_warnings(), rasterio.open(source) as src:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        expected = {"crs": src.crs, "transform": src.transform, "nodata": src.nodata,
                    "colorinterp": tuple(c.name for c in src.colorinterp), "dtypes": src.dtypes}
    pixels = raw(source)
    with open_scene(source, cache=cache) as scene:
        assert scene.info.cache is not None and scene.info.cache_reason
        assert scene.path == source and scene.info.path == str(source)  # provenance names the source
        assert scene.info.block_shape == (256, 256) and scene.info.overviews == (2,)
        np.testing.assert_array_equal(scene.read(scene.full_box), pixels)
        box = PixelBox(x0=101, y0=37, x1=357, y1=301)
        np.testing.assert_array_equal(scene.read(box), pixels[:, 37:301, 101:357])
        assert scene.info.colorinterp == expected["colorinterp"]
        assert scene.info.dtypes == tuple(expected["dtypes"]) and scene.info.nodata == expected["nodata"]
        assert (scene.crs is None) == (expected["crs"] is None)
        if expected["crs"] is not None:
            assert scene.info.transform == tuple(expected["transform"])[:6]
            assert scene.region(box).map_box is not None
        with open_scene(source) as in_place:  # the same source read without a cache: same identity and grid
            assert in_place.info.cache is None and in_place.fingerprint == scene.fingerprint
        with rasterio.open(Path(scene.info.cache) / "L0.tif") as cached:
            assert cached.crs == expected["crs"] and cached.nodata == expected["nodata"]
            if expected["colorinterp"][0] != "undefined":  # GeoTIFF has no "undefined" first band (it says gray)
                assert tuple(c.name for c in cached.colorinterp) == expected["colorinterp"]


def test_decimated_reads_come_from_the_averaged_level(tmp_path: Path, cache: SceneCache) -> None:
    data = gradient(3, 800, 1200)
    source = write(tmp_path / "a.png", data, "PNG")
    with open_scene(source, cache=cache) as scene:
        half = scene.read(scene.full_box, out_shape=(400, 600))
        blocks = data.reshape(3, 400, 2, 600, 2).astype(float).mean(axis=(2, 4))
        assert np.abs(half.astype(float) - blocks).max() <= 1
        assert scene.read_display(scene.full_box, out_size=(100, 150)).shape == (100, 150, 3)


def test_nodata_is_never_averaged_into_valid_pixels(tmp_path: Path, cache: SceneCache) -> None:
    data = np.full((1, 600, 600), 200, np.uint8)
    data[0, ::2, ::2] = 0  # nodata on a checkerboard of the finest pixels
    source = write(tmp_path / "nd.tif", data, "GTiff", nodata=0, blockysize=1)
    with open_scene(source, cache=cache) as scene:
        values = set(np.unique(scene.read(scene.full_box, out_shape=(300, 300))))
        assert values <= {0, 200}  # subsampled, never a mix like 150


@pytest.mark.parametrize("layout", ["striped", "tiled without overviews"])
def test_a_mask_band_is_carried_into_every_cached_level(layout: str, tmp_path: Path, cache: SceneCache) -> None:
    # a collar the mask marks as no data, holding bright pixels: read through the cache, it stays no data
    data = np.full((3, 2048, 2048), 220, np.uint8)
    data[:, 300:1700, 300:1700] = gradient(3, 1400, 1400)
    mask = np.zeros((2048, 2048), bool)
    mask[300:1700, 300:1700] = True
    source = write_raster(tmp_path / "masked.tif", data, mask=mask, tiled=layout != "striped")
    with open_scene(source, cache=cache) as scene:
        assert scene.info.mask
        rgb, valid = scene.read_display_valid(scene.full_box, out_size=(256, 256))  # from a cached level
        assert scene.info.cache is not None
        inside, outside = valid[39:211, 39:211], np.concatenate([valid[:37].ravel(), valid[214:].ravel()])
        assert inside.all() and not outside.any() and not valid[:, :37].any()  # 300 / 8 = 37.5, 1700 / 8 = 212.5
        assert (rgb[~valid] == 0).all()
        np.testing.assert_array_equal(scene.read_mask(scene.full_box), mask)
    for level in sorted(Path(scene.info.cache).glob("L*.tif")):
        with rasterio.open(level) as ds:
            assert "per_dataset" in {f.name for f in ds.mask_flag_enums[0]}


@pytest.mark.parametrize("dtype", ["uint16", "complex64", "complex_int16"])
def test_the_first_display_read_of_a_converted_non_byte_image_fits_its_stretch_from_a_level(
        dtype: str, tmp_path: Path, cache: SceneCache) -> None:
    # fitting the stretch opens a cached level: it once waited forever on the lock the fit itself held;
    # complex_int16 (SAR SLC samples) once failed the conversion: numpy has no such type
    import threading

    rng = np.random.default_rng(0)
    amplitude = rng.random((1, 2100, 2100)) * 3000
    if dtype == "uint16":
        data = amplitude.astype(dtype)
        source = write(tmp_path / f"{dtype}.tif", data, "GTiff", blockysize=8)
    else:
        data = (amplitude * np.exp(1j * rng.random((1, 2100, 2100)) * 6)).astype("complex64")
        if dtype == "complex_int16":
            data = (np.rint(data.real) + 1j * np.rint(data.imag)).astype("complex64")
            source = write_complex_int16(tmp_path / f"{dtype}.tif", data, blockysize=8)
        else:
            source = write(tmp_path / f"{dtype}.tif", data, "GTiff", blockysize=8)
    got: list[np.ndarray] = []
    with open_scene(source, cache=cache) as scene:
        worker = threading.Thread(target=lambda: got.append(scene.read_display(scene.full_box, out_size=(128, 128))),
                                  daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert got, "read_display did not return"
        assert scene.info.cache is not None and got[0].shape == (128, 128, 3) and got[0].max() > 0
        if dtype != "uint16":  # shown by amplitude; cached levels keep both parts (subsampled, not averaged)
            half = scene.read(scene.full_box, out_shape=(1050, 1050))
            np.testing.assert_array_equal(half, data[:, ::2, ::2])


def test_palette_images_keep_their_colour_table(tmp_path: Path, cache: SceneCache) -> None:
    index = (gradient(1, 700, 900) % 4).astype(np.uint8)
    source = tmp_path / "p.gif"
    with warnings.catch_warnings(), rasterio.open(source, "w", driver="GIF", width=900, height=700, count=1,
                                                  dtype="uint8") as dst:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dst.write(index)
        dst.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255), 3: (9, 9, 9, 255)})
    with open_scene(source, cache=cache) as scene:
        assert scene.info.colorinterp == ("palette",)
        np.testing.assert_array_equal(scene.read(scene.full_box), index)
        with rasterio.open(Path(scene.info.cache) / "L0.tif") as cached:
            assert cached.colormap(1)[2] == (0, 0, 255, 255)


def test_tiled_geotiffs_are_read_in_place(tmp_path: Path, cache: SceneCache) -> None:
    source = write_raster(tmp_path / "tiled.tif", gradient(3, 700, 900))
    with open_scene(source, cache=cache) as scene:
        assert scene.info.cache is None and scene.info.driver == "GTiff"
    assert cache.entries() == []


def test_progress_is_reported_row_by_row(tmp_path: Path, cache: SceneCache) -> None:
    source = write(tmp_path / "a.png", gradient(3, 1300, 600), "PNG")
    seen = []
    with open_scene(source, cache=cache, progress=seen.append):
        pass
    done = [p.done for p in seen]
    assert done == sorted(done) and done[-1] == 1300 and len(done) >= 3 and {p.total for p in seen} == {1300}


# --- bad files ----------------------------------------------------------------------------------------------


def _truncated_png(tmp: Path) -> Path:
    good = write(tmp / "good.png", np.random.default_rng(1).integers(0, 255, (3, 700, 900), dtype=np.uint8), "PNG")
    blob = good.read_bytes()
    bad = tmp / "truncated.png"
    bad.write_bytes(blob[: len(blob) // 2])
    return bad


def _jpeg_with_wrong_size(tmp: Path) -> Path:
    blob = bytearray(write(tmp / "ok.jpg", gradient(3, 700, 900), "JPEG").read_bytes())
    sof = blob.find(b"\xff\xc0")
    height = int.from_bytes(blob[sof + 5:sof + 7], "big")
    blob[sof + 5:sof + 7] = (height * 2).to_bytes(2, "big")  # the header promises twice the rows it holds
    bad = tmp / "wrong-size.jpg"
    bad.write_bytes(bytes(blob))
    return bad


@pytest.mark.parametrize("make", [_truncated_png, _jpeg_with_wrong_size])
def test_undecodable_sources_are_refused_with_one_line_and_nothing_kept(make, tmp_path: Path, cache: SceneCache) -> None:
    bad = make(tmp_path)
    with pytest.raises(RasterReadError) as info:
        open_scene(bad, cache=cache)
    message = str(info.value)
    assert message.startswith(str(bad)) and "truncated or corrupt" in message and "\n" not in message
    assert cache.entries() == [] and cache.temporaries() == []


# --- processes: reuse, kill and resume, one conversion at a time ----------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys, time
    from rsrag.tools.raster import open_scene
    from rsrag.tools.scene_cache import SceneCache

    source, root, pause = sys.argv[1], sys.argv[2], sys.argv[3]
    events = []

    def wait():
        if pause.replace(".", "").isdigit():
            time.sleep(float(pause))
            return
        from pathlib import Path
        deadline = time.time() + 120
        while not Path(pause).exists() and time.time() < deadline:  # until the test says go
            time.sleep(0.05)

    def progress(p):
        events.append(p)
        if p.waiting:
            print("waiting", flush=True)
        elif len([e for e in events if not e.waiting]) == 1:
            print("started", flush=True)
            wait()

    with open_scene(source, cache=SceneCache(root, min_pixels=0), progress=progress) as scene:
        first = scene.read(scene.full_box)[:, :5, :5].tolist()
        print(json.dumps({"converted": any(not e.waiting for e in events), "waited": any(e.waiting for e in events),
                          "cache": scene.info.cache, "corner": first}), flush=True)
""")


def _child(tmp: Path, source: Path, cache: SceneCache, pause: float | Path = 0.0) -> subprocess.Popen[str]:
    script = tmp / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen([sys.executable, str(script), str(source), str(cache.root), str(pause)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_a_conversion_is_reused_by_another_process(tmp_path: Path, cache: SceneCache) -> None:
    data = gradient(3, 1100, 700)
    source = write(tmp_path / "a.png", data, "PNG")
    with open_scene(source, cache=cache) as scene:
        created = cache.entries()[0].created
        folder = scene.info.cache
    result = _result(_child(tmp_path, source, cache))
    assert result == {"converted": False, "waited": False, "cache": folder, "corner": data[:, :5, :5].tolist()}
    assert [e.created for e in cache.entries()] == [created]


def test_a_killed_conversion_leaves_nothing_complete_and_the_next_open_converts_again(tmp_path: Path,
                                                                                       cache: SceneCache) -> None:
    data = gradient(3, 1600, 900)
    source = write(tmp_path / "a.png", data, "PNG")
    proc = _child(tmp_path, source, cache, pause=120)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    proc.kill()
    proc.wait(timeout=30)
    assert cache.entries() == [] and len(cache.temporaries()) == 1  # a partial folder, never listed as an entry
    seen = []
    with open_scene(source, cache=cache, progress=seen.append) as scene:
        assert seen and seen[-1].done == 1600  # converted from the start
        np.testing.assert_array_equal(scene.read(scene.full_box), data)
    assert len(cache.entries()) == 1 and cache.temporaries() == []  # the leftover was removed


def test_two_processes_convert_a_source_once(tmp_path: Path, cache: SceneCache) -> None:
    source = write(tmp_path / "a.png", gradient(3, 1600, 900), "PNG")
    go = tmp_path / "go"
    first = _child(tmp_path, source, cache, pause=go)  # holds the conversion until `go` exists
    assert first.stdout is not None and first.stdout.readline().strip() == "started"
    second = _child(tmp_path, source, cache)
    assert second.stdout is not None and second.stdout.readline().strip() == "waiting"
    go.touch()
    a, b = _result(first), _result(second)
    assert a["converted"] and not b["converted"] and b["waited"] and a["cache"] == b["cache"]
    assert len(cache.entries()) == 1


# --- size limit ---------------------------------------------------------------------------------------------


def _pngs(tmp: Path, n: int) -> list[Path]:
    return [write(tmp / f"{i}.png", np.roll(gradient(3, 700, 900), 7 * i, axis=2), "PNG") for i in range(n)]


def _open_close(source: Path, cache: SceneCache) -> None:
    with open_scene(source, cache=cache):
        pass
    time.sleep(0.05)  # distinct last-used times


def test_least_recently_used_entries_are_evicted_first(tmp_path: Path) -> None:
    a, b, c = _pngs(tmp_path, 3)
    probe = SceneCache(tmp_path / "probe", min_pixels=0)
    _open_close(a, probe)
    cache = SceneCache(tmp_path / "cache", max_bytes=int(probe.entries()[0].bytes * 2.5), min_pixels=0)
    for source in (a, b, a, c):  # a is used again after b, so b is the least recently used when c arrives
        _open_close(source, cache)
    assert {e.source for e in cache.entries()} == {str(a), str(c)}
    assert cache.total_bytes() <= cache.max_bytes  # type: ignore[operator]


def test_an_entry_in_use_is_never_evicted(tmp_path: Path) -> None:
    a, b = _pngs(tmp_path, 2)
    cache = SceneCache(tmp_path / "cache", max_bytes=1, min_pixels=0)  # smaller than any entry
    held = open_scene(a, cache=cache)
    _open_close(b, cache)
    assert {e.source for e in cache.entries()} == {str(a), str(b)}  # a is in use, b was just made
    np.testing.assert_array_equal(held.read(held.full_box), raw(a))
    held.close()
    assert len(cache.evict()) == 2 and cache.entries() == []


def test_clear_removes_entries_and_leftovers_but_not_entries_in_use(tmp_path: Path, cache: SceneCache) -> None:
    a = write(tmp_path / "a.png", gradient(3, 700, 900), "PNG")
    b = write(tmp_path / "b.png", np.roll(gradient(3, 700, 900), 5, axis=1), "PNG")
    with open_scene(a, cache=cache):
        pass
    held = open_scene(b, cache=cache)
    (cache.tmp_dir / "0123abcd-converted.999.dead").mkdir()  # a killed conversion's leftover
    report = cache.clear()
    assert report.removed == 1 and report.temporaries == 1 and len(report.in_use) == 1
    assert [e.source for e in cache.entries()] == [str(b)]
    np.testing.assert_array_equal(held.read(held.full_box), raw(b))  # still readable
    held.close()
    assert cache.clear([cache.entries()[0].fingerprint[:8]]).removed == 1 and cache.entries() == []


# --- tiled without overviews ----------------------------------------------------------------------------------


def test_a_large_decimated_read_of_a_tiled_file_without_overviews_builds_cached_levels(tmp_path: Path,
                                                                                          cache: SceneCache) -> None:
    yy, xx = np.mgrid[0:2048, 0:2048]
    data = np.stack([xx // 10, yy // 10, (xx + yy) // 20]).astype(np.uint8)  # smooth ramps
    source = write_raster(tmp_path / "tiled.tif", data)
    with open_scene(source, cache=cache) as scene:
        assert scene.info.overviews == () and scene.info.cache is None
        scene.read(PixelBox(x0=0, y0=0, x1=512, y1=512), out_shape=(64, 64))  # small: read in place
        assert cache.entries() == []
        small = scene.read(scene.full_box, out_shape=(256, 256))
        assert scene.info.overviews == (2, 4) and scene.info.cache is not None
        assert [e.kind for e in cache.entries()] == ["overviews"]
        blocks = data.reshape(3, 256, 8, 256, 8).astype(float).mean(axis=(2, 4))
        assert np.abs(small.astype(float) - blocks).max() <= 2
        np.testing.assert_array_equal(scene.read(PixelBox(x0=3, y0=5, x1=40, y1=60)), data[:, 5:60, 3:40])
    with open_scene(source, cache=cache) as again:  # levels found at once by the next open's first big read
        again.read(again.full_box, out_shape=(256, 256))
        assert len(cache.entries()) == 1 and again.info.overviews == (2, 4)
