"""The scene cache: images without efficient random access, converted once into tiled pyramids.

GDAL decodes a PNG or a JPEG from the top for every window, and a striped TIFF decodes whole-width strips,
so windowed reads of them cost time that grows with the image (a 10,000 px PNG: about a second a window).
On first open such a source is converted by :meth:`SceneCache.build` in **one sequential pass**: strips of
rows are read in order (for PNG/JPEG a single forward decode), written to a tiled (256 x 256), ZSTD-compressed
GeoTIFF, and averaged 2 x 2 on the fly into each coarser level, every level its own tiled GeoTIFF; levels stop
when the longest side is at most 512 px. CRS, geotransform, GCPs, nodata, colour interpretation, palette,
band descriptions and tags are kept; the pixel grid is the source's, so evidence coordinates are the
source's. A per-dataset mask band (an internal mask or a ``.msk`` file) is carried into every level as that
level's internal mask (read alongside each strip, halved with it). Levels with nodata, a palette or a mask are
subsampled (nearest) instead of averaged, so nodata never mixes into valid pixels.

A tiled source without overviews is read in place; when a decimated read needs a pyramid (see
:data:`OVERVIEW_TRIGGER`) only the coarser levels are built, the same way (kind ``overviews``).

Why levels as separate files rather than GDAL's internal overviews: building GDAL overviews after the pass
re-reads and re-decompresses the whole image (measured 2.5-3.5x the CPU of the whole conversion at
10,000-20,000 px, BENCHMARKS.md); here every level is produced from the strips already in memory.

Layout under the cache folder::

    entries/<fingerprint>-<kind>/manifest.json, L0.tif, L1.tif, ...   complete entries only
    tmp/<fingerprint>-<kind>.<pid>.<random>/                          conversions in progress (L*.tif, and
                                                                      checkpoint.json + ckpt*.npy once one is recorded)
    locks/<fingerprint>-<kind>.lock (build), .use (readers), cache.lock (eviction)

Safety: an entry appears only by renaming its finished folder into ``entries/`` (atomic), so a conversion
killed part-way leaves nothing that looks complete. One process converts a given source at a time (a file
lock); the others wait and reuse its result. Readers hold a shared lock on the entries they use, so eviction
(least recently used first, above ``max_bytes``) never deletes an entry another process is reading (POSIX; on
Windows an open file cannot be deleted, which protects it the same way).

Resume: about every :data:`CHECKPOINT_SECONDS`, between strips, a conversion records where it is: it closes its
level files (GDAL writes each TIFF's directory, so each is a valid file of the tile rows written so far) and
syncs them, saves the rows each level holds back (an unfinished tile row, an odd row not yet halved) as ``.npy``
files, replaces ``checkpoint.json`` atomically (written last, so a kill at any moment leaves the previous
checkpoint or this one in force), and reopens the files for update, where GDAL appends the next tiles. A
conversion killed (SIGKILL, a crash, Ctrl-C) leaves its folder in ``tmp/``; the next build of the same entry, in
any process, resumes it from its checkpoint when the checkpoint fits: the same key, source size, bands, type,
strip rows, method and levels, held-back rows consistent with the row reached, every level file opening with
its last recorded row decoding. Anything else is removed and the conversion starts from the top. A resumed
entry is pixel for pixel, and in its georeference, what an uninterrupted one is (tested with a real kill).
Striped and tiled sources seek to the row; for PNG and JPEG GDAL decodes from the top to reach it (their
decoders cannot start mid-image), which still saves reducing and compressing every level again. The price:
GDAL keeps ``ZSTD_LEVEL`` only in the session that creates a file, so tiles written after a level file is
reopened are compressed at ZSTD's default level 9 rather than 1 (the same pixels, about the same size, about
twice the compression CPU); measured on 2 cores (10,000 px striped TIFF), the part of a conversion after its
first checkpoint takes about 40% longer and 55% more CPU. A conversion shorter than :data:`CHECKPOINT_SECONDS`
never checkpoints and pays nothing.

Memory stays flat with image size: one strip (at most 512 rows, ~64 MiB), a partial tile row per level,
and GDAL's block cache (bounded by :data:`rsrag.tools.raster.GDAL_CACHE_MB`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import RsragError, SceneCacheError

try:  # POSIX advisory locks (shared for readers, exclusive for eviction)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

CacheKind = Literal["converted", "overviews"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
BLOCK = 256
"""Tile side of every cached level."""
SMALLEST_LEVEL = 512
"""Levels stop when the longest side is at most this many pixels."""
STRIP_BYTES = 64 << 20
"""Target bytes of one strip of source rows held in memory during a conversion."""
CHECKPOINT_SECONDS = 30.0
"""A conversion records where it is (:data:`CHECKPOINT`) after the first strip that ends this many seconds after
the start or the last record, so a killed conversion loses about this much work at most (plus one strip)."""
CHECKPOINT = "checkpoint.json"
CHECKPOINT_VERSION = 2
DEFAULT_MIN_PIXELS = 2048 * 2048
"""Sources with fewer pixels are read in place whatever their layout (decoding them whole is cheap)."""
OVERVIEW_TRIGGER = 4.0
"""A decimated read of a tiled source without overviews builds the cached levels when it decimates at least
this much and covers at least :data:`OVERVIEW_MIN_PIXELS` full-resolution pixels (it would otherwise decode
every one of them)."""
OVERVIEW_MIN_PIXELS = 2048 * 2048

SEQUENTIAL_DRIVERS = {
    "PNG": "PNG decodes sequentially from the top for every window",
    "JPEG": "JPEG decodes sequentially from the top for every window",
    "GIF": "GIF decodes sequentially from the top for every window",
    "BMP": "BMP has no tiles",
    "WEBP": "WebP decodes the whole image at once",
    "PNM": "PNM has no tiles",
}
TIFF_DRIVERS = ("GTiff", "COG")
JP2_DRIVERS = ("JP2OpenJPEG", "JP2KAK", "JP2ECW", "JP2Lura", "JPEG2000")
HUGE_BLOCK_PIXELS = 2048 * 2048
"""A block (tile or strip) with more pixels than this is decoded whole for every small window read."""


def conversion_reason(driver: str, width: int, height: int, block_shape: tuple[int, int],
                      min_pixels: int = DEFAULT_MIN_PIXELS) -> str | None:
    """Why a source needs converting, or ``None`` when it reads efficiently in place.

    Decided by driver and block shape (``(rows, cols)``): PNG, JPEG, GIF, BMP, WebP and PNM always (above
    ``min_pixels``); a TIFF whose blocks span the full width (striped or untiled) or are huge; a JPEG 2000
    stored as a single tile. A tiled GeoTIFF/COG or a tiled JPEG 2000 is read in place.
    """
    if width * height <= min_pixels:
        return None
    rows, cols = block_shape
    if driver in SEQUENTIAL_DRIVERS:
        return SEQUENTIAL_DRIVERS[driver]
    if driver in TIFF_DRIVERS:
        if cols >= width and rows < height:
            return f"striped TIFF ({rows}-row strips over the full {width} px width)"
        if cols >= width:
            return "untiled TIFF (one block holds the whole image)"
        if rows * cols > HUGE_BLOCK_PIXELS:
            return f"TIFF with huge {cols} x {rows} px tiles"
        return None
    if driver in JP2_DRIVERS and rows >= height and cols >= width:
        return "JPEG 2000 without tiles (one codestream tile holds the whole image)"
    return None


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """``(width, height)`` of every level, full resolution first; each halves (rounding up) the previous."""
    sizes = [(width, height)]
    while max(sizes[-1]) > SMALLEST_LEVEL:
        w, h = sizes[-1]
        sizes.append(((w + 1) // 2, (h + 1) // 2))
    return sizes


@dataclass(frozen=True)
class ConversionProgress:
    """Progress of one cache build, passed to the progress callback after every strip.

    Attributes:
        source: the source being converted.
        kind: ``converted`` (every level) or ``overviews`` (the coarser levels of a tiled source).
        done: source rows processed; total: rows in the source.
        elapsed_s: seconds since the build started.
        waiting: True while another process builds the same entry and this one waits for it.
        resumed_from: the source row a conversion killed part-way resumed at (0: converted from the top).
    """

    source: str
    kind: CacheKind
    done: int
    total: int
    elapsed_s: float
    waiting: bool = False
    resumed_from: int = 0


ProgressCallback = Callable[[ConversionProgress], None]


class CacheLevel(BaseModel):
    """One level of a cache entry: its file (in the entry's folder) and size; level ``k`` is ``2**k`` coarser."""

    model_config = ConfigDict(frozen=True)

    level: int
    file: str
    width: int
    height: int


class CacheEntry(BaseModel):
    """A complete cache entry (its manifest, and where it lives)."""

    model_config = ConfigDict(frozen=True)

    key: str
    fingerprint: str
    kind: CacheKind
    source: str
    reason: str
    driver: str
    width: int
    height: int
    count: int
    levels: tuple[CacheLevel, ...]
    bytes: int
    created: float
    seconds: float
    folder: Path
    last_used: float

    def path(self, level: int) -> Path:
        """The file of one level."""
        for lv in self.levels:
            if lv.level == level:
                return self.folder / lv.file
        raise KeyError(level)

    @property
    def factors(self) -> tuple[int, ...]:
        """Decimation factors of the levels coarser than full resolution (2, 4, 8, ...)."""
        return tuple(2 ** lv.level for lv in self.levels if lv.level > 0)


class ClearReport(BaseModel):
    """What :meth:`SceneCache.clear` removed."""

    model_config = ConfigDict(frozen=True)

    removed: int
    freed_bytes: int
    in_use: tuple[str, ...]
    """Keys of entries kept because a process is reading them."""
    temporaries: int
    """Leftovers of killed conversions removed."""


class CacheHandle:
    """A complete entry held for reading: while held (until :meth:`release`), eviction leaves it alone."""

    def __init__(self, entry: CacheEntry, lock_fd: int | None) -> None:
        self.entry = entry
        self._fd = lock_fd
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # closing drops the shared lock
                self._fd = None

    def __del__(self) -> None:  # a scene that was never closed still lets eviction proceed at exit
        with contextlib.suppress(Exception):
            self.release()


class SceneCache:
    """The converted-scene cache in one folder.

    Args:
        root: the cache folder (created on first write).
        max_bytes: size limit; after each build, least recently used entries are evicted above it (an
            entry bigger than the limit is kept alone). ``None``: no limit.
        min_pixels: sources with at most this many pixels are never converted.
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None, *,
                 min_pixels: int = DEFAULT_MIN_PIXELS) -> None:
        self.root = Path(root).expanduser().absolute()
        self.max_bytes = max_bytes
        self.min_pixels = min_pixels

    def __repr__(self) -> str:
        return f"SceneCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # --- folders --------------------------------------------------------------------------------------

    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def _ensure(self) -> None:
        try:
            for folder in (self.entries_dir, self.tmp_dir, self.locks_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SceneCacheError(f"cannot create the scene cache in {self.root} ({exc.strerror or exc}); set "
                                  "cache.path (RSRAG_CACHE__PATH) to a writable folder") from exc

    @staticmethod
    def key(fingerprint: str, kind: CacheKind) -> str:
        return f"{fingerprint}-{kind}"

    def reason(self, driver: str, width: int, height: int, block_shape: tuple[int, int]) -> str | None:
        """:func:`conversion_reason` with this cache's ``min_pixels``."""
        return conversion_reason(driver, width, height, block_shape, self.min_pixels)

    # --- reading entries ----------------------------------------------------------------------------

    def _read_manifest(self, folder: Path) -> CacheEntry | None:
        try:
            data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            if data.get("version") != MANIFEST_VERSION:
                return None
            data.pop("version")
            last_used = (folder / MANIFEST).stat().st_mtime
            entry = CacheEntry(**data, folder=folder, last_used=last_used)
        except (OSError, ValueError, TypeError):
            return None
        if not all((folder / lv.file).is_file() for lv in entry.levels):
            return None
        return entry

    def lookup(self, fingerprint: str, kind: CacheKind) -> CacheEntry | None:
        """The complete entry for a source fingerprint, or ``None`` (does not take a read lock)."""
        return self._read_manifest(self.entries_dir / self.key(fingerprint, kind))

    def acquire(self, fingerprint: str, kind: CacheKind) -> CacheHandle | None:
        """The complete entry held for reading (marked as just used), or ``None`` when there is none."""
        if not self.entries_dir.is_dir():
            return None
        key = self.key(fingerprint, kind)
        fd = self._shared_lock(key)
        entry = self.lookup(fingerprint, kind)
        if entry is None:
            if fd is not None:
                os.close(fd)
            return None
        with contextlib.suppress(OSError):
            os.utime(entry.folder / MANIFEST)
        return CacheHandle(entry.model_copy(update={"last_used": time.time()}), fd)

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, least recently used first."""
        if not self.entries_dir.is_dir():
            return []
        found = [e for f in self.entries_dir.iterdir() if f.is_dir() and (e := self._read_manifest(f)) is not None]
        return sorted(found, key=lambda e: e.last_used)

    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries())

    # --- locks ----------------------------------------------------------------------------------------

    def _shared_lock(self, key: str) -> int | None:
        if fcntl is None:
            return None
        self._ensure()
        fd = os.open(self.locks_dir / f"{key}.use", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    @contextlib.contextmanager
    def _exclusive_if_unused(self, key: str) -> Iterator[bool]:
        """Yields True holding an exclusive lock when no process reads ``key``, else False."""
        if fcntl is None:
            yield True
            return
        fd = os.open(self.locks_dir / f"{key}.use", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _build_lock(self, key: str) -> FileLock:
        return FileLock(str(self.locks_dir / f"{key}.lock"))

    # --- building -----------------------------------------------------------------------------------

    def build(
        self,
        gdal_path: str,
        *,
        fingerprint: str,
        source: str,
        kind: CacheKind,
        reason: str,
        options: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> CacheHandle:
        """Convert ``gdal_path`` into an entry (or wait for the process already doing so), held for reading.

        Args:
            gdal_path: what GDAL opens for the source (a local path or a ``/vsicurl/`` ... path).
            fingerprint: the source's fingerprint (the key, with ``kind``).
            source: the source as the user named it (kept in the manifest, shown by ``rsrag cache list``).
            kind: ``converted`` (every level, full resolution included) or ``overviews`` (levels 1.. only).
            reason: why (kept in the manifest).
            options: GDAL options in force while the source is open (remote sources).
            progress: called after every strip, and while waiting for another process.

        Raises:
            RasterReadError: the source cannot be decoded (truncated PNG, a JPEG whose header promises more
                rows than it holds); nothing is kept.
            SceneCacheError: the cache cannot be written (read-only, disk full); nothing is kept.

        A conversion interrupted by ``KeyboardInterrupt`` or ``SystemExit`` keeps its folder when it has recorded a
        checkpoint, as a killed one does, so the next build resumes it (see the module's "Resume").
        """
        self._ensure()
        key = self.key(fingerprint, kind)
        lock = self._build_lock(key)
        start = time.perf_counter()
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if progress is not None:
                progress(ConversionProgress(source, kind, 0, 0, 0.0, waiting=True))
            lock.acquire()
        try:
            held = self.acquire(fingerprint, kind)
            if held is not None:
                return held
            work = self.tmp_dir / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            # a killed build of this entry (we hold its lock): the newest with a checkpoint is resumed (its
            # checkpoint is checked against the source in _convert), every other one removed
            leftovers = sorted(self.tmp_dir.glob(f"{key}.*"), key=lambda p: p.stat().st_mtime, reverse=True)
            resumable = next((p for p in leftovers if (p / CHECKPOINT).is_file()), None)
            for stale in leftovers:
                if stale != resumable:
                    shutil.rmtree(stale, ignore_errors=True)
            if resumable is not None:
                os.replace(resumable, work)
            else:
                work.mkdir()
            try:
                manifest = _convert(gdal_path, work, key=key, kind=kind, options=options or {}, progress=progress,
                                    source=source, start=start)
                _clear_checkpoint(work)
                manifest.update(version=MANIFEST_VERSION, key=key, fingerprint=fingerprint, kind=kind, source=source,
                                reason=reason, created=time.time(), seconds=time.perf_counter() - start)
                (work / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
                fd = self._shared_lock(key)
                final = self.entries_dir / key
                if final.exists():  # an inconsistent leftover (a manifest that did not parse): replace it
                    shutil.rmtree(final, ignore_errors=True)
                os.replace(work, final)
            except OSError as exc:
                shutil.rmtree(work, ignore_errors=True)
                if isinstance(exc, RsragError):
                    raise
                raise SceneCacheError(f"cannot write the scene cache in {self.root} ({exc.strerror or exc}); free "
                                      "disk space, lower cache.max_gb, or set cache.path to another folder") from exc
            except BaseException as exc:
                # an interrupted conversion (Ctrl-C, SystemExit) keeps its checkpoint, like a killed one, so the
                # next build resumes it; a failed one leaves nothing
                if isinstance(exc, Exception) or not (work / CHECKPOINT).is_file():
                    shutil.rmtree(work, ignore_errors=True)
                raise
            entry = self._read_manifest(final)
            if entry is None:  # pragma: no cover - we just wrote it
                raise SceneCacheError(f"the scene cache entry {final} could not be read back after writing it")
            handle = CacheHandle(entry, fd)
        finally:
            lock.release()
        self.evict(keep={key})
        return handle

    # --- eviction and clearing ------------------------------------------------------------------------

    def evict(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove least recently used entries (not in use, not in ``keep``) until the cache fits ``max_bytes``.

        Returns:
            The keys removed.
        """
        if self.max_bytes is None or not self.entries_dir.is_dir():
            return []
        kept = set(keep)
        removed: list[str] = []
        with FileLock(str(self.locks_dir / "cache.lock")):
            entries = self.entries()
            total = sum(e.bytes for e in entries)
            for entry in entries:
                if total <= self.max_bytes:
                    break
                if entry.key in kept:
                    continue
                if self._remove(entry):
                    total -= entry.bytes
                    removed.append(entry.key)
        return removed

    def _remove(self, entry: CacheEntry) -> bool:
        with self._exclusive_if_unused(entry.key) as free:
            if not free:
                return False
            trash = self.tmp_dir / f"evicted-{entry.key}.{uuid.uuid4().hex[:8]}"
            try:
                os.replace(entry.folder, trash)  # gone from entries/ at once; deleted below
            except OSError:
                return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def clear(self, match: Iterable[str] | None = None) -> ClearReport:
        """Remove entries not in use, and leftovers of killed conversions.

        Args:
            match: only entries whose fingerprint or key starts with one of these, or whose source equals one
                (``None``: every entry).
        """
        if not self.root.is_dir():
            return ClearReport(removed=0, freed_bytes=0, in_use=(), temporaries=0)
        self._ensure()
        wanted = None if match is None else [m for m in match if m]
        removed = freed = temporaries = 0
        in_use: list[str] = []
        with FileLock(str(self.locks_dir / "cache.lock")):
            for entry in self.entries():
                if wanted is not None and not any(entry.key.startswith(m) or entry.source == m for m in wanted):
                    continue
                if self._remove(entry):
                    removed += 1
                    freed += entry.bytes
                else:
                    in_use.append(entry.key)
            for leftover in self.tmp_dir.iterdir():
                key = leftover.name.split(".", 1)[0]
                if leftover.name.startswith("evicted-"):
                    shutil.rmtree(leftover, ignore_errors=True)
                    continue
                if wanted is not None and not any(key.startswith(m) for m in wanted):
                    continue
                lock = self._build_lock(key)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue  # a conversion in progress
                try:
                    shutil.rmtree(leftover, ignore_errors=True)
                    temporaries += 1
                finally:
                    lock.release()
        return ClearReport(removed=removed, freed_bytes=freed, in_use=tuple(in_use), temporaries=temporaries)

    def temporaries(self) -> list[Path]:
        """Folders of conversions in progress or killed part-way."""
        return sorted(self.tmp_dir.iterdir()) if self.tmp_dir.is_dir() else []


# --- the streaming conversion ---------------------------------------------------------------------------


def _strip_rows(src: Any) -> int:
    """Rows read per strip: a multiple of :data:`BLOCK` near :data:`STRIP_BYTES`, covering whole source
    strips when the source is striped with tall strips (so each is decoded once)."""
    from rsrag.tools.raster import sample_dtype

    row_bytes = src.width * src.count * sample_dtype(src.dtypes[0]).itemsize
    rows = max(BLOCK, min(2 * BLOCK, STRIP_BYTES // max(1, row_bytes) // BLOCK * BLOCK))
    block_rows, block_cols = src.block_shapes[0]
    if block_cols >= src.width and block_rows > rows and block_rows * row_bytes <= 4 * STRIP_BYTES:
        rows = -(-block_rows // BLOCK) * BLOCK
    return rows


def _profile(src: Any, width: int, height: int) -> dict[str, Any]:
    from affine import Affine
    from rasterio.enums import ColorInterp

    from rsrag.tools.raster import sample_dtype

    dtype = sample_dtype(src.dtypes[0])  # complex integers are cached as the complex64 they are read as
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": width, "height": height, "count": src.count, "dtype": dtype.name,
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "zstd", "zstd_level": 1,
        "bigtiff": "IF_SAFER", "interleave": "pixel", "num_threads": "ALL_CPUS",
    }
    if np.issubdtype(dtype, np.integer):
        profile["predictor"] = 2  # horizontal differencing: ~15% smaller for ~15% more compression time
    if src.crs is not None:
        profile["crs"] = src.crs
    if src.transform is not None and not src.transform.is_identity:
        profile["transform"] = src.transform * Affine.scale(src.width / width, src.height / height)
    if src.nodata is not None:
        profile["nodata"] = src.nodata
    interp = tuple(src.colorinterp)
    if src.count >= 3 and interp[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue) \
            and src.dtypes[0] in ("uint8", "uint16"):
        profile["photometric"] = "RGB"
    if ColorInterp.alpha in interp:
        profile["alpha"] = "YES"
    return profile


def _method(src: Any) -> str:
    from rasterio.enums import ColorInterp

    from rsrag.tools.raster import has_dataset_mask, sample_dtype

    if src.nodata is not None or ColorInterp.palette in tuple(src.colorinterp):
        return "nearest"
    if has_dataset_mask(src) or np.issubdtype(sample_dtype(src.dtypes[0]), np.complexfloating):
        return "nearest"  # (complex samples: averaging would cancel their phases)
    return "average"


def _reduce(data: np.ndarray, method: str) -> np.ndarray:
    """Halve (rounding up) rows and columns: a 2 x 2 box average, or the top-left pixel (``nearest``)."""
    if method == "nearest":
        return np.ascontiguousarray(data[:, ::2, ::2])
    if data.dtype == np.uint8:
        from PIL import Image

        return np.stack([np.asarray(Image.fromarray(band).reduce(2)) for band in data])
    bands, h, w = data.shape
    padded = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge").astype(np.float64)
    mean = padded.reshape(bands, (h + 1) // 2, 2, (w + 1) // 2, 2).mean(axis=(2, 4))
    if np.issubdtype(data.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(data.dtype)


class _LevelWriter:
    """Writes one level's rows in order, a whole tile row at a time (so GDAL compresses full tiles only).

    With ``masked``, the rows carry the source's per-dataset mask as one band after the data bands, and it is
    written to the level file's own internal mask band.
    """

    def __init__(self, ds: Any, level: int, masked: bool = False) -> None:
        self.ds = ds
        self.level = level
        self.masked = masked
        self.row = 0
        self.pending: list[np.ndarray] = []  # rows not yet written
        self.carry: np.ndarray | None = None  # rows of the finer level not yet halved (an odd one)

    def write(self, rows: np.ndarray, final: bool) -> None:
        from rasterio.windows import Window

        if rows.shape[1]:
            self.pending.append(rows)
        have = sum(p.shape[1] for p in self.pending)
        take = have if final else have // BLOCK * BLOCK
        if not take:
            return
        data = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
        window = Window(0, self.row, data.shape[2], take)
        if self.masked:
            self.ds.write(data[:-1, :take], window=window)
            self.ds.write_mask(data[-1, :take], window=window)
        else:
            self.ds.write(data[:, :take], window=window)
        self.row += take
        self.pending = [data[:, take:]] if take < data.shape[1] else []


def _convert(gdal_path: str, work: Path, *, key: str, kind: CacheKind, options: dict[str, str],
             progress: ProgressCallback | None, source: str, start: float) -> dict[str, Any]:
    """Convert the source into level files in ``work``, resuming from ``work``'s checkpoint when it has one that
    fits (see :func:`_checkpoint` and :func:`_restore`); returns the manifest's content."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.windows import Window

    from rsrag.tools.raster import _bound_gdal_cache, has_dataset_mask, sample_dtype
    from rsrag.tools.sources import parse_source, read_error

    _bound_gdal_cache()
    src_info = parse_source(source)
    with warnings.catch_warnings(), rasterio.Env(GDAL_ERROR_ON_LIBJPEG_WARNING="TRUE", **options):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        record = _read_json(work / CHECKPOINT)
        if record is not None and not _checkpoint_files_decode(work, record):
            record = None
        with rasterio.open(gdal_path) as src:
            sizes = level_sizes(src.width, src.height)
            first = 0 if kind == "converted" else 1
            method = _method(src)
            masked = has_dataset_mask(src)
            rows = _strip_rows(src)
            levels: list[dict[str, Any]] = [{"level": level, "file": f"L{level}.tif", "width": w, "height": h}
                                            for level, (w, h) in enumerate(sizes) if level >= first]
            plan: dict[str, Any] = {  # what the conversion does; a checkpoint is resumed only when it records the same
                "version": CHECKPOINT_VERSION, "key": key, "kind": kind, "driver": src.driver, "width": src.width,
                "height": src.height, "count": src.count, "dtype": sample_dtype(src.dtypes[0]).name, "strip_rows": rows,
                "method": method, "mask": masked, "levels": levels}
            writers = [_LevelWriter(None, lv["level"], masked) for lv in levels]
            resumed = _restore(work, record, plan, writers)
            if resumed == 0:  # from the top: nothing of an earlier attempt is kept
                for leftover in work.iterdir():
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            try:
                for writer, lv in zip(writers, levels):
                    if resumed:
                        writer.ds = rasterio.open(work / lv["file"], "r+", num_threads="ALL_CPUS")
                    else:
                        writer.ds = rasterio.open(work / lv["file"], "w", **_profile(src, lv["width"], lv["height"]))
                        _copy_metadata(src, writer.ds)
                if resumed and progress is not None:  # at once: reaching the row may take a while (PNG, JPEG)
                    progress(ConversionProgress(source, kind, resumed, src.height, time.perf_counter() - start,
                                                resumed_from=resumed))
                last_checkpoint = time.perf_counter()
                for y in range(resumed, src.height, rows):
                    n = min(rows, src.height - y)
                    final = y + n >= src.height
                    try:
                        data = src.read(window=Window(0, y, src.width, n))
                        if masked:  # the mask rides along as one more band, halved with the data (nearest)
                            mask = src.read_masks(1, window=Window(0, y, src.width, n))
                            data = np.concatenate([data, mask[None].astype(data.dtype)])
                    except RasterioError as exc:
                        raise read_error(src_info, (0, y, src.width, y + n), exc) from exc
                    _feed(writers, data, final, method, full=kind == "converted")
                    if not final and time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS:
                        _checkpoint(work, plan, writers, y + n, [work / lv["file"] for lv in levels])
                        last_checkpoint = time.perf_counter()
                    if progress is not None:
                        progress(ConversionProgress(source, kind, y + n, src.height, time.perf_counter() - start,
                                                    resumed_from=resumed))
            finally:
                for writer in writers:
                    if writer.ds is not None:
                        writer.ds.close()
            driver, width, height, count = src.driver, src.width, src.height, src.count
    size = sum((work / lv["file"]).stat().st_size for lv in levels)
    return {"driver": driver, "width": width, "height": height, "count": count, "levels": levels, "bytes": size}


def _fsync(path: Path) -> None:
    """Flush a closed file's data to the disk (so a checkpoint never names rows that a crash could lose)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_array(path: Path, data: np.ndarray) -> str:
    """Write ``data`` to ``path`` as ``.npy`` (through a temporary file, synced, then renamed); returns its name."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, data, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path.name


def _checkpoint(work: Path, plan: dict[str, Any], writers: list[_LevelWriter], next_row: int,
                files: list[Path]) -> None:
    """Record where the conversion is, so a kill loses only the work done since.

    Every level file is closed (GDAL writes its TIFF directory, so it is a valid file holding the rows written
    so far) and synced; the rows each level holds back (an unfinished tile row, an odd row not yet halved) go
    to ``.npy`` files named after this checkpoint; then ``checkpoint.json`` is replaced atomically; then the
    files are reopened for update (GDAL appends the next tiles; at ZSTD's default level, see the module's
    "Resume"). A kill at any point leaves the previous checkpoint or this one in force, and the level files hold
    at least what it says (rows written after it are written again on resume).

    Args:
        work: the conversion's folder.
        plan: what the conversion does (recorded, and compared by :func:`_restore`).
        writers: every level's writer; their datasets are replaced by the reopened ones.
        next_row: the first source row not yet fed to the writers.
        files: the level files, in the writers' order.
    """
    import rasterio

    for writer in writers:
        writer.ds.close()
        writer.ds = None
    for path in files:
        _fsync(path)
    previous = _read_json(work / CHECKPOINT)
    serial = int(previous.get("serial", 0)) + 1 if previous else 1
    state = []
    for writer in writers:
        pending = (np.concatenate(writer.pending, axis=1) if len(writer.pending) > 1 else writer.pending[0]) \
            if writer.pending else None
        state.append({
            "level": writer.level, "row": writer.row,
            "pending": _save_array(work / f"ckpt{serial}-L{writer.level}-pending.npy", pending)
            if pending is not None else None,
            "carry": _save_array(work / f"ckpt{serial}-L{writer.level}-carry.npy", writer.carry)
            if writer.carry is not None else None,
        })
    record = {**plan, "serial": serial, "next_row": next_row, "writers": state}
    tmp = work / (CHECKPOINT + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, work / CHECKPOINT)
    for old in work.glob("ckpt*.npy"):  # the previous checkpoint's held-back rows
        if not old.name.startswith(f"ckpt{serial}-"):
            old.unlink(missing_ok=True)
    for writer, path in zip(writers, files):
        writer.ds = rasterio.open(path, "r+", num_threads="ALL_CPUS")  # as the files were created


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object read from ``path``, or ``None`` when the file is missing, unreadable or not an object."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _checkpoint_files_decode(work: Path, record: dict[str, Any]) -> bool:
    """Whether the level files a checkpoint names open with the size it records and hold the rows it says.

    Called before the source is opened: a failed read leaves GDAL's error state set until the next open, and
    rasterio would report it from an unrelated call.

    Args:
        work: the conversion's folder.
        record: the checkpoint (its ``levels`` and ``writers``).
    """
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    try:
        rows = {int(w["level"]): int(w["row"]) for w in record["writers"]}
        for lv in record["levels"]:
            if not isinstance(lv["file"], str) or Path(lv["file"]).name != lv["file"]:
                return False
            with rasterio.open(work / lv["file"]) as ds:  # the TIFF directory written at the checkpoint
                if (ds.width, ds.height, ds.count, ds.dtypes[0]) != (lv["width"], lv["height"], record["count"],
                                                                       record["dtype"]):
                    return False
                row = rows[int(lv["level"])]
                if 0 < row <= ds.height:  # the last tile row it says is written is there and decodes
                    ds.read(window=Window(0, row - 1, ds.width, 1))
    except (KeyError, TypeError, ValueError, OSError, RasterioError):
        return False
    return True


def _restore(work: Path, record: dict[str, Any] | None, plan: dict[str, Any], writers: list[_LevelWriter]) -> int:
    """The source row to resume at from a checkpoint, with the writers' held-back rows restored.

    The checkpoint is trusted only when it describes this very conversion and is consistent in itself: its plan
    (cache key, source size, bands, type, strip rows, method, levels) equals ``plan``; the rows each level has
    written plus those it holds back are exactly what halving ``next_row`` source rows gives; and the held-back
    rows have the level's width, bands and type. (Its level files are checked by
    :func:`_checkpoint_files_decode`.)

    Args:
        work: the conversion's folder (where the held-back rows are).
        record: the checkpoint read from ``work``, or ``None`` (none, or its files do not decode).
        plan: what this conversion will do (the checkpoint's plan must equal it).
        writers: one per level, in order; their ``row``, ``pending`` and ``carry`` are set when the checkpoint
            is trusted, left alone otherwise.

    Returns:
        The source row to continue from, or 0 (convert from the top) when there is no checkpoint or it is not
        trusted.
    """
    if record is None or {k: record.get(k) for k in plan} != plan:
        return 0
    try:
        state = {int(w["level"]): w for w in record["writers"]}
        next_row = int(record["next_row"])
        if not 0 < next_row < plan["height"] or sorted(state) != [w.level for w in writers]:
            return 0
        restored: list[tuple[int, np.ndarray | None, np.ndarray | None]] = []
        rows_in, width_in = next_row, int(plan["width"])  # what the first level is fed: source rows
        for i, (writer, lv) in enumerate(zip(writers, plan["levels"])):
            halves = i > 0 or plan["kind"] != "converted"
            produced = rows_in // 2 if halves else rows_in
            w = state[writer.level]
            row = int(w["row"])
            pending = _load_rows(work, w["pending"], plan, int(lv["width"]))
            carry = _load_rows(work, w["carry"], plan, width_in)
            held = 0 if pending is None else pending.shape[1]
            carried = 0 if carry is None else carry.shape[1]
            if row % BLOCK or row + held != produced or held >= BLOCK or carried != (rows_in % 2 if halves else 0):
                return 0
            restored.append((row, pending, carry))
            rows_in, width_in = produced, int(lv["width"])
    except (KeyError, TypeError, ValueError, EOFError, OSError):
        return 0
    for writer, (row, pending, carry) in zip(writers, restored):
        writer.row, writer.pending, writer.carry = row, [pending] if pending is not None else [], carry
    return next_row


def _load_rows(work: Path, name: Any, plan: dict[str, Any], width: int) -> np.ndarray | None:
    """Rows a level held back at the checkpoint (``None`` when it held none), as saved by :func:`_save_array`.

    Args:
        work: the conversion's folder.
        name: the file's name as the checkpoint records it (``None``: no rows held back).
        plan: the conversion's plan (bands and type of the rows).
        width: the width the rows must have.

    Raises:
        ValueError: the name is not a file of ``work``, or the array is not ``(bands, rows, width)`` rows of the
            source's type.
    """
    if name is None:
        return None
    if not isinstance(name, str) or not name.startswith("ckpt") or Path(name).name != name:
        raise ValueError(f"not a checkpoint file: {name!r}")
    data = np.load(work / name, allow_pickle=False)
    bands = plan["count"] + bool(plan.get("mask"))  # the mask rides along as one more band
    if data.ndim != 3 or data.shape[0] != bands or data.shape[2] != width or data.dtype != np.dtype(plan["dtype"]):
        raise ValueError(f"{name}: {data.dtype} {data.shape}, not rows of {bands} x {width} {plan['dtype']}")
    return data


def _clear_checkpoint(work: Path) -> None:
    """Remove the checkpoint and its held-back rows (the finished entry holds its manifest and levels only)."""
    (work / CHECKPOINT).unlink(missing_ok=True)
    for leftover in (*work.glob("ckpt*.npy"), *work.glob("*.tmp")):
        leftover.unlink(missing_ok=True)


def _feed(writers: list[_LevelWriter], data: np.ndarray, final: bool, method: str, full: bool) -> None:
    """Write a strip of full-resolution rows to every level, halving it level after level."""
    rows = data
    for i, writer in enumerate(writers):
        if i > 0 or not full:
            if writer.carry is not None:
                rows = np.concatenate([writer.carry, rows], axis=1)
                writer.carry = None
            even = rows.shape[1] if final else rows.shape[1] // 2 * 2
            if even < rows.shape[1]:
                writer.carry = rows[:, even:]
            rows = _reduce(rows[:, :even], method) if even else rows[:, :0, :(rows.shape[2] + 1) // 2]
        writer.write(rows, final)


def _copy_metadata(src: Any, dst: Any) -> None:
    from rasterio.enums import ColorInterp

    with contextlib.suppress(ValueError, TypeError):
        dst.colorinterp = src.colorinterp
    if ColorInterp.palette in tuple(src.colorinterp):
        with contextlib.suppress(ValueError, KeyError):
            dst.write_colormap(1, src.colormap(1))
    if src.descriptions and any(src.descriptions):
        dst.descriptions = src.descriptions
    tags = src.tags()
    if tags:
        dst.update_tags(**tags)
    gcps, gcp_crs = src.gcps
    if gcps and src.crs is None:
        dst.gcps = (gcps, gcp_crs)
