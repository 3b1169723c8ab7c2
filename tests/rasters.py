"""Tiny generated rasters with real CRS and transforms, for tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin

RasterFactory = Callable[..., Path]

#: UTM zone 33N, 0.5 m pixels: a plausible aerial scene near 15 E, 45 N.
UTM_CRS = "EPSG:32633"
UTM_ORIGIN = (500000.0, 5000000.0)
PIXEL_SIZE = 0.5


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = UTM_CRS,
    transform: rasterio.Affine | None = None,
    nodata: float | None = None,
    driver: str = "GTiff",
    tiled: bool = True,
    overviews: tuple[int, ...] = (),
    colorinterp: tuple[ColorInterp, ...] | None = None,
    mask: np.ndarray | None = None,
    mask_file: bool = False,
) -> Path:
    """Write ``data`` (bands, rows, cols) to ``path`` with a real CRS and geotransform.

    ``mask`` (rows, cols; 0 = no data) is written as a per-dataset mask band: internal to the TIFF, or a
    ``.msk`` file beside it with ``mask_file``.
    """
    count, height, width = data.shape
    profile: dict = {
        "driver": driver, "width": width, "height": height, "count": count, "dtype": data.dtype.name,
    }
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = transform or from_origin(*UTM_ORIGIN, PIXEL_SIZE, PIXEL_SIZE)
    if nodata is not None:
        profile["nodata"] = nodata
    if driver == "GTiff":
        profile.update(compress="deflate")
        if colorinterp is not None and ColorInterp.alpha in colorinterp:
            profile["alpha"] = "YES"  # GTiff records alpha only as a creation option (ExtraSamples)
        if tiled and width >= 16 and height >= 16:
            block = 256 if min(width, height) >= 256 else 16
            profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=not mask_file), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask.astype(np.uint8) * 255)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
        if overviews:
            dst.build_overviews(list(overviews), Resampling.average)
    return path


def gradient(count: int, height: int, width: int, dtype: str = "uint8") -> np.ndarray:
    """A deterministic test pattern: each band a different ramp, so band order is visible."""
    yy, xx = np.mgrid[0:height, 0:width]
    bands = [(xx * (b + 1) + yy * (count - b)) % 251 for b in range(count)]
    return np.stack(bands).astype(dtype)


def write_complex_int16(path: Path, data: np.ndarray, **options: object) -> Path:
    """Write complex samples (bands, rows, cols) as GDAL's CInt16 (how SAR single-look complex products store
    them; numpy has no such type, so the parts go through a raw file and a VRT), with ``options`` for the
    GeoTIFF (e.g. ``blockysize`` for strips, ``tiled``)."""
    import rasterio.shutil

    count, height, width = data.shape
    raw = path.with_suffix(".raw")
    parts = np.stack([np.rint(data.real), np.rint(data.imag)], axis=-1).astype("<i2")  # (bands, rows, cols, 2)
    parts.tofile(raw)
    band_bytes = height * width * 4
    bands = "".join(
        f'<VRTRasterBand dataType="CInt16" band="{b + 1}" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativetoVRT="1">{raw.name}</SourceFilename><ImageOffset>{b * band_bytes}</ImageOffset>'
        f'<PixelOffset>4</PixelOffset><LineOffset>{4 * width}</LineOffset><ByteOrder>LSB</ByteOrder></VRTRasterBand>'
        for b in range(count))
    x0, y0 = UTM_ORIGIN
    vrt = path.with_suffix(".vrt")
    vrt.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{UTM_CRS}</SRS>'
                   f'<GeoTransform>{x0}, {PIXEL_SIZE}, 0, {y0}, 0, {-PIXEL_SIZE}</GeoTransform>{bands}</VRTDataset>')
    rasterio.shutil.copy(vrt, path, driver="GTiff", **options)
    vrt.unlink()
    raw.unlink()
    return path
