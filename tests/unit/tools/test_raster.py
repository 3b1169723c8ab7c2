"""The raster engine: opening, metadata, fingerprints, windowed and decimated reads, display conversion."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from rasterio.enums import ColorInterp

from rsrag.tools.display import DisplayOptions
from rsrag.tools.errors import (
    InvalidRasterError,
    RasterError,
    RasterNotFoundError,
    RasterOpenError,
    RasterReadError,
    RsragError,
    WindowError,
)
from rsrag.tools.raster import open_scene
from rsrag.tools.region import PixelBox

from tests.rasters import gradient, write_raster


def test_metadata_of_a_real_landsat_scene(shared_data: Path) -> None:
    with open_scene(shared_data / "geotiff" / "RGB.byte.tif") as scene:
        assert (scene.width, scene.height, scene.count) == (791, 718, 3)
        assert scene.info.dtypes == ("uint8",) * 3
        assert scene.info.nodata == 0
        assert scene.crs == "EPSG:32618"
        assert scene.georeferenced
        assert scene.info.gsd == pytest.approx((300.04, 300.04), abs=0.01)
        rgb = scene.read_display(PixelBox(x0=300, y0=300, x1=400, y1=400))
        assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
        assert rgb.mean() > 10  # the centre of the scene has data


def test_full_resolution_window_matches_the_pixels_written(make_raster) -> None:
    data = gradient(3, 64, 80)
    with open_scene(make_raster(data)) as scene:
        window = scene.read(PixelBox(x0=10, y0=5, x1=30, y1=25))
        np.testing.assert_array_equal(window, data[:, 5:25, 10:30])
        rgb = scene.read_display(PixelBox(x0=10, y0=5, x1=30, y1=25))
        np.testing.assert_array_equal(rgb, np.moveaxis(data[:, 5:25, 10:30], 0, -1))


def test_decimated_read_uses_overviews_and_has_the_requested_shape(make_raster) -> None:
    data = np.zeros((1, 512, 512), dtype="uint8")
    data[:, :256, :] = 200
    path = make_raster(data, overviews=(2, 4, 8))
    with open_scene(path) as scene:
        assert scene.info.overviews == (2, 4, 8)
        small = scene.read(scene.full_box, out_shape=(64, 64))
        assert small.shape == (1, 64, 64)
        assert small[0, :30].mean() == pytest.approx(200, abs=1)
        assert small[0, 34:].mean() == pytest.approx(0, abs=1)


def test_fingerprint_is_stable_and_changes_with_content(make_raster, tmp_path: Path) -> None:
    path = make_raster(gradient(3, 64, 64), name="a.tif")
    with open_scene(path) as scene:
        first = scene.fingerprint
        digest = scene.sha256()
    with open_scene(path) as scene:
        assert scene.fingerprint == first
        assert scene.sha256() == digest and len(digest) == 64
    write_raster(path, gradient(3, 64, 64)[:, ::-1].copy())
    os.utime(path, ns=(1, 1))
    with open_scene(path) as scene:
        assert scene.fingerprint != first
        assert scene.sha256() != digest


def test_regions_carry_map_boxes_when_georeferenced(make_raster) -> None:
    with open_scene(make_raster()) as scene:
        region = scene.region(PixelBox(x0=0, y0=0, x1=10, y1=20), scale=0)
        assert region.map_box is not None
        assert region.map_box.crs == "EPSG:32633"
        assert region.map_box.as_tuple() == pytest.approx((500000.0, 4999990.0, 500005.0, 5000000.0))
        assert region.scene == scene.fingerprint


def test_non_georeferenced_image_works_in_pixels(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.moveaxis(gradient(3, 40, 50), 0, -1)).save(path)
    with open_scene(path) as scene:
        assert not scene.georeferenced
        region = scene.region(PixelBox(x0=0, y0=0, x1=5, y1=5))
        assert region.map_box is None
        assert scene.read_display(scene.full_box).shape == (40, 50, 3)


def test_reads_are_thread_safe(make_raster) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = gradient(3, 256, 256)
    with open_scene(make_raster(data)) as scene:
        boxes = [PixelBox.from_xywh(x, y, 32, 32) for x in range(0, 224, 32) for y in range(0, 224, 32)]
        with ThreadPoolExecutor(4) as pool:
            reads = list(pool.map(scene.read, boxes * 4))
        for box, window in zip(boxes * 4, reads):
            np.testing.assert_array_equal(window, data[:, box.y0:box.y1, box.x0:box.x1])


# --- display conversion -----------------------------------------------------------------------------


def test_uint16_is_stretched_once_per_scene_with_nodata_black(make_raster) -> None:
    data = (np.arange(100 * 100, dtype="uint16").reshape(1, 100, 100) * 6).repeat(3, axis=0)
    data[:, :10, :10] = 0
    with open_scene(make_raster(data, nodata=0)) as scene:
        low_corner = scene.read_display(PixelBox(x0=0, y0=0, x1=20, y1=20))
        high_corner = scene.read_display(PixelBox(x0=80, y0=80, x1=100, y1=100))
        assert (low_corner[:10, :10] == 0).all()  # nodata stays black
        assert high_corner.min() > 200  # stretch comes from the scene, not from this window
        assert low_corner[10:, 10:].max() < 60


def test_float32_with_nan_nodata(make_raster) -> None:
    data = np.linspace(0.0, 1.0, 3 * 32 * 32, dtype="float32").reshape(3, 32, 32)
    data[:, 0, :] = np.nan
    with open_scene(make_raster(data, nodata=float("nan"))) as scene:
        rgb = scene.read_display(scene.full_box)
        assert rgb.dtype == np.uint8
        assert (rgb[0] == 0).all()
        assert rgb[1:].max() == 255 and rgb[1:].min() < 30


def test_single_band_becomes_grey_rgb(make_raster) -> None:
    data = gradient(1, 32, 32)
    with open_scene(make_raster(data)) as scene:
        rgb = scene.read_display(scene.full_box)
        assert rgb.shape == (32, 32, 3)
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_two_band_grey_alpha_masks_transparent_pixels(make_raster) -> None:
    data = gradient(2, 32, 32)
    data[1] = 255
    data[1, :, :8] = 0
    path = make_raster(data, colorinterp=(ColorInterp.gray, ColorInterp.alpha))
    with open_scene(path) as scene:
        assert scene.bands == (1, 1, 1)
        rgb = scene.read_display(scene.full_box)
        assert (rgb[:, :8] == 0).all()
        np.testing.assert_array_equal(rgb[:, 8:, 0], data[0, :, 8:])


@pytest.mark.parametrize("mask_file", [False, True], ids=["internal mask", ".msk file"])
def test_a_mask_band_marks_pixels_without_data_at_full_and_decimated_resolution(make_raster, mask_file: bool) -> None:
    # an orthophoto's collar: bright pixels the mask says hold no data (JPEG COGs keep their collar this way)
    data = np.full((3, 512, 512), 200, dtype=np.uint8)
    data[:, :, :256] = gradient(3, 512, 256)
    mask = np.zeros((512, 512), dtype=bool)
    mask[:, :256] = True
    path = make_raster(data, mask=mask, mask_file=mask_file, overviews=(2, 4))
    assert path.with_name(path.name + ".msk").exists() == mask_file
    with open_scene(path) as scene:
        assert scene.info.mask and scene.may_lack_data
        rgb, valid = scene.read_display_valid(PixelBox(x0=192, y0=0, x1=320, y1=64))
        assert valid[:, :64].all() and not valid[:, 64:].any()
        assert (rgb[:, 64:] == 0).all()  # shown black, like nodata
        _, valid = scene.read_display_valid(scene.full_box, out_size=(64, 64))  # from the overviews
        assert valid[:, :31].all() and not valid[:, 33:].any()
        np.testing.assert_array_equal(scene.read_mask(scene.full_box), mask)


def test_a_file_without_mask_band_reads_every_pixel_as_data(make_raster) -> None:
    with open_scene(make_raster(gradient(3, 64, 64))) as scene:
        assert not scene.info.mask and not scene.may_lack_data
        assert scene.read_mask(scene.full_box, out_shape=(8, 8)).all()


def test_four_band_image_shows_rgb_and_accepts_chosen_bands(make_raster) -> None:
    data = gradient(4, 32, 32)
    path = make_raster(data)
    with open_scene(path) as scene:
        assert scene.bands == (1, 2, 3)
        np.testing.assert_array_equal(scene.read_display(scene.full_box)[..., 2], data[2])
    with open_scene(path, DisplayOptions(bands=(4, 3, 2))) as scene:
        np.testing.assert_array_equal(scene.read_display(scene.full_box)[..., 0], data[3])


# --- bad input: clear errors from one tree, naming the file and what to change ------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RasterNotFoundError, match="missing.tif: no such file") as info:
        open_scene(tmp_path / "missing.tif")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, RsragError)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(RasterOpenError, match="is a directory; give an image file") as info:
        open_scene(tmp_path)
    assert isinstance(info.value, OSError)


def test_a_directory_given_as_an_image_says_which_file_to_give(tmp_path: Path) -> None:
    one = tmp_path / "one"
    (one / "sub").mkdir(parents=True)
    write_raster(one / "sub" / "scene.tif", np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(RasterOpenError, match=f"give the image inside it, {one / 'sub' / 'scene.tif'}"):
        open_scene(one)
    many = tmp_path / "many"
    many.mkdir()
    for name in ("a.tif", "b.png"):
        write_raster(many / name, np.zeros((1, 8, 8), np.uint8), driver="PNG" if name.endswith("png") else "GTiff")
    with pytest.raises(RasterOpenError, match=r"holds 2 images: give one \(e\.g\. .*a\.tif\), or add the folder as a "
                                              r"catalog \(`rsrag catalog add"):
        open_scene(many)
    safe = tmp_path / "S2A_MSIL2A_20240101T000000.SAFE"
    r10 = safe / "GRANULE" / "L2A_T33TWN" / "IMG_DATA" / "R10m"
    r10.mkdir(parents=True)
    (safe / "MTD_MSIL2A.xml").write_text("<x/>")
    for band in ("B02_10m", "TCI_10m"):
        (r10 / f"T33TWN_20240101T000000_{band}.jp2").write_bytes(b"\0")
    with pytest.raises(RasterOpenError, match="Sentinel-2 product: give its true-colour image, .*_TCI_10m.jp2"):
        open_scene(safe)
    zarr = tmp_path / "cube.zarr"
    zarr.mkdir()
    (zarr / ".zgroup").write_text("{}")
    with pytest.raises(RasterOpenError, match="Zarr store, and rsrag reads image files: convert it first"):
        open_scene(zarr)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("these are field notes, not pixels\n")
    with pytest.raises(RasterOpenError, match="notes.tif: not a raster rsrag can read"):
        open_scene(path)


def test_empty_file_is_a_zero_size_raster(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    path.write_bytes(b"")
    with pytest.raises(RasterOpenError, match=r"empty.tif: the file is empty \(0 bytes\)"):
        open_scene(path)


def test_zero_size_raster_declared_by_a_vrt(tmp_path: Path) -> None:
    path = tmp_path / "zero.vrt"
    path.write_text('<VRTDataset rasterXSize="0" rasterYSize="0"></VRTDataset>')
    with pytest.raises(RasterError, match="zero.vrt") as info:
        open_scene(path)
    assert isinstance(info.value, (OSError, ValueError))


def test_raster_without_bands(tmp_path: Path) -> None:
    path = tmp_path / "nobands.vrt"
    path.write_text('<VRTDataset rasterXSize="10" rasterYSize="10"></VRTDataset>')
    with pytest.raises(RasterError, match="nobands.vrt") as info:
        open_scene(path)
    assert isinstance(info.value, (OSError, ValueError))


def test_truncated_tiff(make_raster) -> None:
    rng = np.random.default_rng(0)
    path = make_raster(rng.integers(0, 255, (3, 512, 512), dtype="uint8"), name="cut.tif")
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(RasterError, match="cut.tif") as info:
        with open_scene(path) as scene:
            scene.read(scene.full_box)
    assert isinstance(info.value, OSError)
    if isinstance(info.value, RasterReadError):
        assert "truncated or corrupt" in str(info.value)


@pytest.mark.parametrize(
    "box",
    [PixelBox(x0=70, y0=0, x1=90, y1=10), PixelBox(x0=-5, y0=0, x1=10, y1=10), PixelBox(x0=100, y0=100, x1=110, y1=110)],
)
def test_window_outside_the_image(make_raster, box: PixelBox) -> None:
    with open_scene(make_raster(gradient(3, 64, 80))) as scene:
        with pytest.raises(WindowError, match=r"outside the image, which is 80 x 64 px") as info:
            scene.read(box)
        assert isinstance(info.value, ValueError)


def test_zero_area_box_is_rejected() -> None:
    with pytest.raises(WindowError, match="zero or negative area"):
        PixelBox(x0=5, y0=5, x1=5, y1=10)


def test_nonexistent_display_band(make_raster) -> None:
    with pytest.raises(InvalidRasterError, match=r"band\(s\) \[5\] do not exist; this image has bands 1..4"):
        open_scene(make_raster(gradient(4, 16, 16)), DisplayOptions(bands=(5, 2, 1)))


def test_boxes_from_map_and_lonlat_coordinates(make_raster) -> None:
    from rsrag.tools.georef import map_box_to_lonlat
    from rsrag.tools.region import MapBox

    with open_scene(make_raster(gradient(3, 64, 80))) as scene:
        box = PixelBox(x0=8, y0=4, x1=40, y1=30)
        region = scene.region(box)
        assert scene.box_from_map(region.map_box) == box
        lonlat = map_box_to_lonlat(region.map_box)
        from_lonlat = scene.box_from_lonlat(*lonlat)
        assert from_lonlat.contains(box) and from_lonlat.area < box.area * 1.3
        beyond = MapBox(crs="EPSG:32633", left=400000, bottom=4999990, right=500010, top=5000000)
        assert scene.box_from_map(beyond).x0 == 0  # clipped to the scene


def test_map_coordinates_on_a_plain_image_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    from rsrag.tools.errors import GeoreferenceError

    path = tmp_path / "photo.jpg"
    Image.fromarray(np.moveaxis(gradient(3, 40, 50), 0, -1)).save(path)
    with open_scene(path) as scene:
        with pytest.raises(GeoreferenceError, match="photo.jpg has no coordinate reference system"):
            scene.box_from_lonlat(15.0, 45.0, 15.1, 45.1)


def test_gdal_block_cache_is_bounded_in_mib_not_bytes(make_raster) -> None:
    """Opening a scene caps GDAL's block cache at GDAL_CACHE_MB MiB (rasterio takes the integer as bytes: a
    256-byte "cache" made every decimated read decode each tile once per band)."""
    import ctypes
    import glob

    import rasterio

    from rsrag.tools import raster

    libs = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), os.pardir, "rasterio.libs", "libgdal*"))
    if not libs or "GDAL_CACHEMAX" in os.environ:
        pytest.skip("needs the rasterio wheel's bundled libgdal and no GDAL_CACHEMAX of the user's")
    gdal = ctypes.CDLL(libs[0])
    gdal.GDALGetCacheMax64.restype = ctypes.c_int64
    with open_scene(make_raster(gradient(3, 32, 32))) as scene:
        scene.read(PixelBox(x0=0, y0=0, x1=32, y1=32))
    assert gdal.GDALGetCacheMax64() == raster.GDAL_CACHE_MB * 2**20


def test_a_vrt_whose_source_file_is_missing_is_refused_at_open_naming_it(tmp_path: Path, capfd) -> None:  # type: ignore[no-untyped-def]
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text('<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="Byte" band="1">'
                   '<SimpleSource><SourceFilename relativeToVRT="1">tiles/a.tif</SourceFilename>'
                   '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    with pytest.raises(RasterOpenError, match=r"mosaic.vrt: the VRT refers to .*tiles/a.tif, which does not exist"):
        open_scene(vrt)
    assert "ERROR" not in capfd.readouterr().err  # GDAL was not left to print its own complaint


def test_gdal_archive_paths_are_refused_with_what_to_give_instead() -> None:
    from rsrag.tools.errors import SourceError

    with pytest.raises(SourceError, match=r"/vsizip/ paths are not accepted; give the image as a file"):
        open_scene("/vsizip/scenes.zip/a.tif")
