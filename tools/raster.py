"""The raster engine: open any raster GDAL reads, describe it, and read windows of it without loading it.

A :class:`Scene` wraps one image source: a local file (GeoTIFF, COG, VRT, JPEG, PNG, ...) or a remote object
(``https://``, ``s3://``, ``gs://``, ``az://``, read by byte ranges; see :mod:`rsrag.tools.sources`). It never
reads the whole image: every read is a window, optionally decimated to a smaller output shape, in which case
it is served from the closest overview. Reads are thread-safe: each thread gets its own rasterio dataset
handle, so reader threads can decode windows in parallel with an encoder.

Given a :class:`~rsrag.tools.scene_cache.SceneCache`, a source without efficient random access (PNG, JPEG,
striped TIFF, ...; see :func:`~rsrag.tools.scene_cache.conversion_reason`) is converted on first open into
a tiled pyramid in the cache, and reads go there; a tiled source without overviews gets cached coarser
levels the first time a decimated read needs them. The scene still names its source (``path``,
``info.path``), keeps the source's fingerprint, and its pixel grid is the source's.

Example:
    >>> with open_scene("scene.tif") as scene:                                  # doctest: +SKIP
    ...     rgb = scene.read_display(PixelBox(x0=0, y0=0, x1=2048, y1=2048), out_size=(1024, 1024))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.env import set_gdal_config
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from rsrag.tools.display import DisplayOptions, Stretch, alpha_band, choose_bands, valid_mask
from rsrag.tools.errors import (
    GeoreferenceError,
    InvalidRasterError,
    RasterNotFoundError,
    RasterOpenError,
    WindowError,
)
from rsrag.tools.georef import (
    crs_string,
    ground_sample_distance,
    lonlat_to_map_box,
    map_box_to_lonlat,
    map_box_to_pixel,
    pixel_box_to_map,
)
from rsrag.tools.region import MapBox, PixelBox, Region
from rsrag.tools.sources import RemotePath, Source, open_options, parse_source

if TYPE_CHECKING:
    from rsrag.tools.scene_cache import CacheHandle, ProgressCallback, SceneCache

#: GDAL block cache per process, in MiB. GDAL's own default is 5% of RAM, which dominates memory when
#: streaming a very large image; a bounded cache keeps the footprint flat. It must still hold the tiles a
#: window read touches in all its bands: without a cache a decimated read decodes every tile once per band
#: (3.7x the CPU of a 64 MiB cache for the pyramid's 896 px windows; BENCHMARKS.md, "Pyramid index").
#: Applied before the first dataset opens; a ``GDAL_CACHEMAX`` environment variable set by the user takes
#: precedence.
GDAL_CACHE_MB = 64

_FINGERPRINT_SAMPLES = 16
_FINGERPRINT_CHUNK = 4096
_HEADER_BYTES = 65536
_STRETCH_SAMPLE_SIDE = 1024


@dataclass(frozen=True)
class SceneInfo:
    """Metadata of a scene; cheap to compute, JSON-friendly through :meth:`as_dict`."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    crs: str | None
    transform: tuple[float, ...]
    overviews: tuple[int, ...]
    block_shape: tuple[int, int]
    colorinterp: tuple[str, ...]
    gsd: tuple[float, float] | None
    cache: str | None = None
    """The scene-cache folder reads are served from (``None``: the source is read in place)."""
    cache_reason: str | None = None
    """Why the source is read from the cache (``PNG decodes sequentially ...``)."""
    mask: bool = False
    """The file has a per-dataset mask band (an internal mask or a ``.msk`` file) saying which pixels hold data;
    its converted copy in the cache carries it too."""

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _bound_gdal_cache() -> None:
    """Cap GDAL's block cache at :data:`GDAL_CACHE_MB` unless the user set ``GDAL_CACHEMAX`` themselves.

    GDAL reads the option once, when its cache is first used, so this runs before the first dataset opens.
    """
    global _cache_bounded
    if not _cache_bounded:
        if "GDAL_CACHEMAX" not in os.environ:
            # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64 as BYTES (unlike the environment
            # variable, which GDAL reads as MB below 100,000): 256 here was a 256-byte cache, i.e. none
            set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB << 20)
        os.environ.setdefault("JPEGMEM", f"{libjpeg_budget_mb()}M")
        _cache_bounded = True


def has_dataset_mask(ds: Any) -> bool:
    """Whether a dataset's pixels are masked by a per-dataset mask band (an internal mask or a ``.msk`` file),
    rather than by a nodata value or an alpha band (which GDAL also reports as masks)."""
    from rasterio.enums import MaskFlags

    return any(MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags for flags in ds.mask_flag_enums)


def sample_dtype(name: str) -> np.dtype:
    """The numpy type samples of a rasterio data type name are read as: GDAL's complex integers
    (``complex_int16``, the samples of SAR single-look complex products; numpy has no such type) are read as
    ``complex64``, every other name is numpy's own."""
    return np.dtype("complex64") if name.startswith("complex_int") else np.dtype(name)


def libjpeg_budget_mb() -> int:
    """The memory libjpeg may use to decode one JPEG (``JPEGMEM``, in MB), unless the user set ``JPEGMEM``.

    A progressive JPEG is decoded whole (libjpeg keeps every coefficient); GDAL refuses one whose decoder
    would need more than ``JPEGMEM`` (500 MB by default: a 20,000 px progressive JPEG already fails). Measured
    here, a 20,000 x 20,000 px one that GDAL estimates at 602 MB peaks at 2.4 GB, so the budget is a quarter of
    the memory available now (never below GDAL's 500 MB): what fits is decoded, what does not is refused with
    :func:`rsrag.tools.sources.read_error`'s advice instead of exhausting the machine.
    """
    available = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) // 1024
                break
    if available is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    return max(500, (available or 2048) // 4)


_cache_bounded = False


def _check_path(path: Path) -> None:
    if not path.exists():
        if path.is_symlink():  # the link itself exists: say what is wrong with it, not "no such file"
            try:
                path.resolve(strict=True)
            except RuntimeError:  # Python 3.11 reports a loop this way
                raise RasterOpenError(f"{path}: is a symbolic link that loops back on itself; point it at an image") from None
            except OSError as exc:
                if exc.errno == 40:  # ELOOP
                    raise RasterOpenError(f"{path}: is a symbolic link that loops back on itself; point it at an "
                                          "image") from None
            raise RasterNotFoundError(f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist")
        raise RasterNotFoundError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise RasterOpenError(f"{path}: is a directory; {_directory_advice(path)}")
    if path.stat().st_size == 0:
        raise RasterOpenError(f"{path}: the file is empty (0 bytes); re-export or re-download the image")


_DIRECTORY_SCAN = 5000
"""Entries of a directory given as an image that are looked at to say which image inside it to give."""


def _directory_advice(path: Path) -> str:
    """What to give instead of a directory: a Sentinel-2 product's true-colour image, a Zarr store converted
    to a GeoTIFF, the one image inside it, or one of its images (or the folder as a catalog)."""
    import itertools

    from rsrag.tools.sources import RASTER_SUFFIXES

    if any((path / marker).exists() for marker in (".zarray", ".zgroup", "zarr.json")):
        return (f"it is a Zarr store, and rsrag reads image files: convert it first, e.g. `rio convert {path} "
                "image.tif --driver GTiff --co TILED=YES --co BLOCKXSIZE=512 --co BLOCKYSIZE=512` (rasterio's "
                "command), and give the GeoTIFF")
    entries = list(itertools.islice(path.rglob("*"), _DIRECTORY_SCAN))
    if path.suffix.upper() == ".SAFE" or any(e.name.startswith("MTD_MSI") for e in entries):
        tci = sorted((e for e in entries if "_TCI" in e.name and e.suffix.lower() == ".jp2"),
                     key=lambda e: ("10m" not in e.name, len(str(e))))
        if tci:
            return f"it is a Sentinel-2 product: give its true-colour image, {tci[0]}"
    images = sorted(e for e in entries if e.suffix.lower() in RASTER_SUFFIXES and e.is_file())
    if len(images) == 1:
        return f"give the image inside it, {images[0]}"
    if images:
        return (f"it holds {len(images)}{'+' if len(entries) == _DIRECTORY_SCAN else ''} images: give one (e.g. "
                f"{images[0]}), or add the folder as a catalog (`rsrag catalog add {path}`) to ask across them")
    return "give an image file (GeoTIFF, COG, VRT, JPEG or PNG) inside it"


def _check_vrt_sources(vrt: str, files: list[str]) -> None:
    """Refuse a local VRT whose local source files do not exist (GDAL opens it, then fails on every read)."""
    folder = Path(vrt).parent
    missing = [f for f in files if not f.startswith("/vsi") and not (folder / f).exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise RasterOpenError(f"{vrt}: the VRT refers to {missing[0]}{more}, which does not exist; fix its "
                              "SourceFilename (a relative one starts at the VRT's folder) or give the image itself")


class Scene:
    """One raster image, opened for windowed reading.

    Use :func:`open_scene` to create one. A scene is a context manager; :meth:`close` releases every
    thread's dataset handle (and its hold on a cache entry).

    Attributes:
        path: the source: a :class:`~pathlib.Path` for a local file, a :class:`~rsrag.tools.sources.RemotePath`
            (a ``str`` with ``name``/``suffix``) for a remote one. Provenance and traces record it.
        source: the parsed source (:class:`~rsrag.tools.sources.Source`).
        info: metadata; ``driver``, data types, CRS and transform are the source's; ``overviews`` and
            ``block_shape`` describe what reads use (the cached pyramid when ``info.cache`` is set).
    """

    def __init__(self, path: str | os.PathLike[str] | Source, display: DisplayOptions | None = None, *,
                 cache: SceneCache | None = None, progress: ProgressCallback | None = None) -> None:
        self.source = parse_source(path)
        self.path: Path | RemotePath = self.source.local_path or RemotePath(self.source.text)
        self.display_options = display or DisplayOptions()
        self._cache = cache
        self._progress = progress
        self._local = threading.local()
        self._handles: list[rasterio.io.DatasetReader] = []
        self._lock = threading.Lock()
        self._stretch_lock = threading.Lock()  # held while the stretch is fitted, which reads (and takes _lock)
        self._stretch: Stretch | None = None
        self._sha256: str | None = None
        self._levels: dict[int, str] = {0: self.source.gdal_path}
        self._held: list[CacheHandle] = []
        self._open_options = open_options(self.source)
        self._overviews_tried = False
        if self.source.is_remote:
            from rsrag.tools.sources import probe_remote

            self._remote = probe_remote(self.source)
            self.__dict__["fingerprint"] = self._remote.fingerprint
        try:
            ds = self._dataset()
            self._describe(ds)
            self._route(ds)
        except BaseException:
            self.close()
            raise

    def _describe(self, ds: rasterio.io.DatasetReader) -> None:
        path = self.source.text
        if ds.driver == "VRT" and not self.source.is_remote:  # before GDAL is asked anything of its sources
            _check_vrt_sources(path, ds.files[1:])
        self.info = SceneInfo(
            path=path,
            driver=ds.driver,
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtypes=tuple(ds.dtypes),
            nodata=ds.nodata,
            crs=crs_string(ds.crs) if ds.crs else None,
            transform=tuple(ds.transform)[:6],
            overviews=tuple(ds.overviews(1)) if ds.count else (),
            block_shape=tuple(ds.block_shapes[0]) if ds.count else (0, 0),
            colorinterp=tuple(c.name for c in ds.colorinterp),
            gsd=ground_sample_distance(ds.transform) if ds.crs else None,
            mask=has_dataset_mask(ds) if ds.count else False,
        )
        if ds.width <= 0 or ds.height <= 0 or ds.count <= 0:
            raise InvalidRasterError(
                f"{path}: the raster has size {ds.width} x {ds.height} with {ds.count} band(s); "
                "rsrag needs at least one band and one pixel"
            )
        self.bands = choose_bands(ds.count, list(self.info.colorinterp), self.display_options.bands, self.path.name)
        self._alpha = alpha_band(list(self.info.colorinterp))

    def _route(self, ds: rasterio.io.DatasetReader) -> None:
        """Decide where reads go: the source in place, or its converted pyramid in the cache."""
        from rsrag.tools.scene_cache import conversion_reason

        info = self.info
        layout = (info.driver, info.width, info.height, info.block_shape)
        reason = self._cache.reason(*layout) if self._cache is not None else conversion_reason(*layout)
        if reason is None:
            return
        if self._cache is None:
            if self.source.is_remote:
                raise RasterOpenError(
                    f"{self.source.text}: {reason}, so it must be converted into the scene cache before windows "
                    "can be read from it; open it with a scene cache (rsrag does this by default)")
            return  # read in place: correct, only slower
        handle = self._cache.acquire(self.fingerprint, "converted") or self._cache.build(
            self.source.gdal_path, fingerprint=self.fingerprint, source=self.source.text, kind="converted",
            reason=reason, options=self._open_options, progress=self._progress)
        entry = handle.entry
        if (entry.width, entry.height, entry.count) != (info.width, info.height, info.count):
            handle.release()
            raise RasterOpenError(f"{self.source.text}: its scene-cache entry {entry.folder} does not match the "
                                  "source (size or bands); remove it with `rsrag cache clear` and retry")
        self._use(handle)
        self._levels = {lv.level: str(entry.path(lv.level)) for lv in entry.levels}
        self._close_handles()
        cached = self._dataset()
        self.info = replace(info, overviews=entry.factors, block_shape=tuple(cached.block_shapes[0]),
                            cache=str(entry.folder), cache_reason=reason)

    def _use(self, handle: CacheHandle) -> None:
        with self._lock:
            self._held.append(handle)

    # --- handles ------------------------------------------------------------------------------------

    def _dataset(self, level: int = 0) -> rasterio.io.DatasetReader:
        handles = getattr(self._local, "ds", None)
        if handles is None:
            handles = self._local.ds = {}
        ds = handles.get(level)
        if ds is None:
            _bound_gdal_cache()
            path = self._levels[level]
            remote = path == self.source.gdal_path and self.source.is_remote
            try:
                with warnings.catch_warnings(), rasterio.Env(**(self._open_options if remote else {})):
                    # A plain photo or PNG has no geotransform; rsrag then works in pixel coordinates.
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    ds = rasterio.open(path)
            except RasterioIOError as exc:
                if remote:
                    from rsrag.tools.sources import gdal_error

                    found = gdal_error(self.source, str(exc))
                    if found is not None:
                        raise found from exc
                raise RasterOpenError(
                    f"{self.source.text}: not a raster rsrag can read ({exc}); give a GeoTIFF, COG, VRT, JPEG or PNG"
                ) from exc
            handles[level] = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def _close_handles(self) -> None:
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()
        self._local = threading.local()

    def close(self) -> None:
        """Close every dataset handle opened by any thread, and release the scene's cache entries."""
        self._close_handles()
        with self._lock:
            held, self._held = self._held, []
        for handle in held:
            handle.release()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scene({self.path.name!r}, {self.width}x{self.height}, bands={self.count}, crs={self.info.crs})"

    # --- metadata -----------------------------------------------------------------------------------

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def count(self) -> int:
        return self.info.count

    @property
    def crs(self) -> str | None:
        return self.info.crs

    @property
    def transform(self) -> Affine:
        return Affine(*self.info.transform)

    @property
    def has_alpha(self) -> bool:
        """True when an alpha band marks which pixels hold data."""
        return bool(self._alpha)

    @property
    def may_lack_data(self) -> bool:
        """True when some pixels can be without data: the file declares a nodata value or an alpha band, or
        its pixels are floating point (NaN), or it has a per-dataset mask band; otherwise every mask of :meth:`read_display_valid` is all True."""
        return (self.info.nodata is not None or self.has_alpha or self.info.mask
                or any(d.startswith("float") for d in self.info.dtypes))

    @property
    def georeferenced(self) -> bool:
        """True when the scene has a CRS, so map coordinates are meaningful."""
        return self.info.crs is not None

    @property
    def full_box(self) -> PixelBox:
        return PixelBox(x0=0, y0=0, x1=self.width, y1=self.height)

    @cached_property
    def fingerprint(self) -> str:
        """A cheap identity of the source's content (hex, 32 chars): for a local file its size, mtime, header
        and sampled blocks; for a remote object its size, ETag or Last-Modified, first and last 64 KiB.

        It changes when the file is rewritten. For an audit-grade content hash use :meth:`sha256`.
        """
        assert isinstance(self.path, Path)  # a remote scene's fingerprint is set when it opens
        stat = self.path.stat()
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        with open(self.path, "rb") as fh:
            digest.update(fh.read(_HEADER_BYTES))
            for i in range(_FINGERPRINT_SAMPLES):
                fh.seek(stat.st_size * i // _FINGERPRINT_SAMPLES)
                digest.update(fh.read(_FINGERPRINT_CHUNK))
            fh.seek(max(0, stat.st_size - _HEADER_BYTES))
            digest.update(fh.read(_HEADER_BYTES))
        return digest.hexdigest()

    def sha256(self) -> str:
        """Full SHA-256 of the source file (streams the whole file once, remote ones too; cached)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            if isinstance(self.path, Path):
                with open(self.path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(chunk)
            else:
                from rsrag.tools.sources import iter_remote_bytes

                for chunk in iter_remote_bytes(self.source):
                    digest.update(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256

    # --- boxes --------------------------------------------------------------------------------------

    def check_box(self, box: PixelBox) -> PixelBox:
        """Return ``box`` if it lies inside the scene, else raise :class:`WindowError`."""
        if box.x0 < 0 or box.y0 < 0 or box.x1 > self.width or box.y1 > self.height:
            raise WindowError(
                f"{self.path.name}: box {box.as_tuple()} (x0, y0, x1, y1) lies outside the image, which is "
                f"{self.width} x {self.height} px; keep 0 <= x0 < x1 <= {self.width} and 0 <= y0 < y1 <= {self.height}"
            )
        return box

    def clip_box(self, box: PixelBox) -> PixelBox:
        """Clip ``box`` to the scene; raise :class:`WindowError` if nothing is left."""
        x0, y0 = max(box.x0, 0), max(box.y0, 0)
        x1, y1 = min(box.x1, self.width), min(box.y1, self.height)
        if x1 <= x0 or y1 <= y0:
            return self.check_box(box)  # raises with the full explanation
        return PixelBox(x0=x0, y0=y0, x1=x1, y1=y1)

    def box_from_map(self, map_box: MapBox) -> PixelBox:
        """Pixel box covering a box in the scene's CRS (or another CRS, reprojected), clipped to the scene.

        Raises:
            GeoreferenceError: the scene has no CRS.
            WindowError: the box does not overlap the scene.
        """
        crs = self._require_crs()
        if map_box.crs != crs:
            west, south, east, north = map_box_to_lonlat(map_box)
            map_box = lonlat_to_map_box(west, south, east, north, crs)
        return self.clip_box(map_box_to_pixel(map_box, self.transform))

    def box_from_lonlat(self, west: float, south: float, east: float, north: float) -> PixelBox:
        """Pixel box covering a longitude/latitude box (degrees, WGS 84), clipped to the scene."""
        return self.box_from_map(lonlat_to_map_box(west, south, east, north, self._require_crs()))

    def _require_crs(self) -> str:
        if self.info.crs is None:
            raise GeoreferenceError(
                f"{self.path.name} has no coordinate reference system; give boxes in pixel coordinates"
            )
        return self.info.crs

    def region(self, box: PixelBox, scale: int | None = None) -> Region:
        """A :class:`Region` of this scene, with its map box when georeferenced."""
        map_box = pixel_box_to_map(box, self.transform, self.info.crs) if self.info.crs else None
        return Region(scene=self.fingerprint, box=box, map_box=map_box, scale=scale)

    # --- reading ------------------------------------------------------------------------------------

    def read(
        self,
        box: PixelBox,
        out_shape: tuple[int, int] | None = None,
        bands: tuple[int, ...] | None = None,
        resampling: Resampling = Resampling.bilinear,
    ) -> np.ndarray:
        """Read raw values of a window, at full resolution or decimated.

        Args:
            box: the window in full-resolution pixels; must lie inside the scene.
            out_shape: ``(height, width)`` of the output; smaller than the box decimates (GDAL reads
                from the best overview when the file has them). ``None`` reads at full resolution.
            bands: 1-based band indexes; ``None`` reads every band.
            resampling: resampling used when ``out_shape`` differs from the box size.

        Returns:
            Array of shape (bands, height, width) in the scene's data type.

        Raises:
            WindowError: the box lies outside the scene or ``out_shape`` is not positive.
            RasterReadError: the pixels could not be decoded (truncated or corrupt file).
        """
        indexes = list(bands) if bands is not None else None
        level, window = self._locate(box, out_shape)
        shape = None
        if out_shape is not None:
            shape = ((len(indexes) if indexes else self.count), out_shape[0], out_shape[1])
        try:
            return self._dataset(level).read(indexes, window=window, out_shape=shape, resampling=resampling)
        except RasterioError as exc:
            from rsrag.tools.sources import read_error

            raise read_error(self.source, box.as_tuple(), exc) from exc

    def read_mask(self, box: PixelBox, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Read the per-dataset mask band of a window (see :attr:`SceneInfo.mask`): True where a pixel holds data.

        Decimated like :meth:`read` (nearest neighbour); all True when the file has no such mask.

        Raises:
            WindowError: the box lies outside the scene or ``out_shape`` is not positive.
            RasterReadError: the mask could not be decoded.
        """
        level, window = self._locate(box, out_shape)
        if not self.info.mask:
            shape = out_shape or (box.height, box.width)
            return np.ones(shape, dtype=bool)
        try:
            mask = self._dataset(level).read_masks(1, window=window, out_shape=out_shape,
                                                   resampling=Resampling.nearest)
        except RasterioError as exc:
            from rsrag.tools.sources import read_error

            raise read_error(self.source, box.as_tuple(), exc) from exc
        return np.asarray(mask > 0)

    def _locate(self, box: PixelBox, out_shape: tuple[int, int] | None) -> tuple[int, Window]:
        """Check a read and say where it goes: (level to read, window in that level's pixels)."""
        self.check_box(box)
        if out_shape is not None and (out_shape[0] <= 0 or out_shape[1] <= 0):
            raise WindowError(f"{self.path.name}: out_shape {out_shape} must be positive (height, width)")
        level = self._level_for(box, out_shape)
        window = Window(box.x0, box.y0, box.width, box.height)
        if level:
            f = 2 ** level
            x0, y0 = box.x0 // f, box.y0 // f
            window = Window(x0, y0, max(1, -(-box.x1 // f) - x0), max(1, -(-box.y1 // f) - y0))
        return level, window

    def _level_for(self, box: PixelBox, out_shape: tuple[int, int] | None) -> int:
        """The coarsest cached level whose pixels are still at least as fine as the output's (0: the source
        or its full-resolution copy, where GDAL picks the file's own overviews)."""
        if out_shape is None:
            return 0
        factor = min(box.width / out_shape[1], box.height / out_shape[0])
        if len(self._levels) == 1 and factor >= self._overview_trigger():
            self._ensure_overviews(box)
        level = 0
        while level + 1 in self._levels and 2 ** (level + 1) <= factor + 1e-9:
            level += 1
        return level

    def _overview_trigger(self) -> float:
        from rsrag.tools.scene_cache import OVERVIEW_TRIGGER

        return OVERVIEW_TRIGGER

    def _ensure_overviews(self, box: PixelBox) -> None:
        """Build the cached coarser levels of a tiled source without overviews, once, when a decimated read
        would otherwise decode every full-resolution pixel of a large box."""
        from rsrag.tools.scene_cache import OVERVIEW_MIN_PIXELS

        if self._cache is None or self._overviews_tried or self.info.overviews or self.info.cache:
            return
        if box.width * box.height < OVERVIEW_MIN_PIXELS:
            return
        with self._lock:
            if self._overviews_tried:
                return
            self._overviews_tried = True
        handle = self._cache.acquire(self.fingerprint, "overviews") or self._cache.build(
            self.source.gdal_path, fingerprint=self.fingerprint, source=self.source.text, kind="overviews",
            reason="tiled without overviews: decimated reads", options=self._open_options, progress=self._progress)
        self._use(handle)
        entry = handle.entry
        levels = dict(self._levels)
        levels.update({lv.level: str(entry.path(lv.level)) for lv in entry.levels})
        self._levels = levels
        self.info = replace(self.info, overviews=entry.factors, cache=str(entry.folder),
                            cache_reason="tiled without overviews: coarser levels for decimated reads")

    def read_display(self, box: PixelBox, out_size: tuple[int, int] | None = None) -> np.ndarray:
        """Read a window as display-ready RGB.

        Args:
            box: the window in full-resolution pixels; must lie inside the scene.
            out_size: ``(height, width)`` of the output, or ``None`` for full resolution.

        Returns:
            (height, width, 3) uint8 array; pixels without data are black.
        """
        return self.read_display_valid(box, out_size)[0]

    def read_display_valid(self, box: PixelBox, out_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read_display` and the (height, width) mask of its pixels that hold data (by the scene's
        nodata value, alpha band, per-dataset mask band and non-finite values; all True when the file declares
        none), from one read of the bands (and one of the mask band, when the file has one)."""
        data, valid = self._read_valid(box, out_size, Resampling.bilinear)
        return self.stretch.apply(data, valid), valid

    def _read_valid(self, box: PixelBox, out_size: tuple[int, int] | None,
                    resampling: Resampling) -> tuple[np.ndarray, np.ndarray]:
        """The display bands' raw values of a window and the mask of its pixels that hold data."""
        wanted = self.bands + ((self._alpha,) if self._alpha else ())
        unique = tuple(dict.fromkeys(wanted))
        raw = self.read(box, out_shape=out_size, bands=unique, resampling=resampling)
        data = np.stack([raw[unique.index(b)] for b in self.bands])
        if np.iscomplexobj(data):  # complex samples (SAR single-look complex): shown by their amplitude
            data = np.abs(data)
        alpha = raw[unique.index(self._alpha)] if self._alpha else None
        valid = valid_mask(data, self.info.nodata, alpha)
        if self.info.mask:
            valid &= self.read_mask(box, out_shape=data.shape[1:])
        return data, valid

    @property
    def stretch(self) -> Stretch:
        """The scene's display stretch, computed once (from an overview or a sample of windows)."""
        if self._stretch is None:
            with self._stretch_lock:
                if self._stretch is None:
                    self._stretch = self._fit_stretch()
        return self._stretch

    def _fit_stretch(self) -> Stretch:
        if self.info.dtypes[self.bands[0] - 1] == "uint8" and not self.display_options.stretch_uint8:
            return Stretch.identity()
        windows = self._stretch_windows()
        reads = [self._read_valid(box, shape, Resampling.nearest) for box, shape in windows]
        sample = np.concatenate([data.reshape(3, 1, -1) for data, _ in reads], axis=2)  # (3, 1, N): one long row
        valid = np.concatenate([v.reshape(1, -1) for _, v in reads], axis=1)
        return Stretch.from_sample(sample, valid, self.display_options.percentiles)

    def _stretch_windows(self) -> Iterator[tuple[PixelBox, tuple[int, int]]]:
        """Where to sample the stretch: the whole image decimated when cheap, else a grid of windows."""
        longest = max(self.width, self.height)
        factor = longest / _STRETCH_SAMPLE_SIDE
        if factor <= 1 or (self.info.overviews and max(self.info.overviews) >= factor / 2):
            yield self.full_box, self.full_box.fit_within(_STRETCH_SAMPLE_SIDE)
            return
        side = 256
        for row in range(4):
            for col in range(4):
                x = int((self.width - side) * (col + 0.5) / 4)
                y = int((self.height - side) * (row + 0.5) / 4)
                yield PixelBox.from_xywh(x, y, side, side), (side, side)


def open_scene(
    path: str | os.PathLike[str] | Source,
    display: DisplayOptions | None = None,
    *,
    cache: SceneCache | None = None,
    progress: ProgressCallback | None = None,
) -> Scene:
    """Open an image as a :class:`Scene`.

    Args:
        path: a local GeoTIFF, COG, VRT, JPEG, PNG or any other raster GDAL reads, or a remote one
            (``https://``, ``s3://``, ``gs://``, ``az://``; see :func:`rsrag.tools.sources.parse_source`).
        display: band selection and stretch options for :meth:`Scene.read_display`.
        cache: the scene cache; sources without efficient random access are converted into it on first open
            (``None``: local ones are read in place, slowly; remote ones that need converting are refused).
        progress: called while the source is converted into the cache.

    Raises:
        RasterNotFoundError: the path (or remote object) does not exist.
        RasterOpenError: the path is a directory, empty, or not a raster.
        InvalidRasterError: the raster has no pixels or no bands, or the display bands do not exist.
        RasterReadError: converting the source failed because its pixels cannot be decoded.
        RemoteAccessError, RemoteUnavailableError, RemoteTimeoutError, RangeRequestsUnsupportedError: a
            remote source cannot be read (see :func:`rsrag.tools.sources.probe_remote`).
    """
    source = parse_source(path)
    if source.local_path is not None:
        _check_path(source.local_path)
    return Scene(source, display, cache=cache, progress=progress)

