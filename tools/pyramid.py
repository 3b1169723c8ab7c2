"""The pyramid index: a scene searched coarse to fine, encoding only what a search visits.

A flat index must encode every window of a scene before the first question is answered (about 17 minutes
for a 100,000 x 100,000 px image on two CPU cores at ``vit:448``), and one window size dilutes small objects
and cuts large ones. The pyramid instead holds the scene at several footprints:

* **Levels.** Level 0, the coarsest, covers the scene with at most ``top`` windows (default 128) read
  decimated to the encoder's input (GDAL reads them from overviews where the file has them). Each level
  below halves the window side, down to the finest level whose windows are about the encoder's input size
  at full resolution (``pyramid:SIZE`` sets that size; half the encoder's input adds one finer level for
  small objects). Windows of a level overlap (``overlap``, default 0.5: an object up to half a window is
  whole in some window), the last row and column are flush with the image edge, and a tiny or very
  elongated image simply has fewer levels (a scene smaller than one window is one level of one window).
* **Storage.** Each level is its own patch index in the :class:`~rsrag.tools.store.PatchStore` (its
  tiling id ``pyramid:SIZE:overlap=F:scale=S``, ``S`` = 0 at the finest level), versioned, per encoder,
  resumable after a kill. A level uses one chunk per window, so any set of windows can be committed, and is
  filled on demand. Until a level is complete its z-score statistics are estimated from a fixed, spread
  sample of its windows (``sample``, default 24), encoded the first time the level is touched; completing
  the level replaces them with the exact ones. Windows without data (entirely nodata in their decimated
  read: a sparse mosaic's or a COG's empty blocks) are not encoded nor stored: they count as searched and
  towards the level's completion, and the statistics are those of windows with data.
* **Descent** (:func:`descend`). A query scores the finest level that is complete (level 0 on a fresh
  scene, encoded first: a few hundred windows) with :func:`rsrag.tools.retrieval.search_index`, keeps a
  beam of the best distinct regions plus every region at or above the confidence threshold, encodes their
  children at the next level (the windows of that level inside them) and goes on down to the finest level.
  Everything encoded stays in the store, so later queries reuse it; every stored window of a level is
  scored, not only the ones this query visited. The result says which levels were searched and what share
  of the finest level's windows was scored (``finest_share``; "searched 6% of the scene" means 6% of the
  finest windows had been encoded and were ranked), and whether that was the whole finest level.
* **Completion.** :func:`build_index` (``rsrag index``) fills every level: the full index is the limit, and
  once the finest level is complete a search is a flat search over it. :class:`BackgroundFiller` fills the
  finest level in a background thread while questions are answered (``rsrag serve`` starts one), in small
  commits so searches keep priority, and stops cleanly between two batches.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import EncoderError, QueryError, TilingError
from rsrag.tools.hit import Hit, HitPath
from rsrag.tools.indexing import IndexProgress, ProgressCallback, WindowReader, default_readers, encode_units
from rsrag.tools.raster import Scene, open_scene
from rsrag.tools.region import PixelBox
from rsrag.tools.store import IndexInfo, PatchStore, Store, as_patch_store, index_key
from rsrag.tools.tiling import DEFAULT_MAX_PATCHES, PatchSpec, TilingScheme, _starts
from rsrag.tools.encoders.hubness import index_dim
from rsrag.tools.encoders.spec import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.retrieval import Calibration

DEFAULT_OVERLAP = 0.5
DEFAULT_TOP = 128
"""Most windows of level 0 (the coarsest level covers the scene with at most this many)."""
DEFAULT_SAMPLE = 24
"""Windows of an incomplete level encoded to estimate its statistics (a spread lattice of about 5 x 5)."""
DEFAULT_BEAM = 12
"""Distinct regions per query vector kept at each level and expanded into the next."""
DEFAULT_EXPAND = 24
"""Most regions per query vector expanded at each level (the beam plus those above the threshold)."""
COMMIT_WINDOWS = 64
"""Windows per atomic commit when filling a level (the unit a background filler yields after)."""
DECIMATED_MAX_BYTES = 32 << 20
"""Largest decimated image of the scene a level's windows are cropped from (RGB bytes): a level read at least
2x decimated whose whole scene fits is read once, instead of window by window (see :meth:`Pyramid.reader`)."""


# --- geometry --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One level of a scene's pyramid: square windows of one footprint over the whole scene.

    Attributes:
        level: position from the top (0 = coarsest).
        scale: position from the bottom (0 = finest); recorded as every window's ``Region.scale``.
        window: window side in full-resolution pixels (clipped at the image edge for small images).
        step: offset between neighbouring windows.
        finest: the pyramid's finest window side (part of the level's id).
        overlap: overlap between neighbours (part of the level's id).
        xs / ys: window start columns / rows (the last flush with the image edge).
        width / height: the scene size.
    """

    level: int
    scale: int
    window: int
    step: int
    finest: int
    overlap: float
    xs: tuple[int, ...]
    ys: tuple[int, ...]
    width: int
    height: int

    @property
    def count(self) -> int:
        """Windows in the level."""
        return len(self.xs) * len(self.ys)

    @property
    def tiling_id(self) -> str:
        """The level's tiling id (its patch index key part): independent of ``top``, so pyramids with
        different level-0 caps share their levels."""
        return f"pyramid:{self.finest}:overlap={self.overlap:g}:scale={self.scale}"

    def box(self, index: int) -> PixelBox:
        """The window with index ``index`` (row-major)."""
        if not 0 <= index < self.count:
            raise TilingError(f"window {index} is outside level {self.level} ({self.count} windows)")
        row, col = divmod(index, len(self.xs))
        x, y = self.xs[col], self.ys[row]
        return PixelBox(x0=x, y0=y, x1=min(x + self.window, self.width), y1=min(y + self.window, self.height))

    def spec(self, index: int, read_size: int) -> PatchSpec:
        """The window as a :class:`PatchSpec` (what the indexer reads and encodes)."""
        return PatchSpec(box=self.box(index), scale=self.scale, index=index, read_size=read_size)

    def specs(self, read_size: int) -> Iterable[PatchSpec]:
        """Every window of the level, in index order."""
        return (self.spec(i, read_size) for i in range(self.count))

    def _span(self, starts: tuple[int, ...], lo: int, hi: int, length: int) -> list[int]:
        """Positions of the windows inside ``[lo, hi)`` along one axis, plus the neighbour on each side when
        those leave an edge of the span uncovered (a parent flush with the image edge is off the grid)."""
        first = bisect.bisect_left(starts, lo)
        out = [i for i in range(first, len(starts)) if min(starts[i] + self.window, length) <= hi]
        if not out:  # the span is narrower than one window: the windows that overlap it most
            best = max(range(len(starts)), key=lambda i: min(starts[i] + self.window, length, hi) - max(starts[i], lo))
            return [best]
        if starts[out[0]] > lo and out[0] > 0:
            out.insert(0, out[0] - 1)
        if min(starts[out[-1]] + self.window, length) < hi and out[-1] + 1 < len(starts):
            out.append(out[-1] + 1)
        return out

    def inside(self, box: PixelBox, *, tiled: bool = False) -> list[int]:
        """Indexes of this level's windows that make up ``box`` (a parent window's children), row-major: the
        windows inside it, and where they leave an edge uncovered the neighbours overlapping that edge.

        With ``tiled``, only the windows that tile ``box`` side by side (every ``window / step``-th one along
        each axis, and the last): 2 x 2 instead of 3 x 3 children at half overlap. They still cover the
        whole parent, but an object on the border between two of them is cut."""
        cols = self._span(self.xs, box.x0, box.x1, self.width)
        rows = self._span(self.ys, box.y0, box.y1, self.height)
        if tiled:
            every = max(1, round(self.window / max(1, self.step)))
            cols, rows = _every(cols, every), _every(rows, every)
        return [r * len(self.xs) + c for r in rows for c in cols]

    def sample(self, n: int) -> list[int]:
        """A deterministic, spread sample of about ``n`` windows (a lattice over rows and columns)."""
        if n >= self.count:
            return list(range(self.count))
        side = max(1, math.ceil(math.sqrt(n)))
        cols = sorted({round(v) for v in np.linspace(0, len(self.xs) - 1, min(side, len(self.xs)))})
        rows = sorted({round(v) for v in np.linspace(0, len(self.ys) - 1, min(side, len(self.ys)))})
        return [r * len(self.xs) + c for r in rows for c in cols]

    def tiling(self) -> LevelTiling:
        """The level as a flat tiling scheme (same windows, same order)."""
        return LevelTiling(self)


def _every(positions: list[int], n: int) -> list[int]:
    """Every ``n``-th of ``positions`` from the first, plus the last (so their windows still reach the end)."""
    out = positions[::n]
    if out[-1] != positions[-1]:
        out.append(positions[-1])
    return out


class LevelTiling(TilingScheme):
    """One pyramid level as a :class:`TilingScheme` (its windows in index order), for the indexer."""

    def __init__(self, level: Level) -> None:
        super().__init__(level.tiling_id, max_patches=max(DEFAULT_MAX_PATCHES, level.count))
        self.level = level

    def count(self, width: int, height: int) -> int:
        return self.level.count

    def patches(self, width: int, height: int) -> Iterator[PatchSpec]:
        return iter(self.level.specs(self.level.finest))


class PyramidTiling(TilingScheme):
    """The spec of a pyramid index: ``pyramid[:SIZE][:overlap=F][:top=N][:max=N]``.

    ``SIZE`` is the finest window side (default ``auto``: the encoder's input size), ``overlap`` the overlap
    of neighbouring windows at every level (default 0.5), ``top`` the most windows of level 0 (default 128)
    and ``max`` the most windows :func:`build_index` will encode to fill every level (default 500,000; a
    search only encodes what it visits, whatever the size).
    """

    is_pyramid = True

    def __init__(self, size: int | None = None, overlap: float = DEFAULT_OVERLAP, top: int = DEFAULT_TOP,
                 max_patches: int = DEFAULT_MAX_PATCHES) -> None:
        if size is not None and size < 8:
            raise TilingError(f"pyramid window size must be at least 8 px, got {size}")
        if not 0.0 <= overlap < 1.0:
            raise TilingError(f"pyramid overlap must be in [0, 1), got {overlap}")
        if top < 1:
            raise TilingError(f"pyramid top must be at least 1 window, got {top}")
        max_txt = "" if max_patches == DEFAULT_MAX_PATCHES else f":max={max_patches}"
        super().__init__(f"pyramid:{size or 'auto'}:overlap={overlap:g}:top={top}{max_txt}", max_patches)
        self.size, self.overlap, self.top = size, overlap, top

    def resolve(self, image_size: int) -> PyramidTiling:
        """This spec with ``auto`` replaced by the encoder's input size."""
        if self.size is not None:
            return self
        return PyramidTiling(image_size, self.overlap, self.top, self.max_patches)

    def levels(self, width: int, height: int) -> list[Level]:
        """The levels for a ``width x height`` scene, coarsest first.

        Raises:
            TilingError: the size is not positive, or the spec is still ``auto`` (see :meth:`resolve`).
        """
        if width <= 0 or height <= 0:
            raise TilingError(f"cannot build a pyramid over an image of size {width} x {height}")
        if self.size is None:
            raise TilingError("pyramid size is 'auto': resolve it with the encoder's input size first")
        windows = []
        window = self.size
        while True:
            step = max(1, int(round(window * (1.0 - self.overlap))))
            xs, ys = _starts(width, window, step), _starts(height, window, step)
            windows.append((window, step, tuple(xs), tuple(ys)))
            if len(xs) * len(ys) <= self.top or window >= max(width, height):
                break
            window *= 2
        n = len(windows)
        return [Level(level=n - 1 - s, scale=s, window=w, step=st, finest=self.size, overlap=self.overlap,
                      xs=xs, ys=ys, width=width, height=height)
                for s, (w, st, xs, ys) in reversed(list(enumerate(windows)))]

    def count(self, width: int, height: int) -> int:
        """Windows in every level together (the size of the full index)."""
        return sum(lv.count for lv in self.levels(width, height))

    def patches(self, width: int, height: int) -> Iterator[PatchSpec]:
        raise TilingError(f"{self.id!r} is a pyramid: its levels are separate indexes (see rsrag.tools.pyramid)")


def parse_pyramid(spec: str, positional: Sequence[str], options: dict[str, str], max_patches: int) -> PyramidTiling:
    """Build a :class:`PyramidTiling` from a parsed ``pyramid:...`` spec (see :func:`rsrag.tools.tiling.parse_tiling`)."""
    if len(positional) > 1:
        raise TilingError(f"tiling {spec!r}: unexpected parameter(s) {list(positional[1:])}")
    size: int | None = None
    if positional and positional[0].lower() != "auto":
        try:
            size = int(positional[0])
        except ValueError:
            raise TilingError(f"tiling {spec!r}: the window size must be a whole number of pixels or 'auto'") from None
    try:
        overlap = float(options.pop("overlap", str(DEFAULT_OVERLAP)))
        top = int(options.pop("top", str(DEFAULT_TOP)))
    except ValueError:
        raise TilingError(f"tiling {spec!r}: overlap must be a number and top a whole number of windows") from None
    if options:
        raise TilingError(f"tiling {spec!r}: unexpected parameter(s) {sorted(options)}")
    return PyramidTiling(size, overlap, top, max_patches)


def is_pyramid(tiling: TilingScheme | str) -> bool:
    """Whether a tiling (or its spec) is a pyramid."""
    from rsrag.tools.tiling import parse_tiling

    scheme = parse_tiling(tiling) if isinstance(tiling, str) else tiling
    return bool(getattr(scheme, "is_pyramid", False))


# --- the index -------------------------------------------------------------------------------------------


class LevelStatus(BaseModel):
    """How much of one level is encoded."""

    model_config = ConfigDict(frozen=True)

    level: int
    scale: int
    window: int
    windows: int
    stored: int
    complete: bool
    key: str

    @property
    def share(self) -> float:
        return self.stored / self.windows if self.windows else 1.0


class Pyramid:
    """One scene's pyramid index for one encoder in one store (thread-safe).

    Args:
        scene: the scene (kept open by the caller).
        encoder: the image encoder; its input size resolves ``pyramid:auto``.
        tiling: a :class:`PyramidTiling` or its spec.
        store: the store (as for :func:`~rsrag.tools.indexing.index_scene`).
        sample: windows of an incomplete level encoded to estimate its statistics.
        batch_size: windows per encoder call.
        readers: reader threads (default :func:`~rsrag.tools.indexing.default_readers`).
    """

    def __init__(self, scene: Scene, encoder: Encoder, tiling: PyramidTiling | str = "pyramid",
                 store: Store | PatchStore | str | os.PathLike[str] | None = None, *, sample: int = DEFAULT_SAMPLE,
                 batch_size: int = DEFAULT_BATCH_SIZE, readers: int | None = None) -> None:
        from rsrag.tools.tiling import parse_tiling

        scheme = parse_tiling(tiling) if isinstance(tiling, str) else tiling
        if not isinstance(scheme, PyramidTiling):
            raise TilingError(f"tiling {scheme.id!r} is not a pyramid; use e.g. 'pyramid' or 'pyramid:224'")
        if sample < 1 or batch_size < 1:
            raise ValueError("sample and batch_size must be positive")
        self.scene, self.encoder = scene, encoder
        self.tiling = scheme.resolve(encoder.image_size)
        self.patches = as_patch_store(store)
        self.sample, self.batch_size = sample, batch_size
        self.readers = default_readers() if readers is None else readers
        self.levels = self.tiling.levels(scene.width, scene.height)
        self._infos: dict[int, IndexInfo] = {}
        self._stats_ready: set[int] = set()
        self._empty: dict[int, set[int]] = {}
        self._decimated: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
        self._data_share: float | None = None
        self._decimated_lock = threading.Lock()
        self._locks = [threading.Lock() for _ in self.levels]
        self._urgent = 0
        self._urgent_lock = threading.Condition()
        self._searches = 0
        self._executors: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        self._finer: dict[int, Pyramid] = {}
        self._finer_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Pyramid({self.scene.path.name!r}, {self.tiling.id!r}, {len(self.levels)} levels)"

    @property
    def id(self) -> str:
        """The pyramid's spec with its size resolved (``pyramid:224:overlap=0.5:top=128``)."""
        return self.tiling.id

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def finest(self) -> Level:
        return self.levels[-1]

    def key(self, level: int) -> str:
        """Index key of a level."""
        return index_key(self.scene.fingerprint, self.levels[level].tiling_id, self.encoder.id)

    # --- records ----------------------------------------------------------------------------------------

    def info(self, level: int, *, create: bool = False) -> IndexInfo | None:
        """The index record of a level (``None`` when nothing of it was ever stored, unless ``create``)."""
        cached = self._infos.get(level)
        if cached is not None and cached.complete:
            return cached
        info = self.patches.info(self.key(level))
        if info is None and create:
            lv = self.levels[level]
            info = IndexInfo(
                key=self.key(level), scene=self.scene.fingerprint, tiling=lv.tiling_id, encoder=self.encoder.id,
                dim=index_dim(self.encoder), patch_table="", source=str(self.scene.path), width=self.scene.width,
                height=self.scene.height, n_patches=lv.count, chunk_size=1, status="building", updated=0.0,
            )
            info = self.patches.begin(info.model_copy(update={"patch_table": self.patches.patch_table(info).name}))
        if info is not None:
            self._infos[level] = info
        return info

    def status(self) -> list[LevelStatus]:
        """Encoded windows per level, coarsest first."""
        out = []
        for lv in self.levels:
            info = self.info(lv.level)
            stored = 0 if info is None else (info.n_patches if info.complete else self.patches.count(info))
            out.append(LevelStatus(level=lv.level, scale=lv.scale, window=lv.window, windows=lv.count, stored=stored,
                                   complete=bool(info and info.complete), key=self.key(lv.level)))
        return out

    def complete(self, level: int) -> bool:
        info = self.info(level)
        return bool(info and info.complete)

    def stored(self, level: int, indexes: Sequence[int] | None = None) -> set[int]:
        """Windows of a level already stored (among ``indexes``, when given); every window of a complete
        level counts (those without data were never stored)."""
        info = self.info(level)
        if info is None:
            return set()
        if info.complete:
            return set(range(self.levels[level].count)) if indexes is None else set(indexes)
        return self.patches.stored_patches(info, indexes)  # from the level's receipt when valid

    def empty(self, level: int) -> frozenset[int]:
        """Windows of a level found without data (entirely nodata) by this process's reads: never encoded
        nor scored, but searched (they are known to hold nothing)."""
        return frozenset(self._empty.get(level, ()))

    def data_share(self) -> float:
        """Share of the scene's pixels that hold data (1.0 when the file declares no nodata value, alpha band
        or floating-point pixels, or when level 0 is not read as one decimated image), from the level-0
        decimated image the coarse windows are cropped from (read once, cached)."""
        if self._data_share is None:
            shape = self._decimated_shape(0)
            share = 1.0
            if shape is not None and self.scene.may_lack_data:
                share = float(self._decimated_image(0, shape)[2].mean())
            self._data_share = share
        return self._data_share

    def covered(self, level: int) -> int:
        """Windows of a level searched: stored, or known to hold no data (every window of a complete level)."""
        info = self.info(level)
        if info is None:
            return len(self._empty.get(level, ()))
        if info.complete:
            return self.levels[level].count
        return min(self.levels[level].count, self.patches.count(info) + len(self._empty.get(level, ())))

    # --- encoding ---------------------------------------------------------------------------------------

    def _threads(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        """The reader and writer threads, kept for the pyramid's life: many small encodes reuse them (new
        threads each time would each leave a malloc arena of freed image buffers behind)."""
        if self._executors is None:
            self._executors = (ThreadPoolExecutor(self.readers, thread_name_prefix="rsrag-pyr-read"),
                               ThreadPoolExecutor(1, thread_name_prefix="rsrag-pyr-write"))
        return self._executors

    def finer(self, size: int) -> Pyramid:
        """The scene's pyramid whose finest windows are ``size`` px (same overlap, store, encoder and
        parameters), kept for this pyramid's life and closed with it: refinement
        (:mod:`rsrag.tools.refine`) encodes into its finest level, question after question."""
        with self._finer_lock:
            pyramid = self._finer.get(size)
            if pyramid is None:
                pyramid = Pyramid(self.scene, self.encoder, PyramidTiling(size, self.tiling.overlap, self.tiling.top),
                                  self.patches, sample=self.sample, batch_size=self.batch_size, readers=self.readers)
                self._finer[size] = pyramid
            return pyramid

    def close(self) -> None:
        """Release the reader and writer threads, the finer pyramids' too (the pyramid can still be used;
        they start again)."""
        executors, self._executors = self._executors, None
        if executors is not None:
            for ex in executors:
                ex.shutdown(wait=True)
        with self._finer_lock:
            finer = list(self._finer.values())
        for pyramid in finer:
            pyramid.close()

    def reader(self, level: int) -> WindowReader | None:
        """How the windows of ``level`` are read for the encoder: ``None`` (each window read from the file,
        decimated by GDAL from the best overview) or, for a level read at least 2x decimated whose whole
        scene at that decimation fits in :data:`DECIMATED_MAX_BYTES`, a crop of one decimated image of the
        scene, read once (on first use) and kept for the pyramid's life.

        A decimated window read from the file decodes and resamples the overview tiles it touches (7-10 ms of
        CPU per window with GDAL's block cache; BENCHMARKS.md, "Pyramid index"), and the coarse levels are what
        a fresh search reads first; one read of the level's whole image costs about as much as a few of its
        windows, and each crop then 3-5 ms with its preprocessing. The crops are the same pixels up to resampling at window
        edges (a window is squash-resized to the encoder's input either way)."""
        shape = self._decimated_shape(level)
        if shape is None:
            return None

        def read(spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
            fy, rgb, valid = self._decimated_image(level, shape)
            fx = shape[1] / self.scene.width
            b = spec.box
            x0, x1 = int(b.x0 * fx), max(int(b.x0 * fx) + 1, round(b.x1 * fx))
            y0, y1 = int(b.y0 * fy), max(int(b.y0 * fy) + 1, round(b.y1 * fy))
            return rgb[y0:y1, x0:x1], valid[y0:y1, x0:x1]

        return read

    def _decimated_shape(self, level: int) -> tuple[int, int] | None:
        """(height, width) of the one decimated image ``level``'s windows are cropped from, or ``None`` when
        they are read one by one (see :meth:`reader`)."""
        lv = self.levels[level]
        factor = lv.window / self.encoder.image_size
        if factor < 2 or lv.window > min(self.scene.width, self.scene.height):  # clipped windows: read each
            return None
        shape = (max(1, round(self.scene.height / factor)), max(1, round(self.scene.width / factor)))
        return None if shape[0] * shape[1] * 3 > DECIMATED_MAX_BYTES else shape

    def _decimated_image(self, level: int, shape: tuple[int, int]) -> tuple[float, np.ndarray, np.ndarray]:
        cached = self._decimated.get(level)
        if cached is None:
            with self._decimated_lock:
                cached = self._decimated.get(level)
                if cached is None:
                    rgb, valid = self.scene.read_display_valid(self.scene.full_box, out_size=shape)
                    cached = self._decimated[level] = (shape[0] / self.scene.height, rgb, valid)
        return cached

    def _exclusive(self, level: int, urgent: bool) -> _LevelLock:
        return _LevelLock(self, level, urgent)

    def ensure(self, level: int, indexes: Iterable[int], *, progress: ProgressCallback | None = None,
               stop: threading.Event | None = None, stage: str = "descend", urgent: bool = True) -> int:
        """Encode and store the windows ``indexes`` of ``level`` that are not stored yet; returns how many.

        The first time an incomplete level is touched, its statistics sample is encoded with them and its
        provisional statistics recorded; when the last window of a level is stored the level is finished
        (exact statistics, marked complete). Safe to call from several threads and processes (the level's
        lock is taken; an ``urgent`` call, a search, goes before a waiting background fill). Windows without
        data (entirely nodata in their decimated read) are not encoded: they are remembered
        (:meth:`empty`) and count towards the level's completion, and the statistics are those of the sample's
        windows that hold data (of every stored window when none of the sample does).
        """
        wanted = sorted({int(i) for i in indexes})
        lv = self.levels[level]
        if self.complete(level):
            return 0
        with self._exclusive(level, urgent):
            info = self.info(level, create=True)
            assert info is not None
            if info.complete:
                return 0
            need_stats = level not in self._stats_ready and not self._has_stats(info)
            sample = lv.sample(self.sample) if need_stats else []
            todo = sorted(set(wanted) | set(sample))
            empty = self._empty.setdefault(level, set())
            missing = sorted(set(todo) - self.stored(level, todo) - empty)
            encoded = 0
            if missing:
                before = self.patches.count(info)
                units = ((group, [lv.spec(i, self.encoder.image_size) for i in group])
                         for group in _groups(missing, COMMIT_WINDOWS))
                run = encode_units(self.scene, self.encoder, self.patches, info, units, batch_size=self.batch_size,
                                   readers=self.readers, progress=progress, stop=stop, done_before=before,
                                   total=lv.count, stage=stage, level=level, levels=self.n_levels,
                                   executors=self._threads(), read=self.reader(level))
                encoded = run.encoded
                empty.update(run.empty)
            stored = self.patches.count(info)
            if stored and stored + len(empty) >= lv.count:
                # windows without data are not stored: the complete level holds the others
                held = info if stored == info.n_patches else info.model_copy(update={"n_patches": stored})
                self._infos[level] = self.patches.finish(held)
                self._stats_ready.add(level)
            elif need_stats and stored:
                with_data = [i for i in sample if i not in empty]
                stats = self.patches.vector_stats(info, with_data if with_data else None)
                self._infos[level] = self.patches.set_provisional_stats(info, stats)
                self._stats_ready.add(level)
            current = self._infos.get(level, info)
            if stage != "fill" and not current.complete and (encoded or not self.patches.has_receipt(current)):
                # a search's windows: the next process reads this partly filled level without the database
                self.patches.save_receipt(current)
            return encoded

    def _has_stats(self, info: IndexInfo) -> bool:
        try:
            self.patches.stats(info)
        except Exception:  # noqa: BLE001 - a missing statistics row of any kind means "not yet"
            return False
        return True

    @contextlib.contextmanager
    def searching(self) -> Iterator[None]:
        """Mark a search as running: a background fill (``urgent=False``) waits between its commits until no
        search is, so the two do not share the cores."""
        with self._urgent_lock:
            self._searches += 1
        try:
            yield
        finally:
            with self._urgent_lock:
                self._searches -= 1
                self._urgent_lock.notify_all()

    def _wait_for_searches(self, stop: threading.Event | None) -> None:
        with self._urgent_lock:
            while self._searches > 0 and not (stop is not None and stop.is_set()):
                self._urgent_lock.wait(0.2)

    def fill(self, level: int, *, progress: ProgressCallback | None = None, stop: threading.Event | None = None,
             stage: str = "fill", urgent: bool = False, group: int | None = None) -> int:
        """Encode every window of ``level`` not stored yet, taking the level's lock per commit group (default
        :data:`COMMIT_WINDOWS` windows when not ``urgent``, 4 times that otherwise); a non-urgent fill (the
        background filler) also waits between groups while a search runs. Stops cleanly when ``stop`` is
        set. Returns how many windows were encoded."""
        lv = self.levels[level]
        encoded = 0
        if self.complete(level):
            return 0
        done = self.stored(level)
        pending = [i for i in range(lv.count) if i not in done]
        size = group or (COMMIT_WINDOWS * 4 if urgent else COMMIT_WINDOWS)
        for part in _groups(pending, size):
            if not urgent:
                self._wait_for_searches(stop)
            if stop is not None and stop.is_set():
                break
            encoded += self.ensure(level, part, progress=progress, stop=stop, stage=stage, urgent=urgent)
        if not (stop is not None and stop.is_set()) and not self.complete(level):
            encoded += self.ensure(level, [], progress=progress, stop=stop, stage=stage, urgent=urgent)
        return encoded


class _LevelLock:
    """A level's in-process lock plus its store lock; urgent holders (searches) go before background fills."""

    def __init__(self, pyramid: Pyramid, level: int, urgent: bool) -> None:
        self.p, self.level, self.urgent = pyramid, level, urgent
        self._store_lock: object = None

    def __enter__(self) -> None:
        p = self.p
        with p._urgent_lock:
            if self.urgent:
                p._urgent += 1
            else:
                while p._urgent > 0:
                    p._urgent_lock.wait(0.5)
        p._locks[self.level].acquire()
        try:
            cm = p.patches.store.lock(f"index-{p.key(self.level)}", wait=True)
            cm.__enter__()
            self._store_lock = cm
        except BaseException:
            p._locks[self.level].release()
            self._done_urgent()
            raise

    def _done_urgent(self) -> None:
        if self.urgent:
            with self.p._urgent_lock:
                self.p._urgent -= 1
                self.p._urgent_lock.notify_all()

    def __exit__(self, *exc: object) -> None:
        try:
            self._store_lock.__exit__(*exc)  # type: ignore[attr-defined]
        finally:
            self.p._locks[self.level].release()
            self._done_urgent()


def release_freed_memory() -> None:
    """Hand memory freed by the allocator back to the OS (glibc ``malloc_trim``; a no-op elsewhere), so the
    decoded windows and activations of one search do not raise the resident size of the next (called once per
    search, not per encode: every trim makes the next forward pass fault its buffers in again)."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if callable(_TRIM):
        _TRIM(0)


_TRIM: Callable[[int], int] | bool | None = None


def _groups(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


# --- filling every level -------------------------------------------------------------------------------


class PyramidReport(BaseModel):
    """What filling a pyramid did (``rsrag index`` with a pyramid tiling)."""

    model_config = ConfigDict(frozen=True)

    pyramid: str
    levels: list[LevelStatus]
    encoded: int
    skipped: int
    seconds: float
    patches_per_s: float
    no_op: bool
    stopped: bool = False

    @property
    def n_patches(self) -> int:
        return sum(s.windows for s in self.levels)


def build_index(scene: Scene | str | os.PathLike[str], encoder: Encoder, tiling: PyramidTiling | str = "pyramid",
                store: Store | PatchStore | str | os.PathLike[str] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                readers: int | None = None, progress: ProgressCallback | None = None,
                stop: threading.Event | None = None, sample: int = DEFAULT_SAMPLE) -> PyramidReport:
    """Fill every level of a scene's pyramid, coarsest first (resumable; a no-op when all are complete).

    Raises:
        TilingError: the pyramid has more windows in all than the spec's ``max`` (default 500,000).
        IndexBusyError / StoreError: as for :func:`~rsrag.tools.indexing.index_scene`.
    """
    own = not isinstance(scene, Scene)
    sc = scene if isinstance(scene, Scene) else open_scene(Path(scene))
    try:
        pyr = Pyramid(sc, encoder, tiling, store, sample=sample, batch_size=batch_size, readers=readers)
        before = pyr.status()
        total = sum(s.windows for s in before)
        skipped = sum(s.stored for s in before)
        if all(s.complete for s in before):
            return PyramidReport(pyramid=pyr.id, levels=before, encoded=0, skipped=skipped, seconds=0.0,
                                 patches_per_s=0.0, no_op=True)
        if total > pyr.tiling.max_patches:
            raise TilingError(
                f"the pyramid {pyr.id!r} of the {sc.width} x {sc.height} px image has {total:,} windows in all, over "
                f"the cap of {pyr.tiling.max_patches:,}; searches still work (they encode only what they visit); "
                "to fill it anyway raise the cap (e.g. 'pyramid:max=2000000'), or use a larger finest size"
            )
        t0 = time.perf_counter()
        encoded = 0
        for lv in pyr.levels:
            if stop is not None and stop.is_set():
                break
            encoded += pyr.fill(lv.level, progress=progress, stop=stop, stage="index", urgent=True)
        seconds = time.perf_counter() - t0
        after = pyr.status()
        return PyramidReport(pyramid=pyr.id, levels=after, encoded=encoded, skipped=skipped, seconds=seconds,
                             patches_per_s=encoded / seconds if seconds > 0 else 0.0, no_op=False,
                             stopped=not all(s.complete for s in after))
    finally:
        if own:
            sc.close()


class BackgroundFiller:
    """Fills a pyramid's finest level in a daemon thread while searches go on (they keep priority).

    Progress goes to ``progress`` (and is kept in :attr:`last`); :meth:`stop` sets the stop event and waits
    for the thread, which ends after its current batch with every finished commit kept. An error in the
    thread is kept in :attr:`error` (a filler never takes the process down).
    """

    def __init__(self, pyramid: Pyramid, progress: ProgressCallback | None = None, *, levels: str = "finest") -> None:
        if levels not in ("finest", "all"):
            raise ValueError("levels must be 'finest' or 'all'")
        self.pyramid = pyramid
        self.on_progress = progress
        self.levels = levels
        self.last: IndexProgress | None = None
        self.error: BaseException | None = None
        self.encoded = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _progress(self, p: IndexProgress) -> None:
        self.last = p
        if self.on_progress is not None:
            try:
                self.on_progress(p)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the fill
                pass

    def _run(self) -> None:
        try:
            targets = [self.pyramid.finest] if self.levels == "finest" else list(self.pyramid.levels)
            for lv in targets:
                if self._stop.is_set():
                    break
                self.encoded += self.pyramid.fill(lv.level, progress=self._progress, stop=self._stop)
        except BaseException as exc:  # noqa: BLE001 - kept for the owner to report
            self.error = exc

    def start(self) -> BackgroundFiller:
        """Start the thread (a no-op when running)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rsrag-fill", daemon=True)
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def done(self) -> bool:
        """The levels it fills are complete."""
        targets = [self.pyramid.finest] if self.levels == "finest" else list(self.pyramid.levels)
        return all(self.pyramid.complete(lv.level) for lv in targets)

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Ask the thread to stop and wait for it; returns whether it has ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the fill to end on its own; returns whether it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running


# --- descent ---------------------------------------------------------------------------------------------


class LevelVisit(BaseModel):
    """What a search did at one level."""

    model_config = ConfigDict(frozen=True)

    level: int
    scale: int
    window: int
    windows: int
    """Windows in the level."""
    scored: int
    """Windows of the level stored at search time, all ranked by the search."""
    encoded: int
    """Windows this search encoded at this level."""
    complete: bool
    expanded: int = 0
    """Regions of this level whose children were visited at the next level."""


class PyramidSearch(BaseModel):
    """The result of one coarse-to-fine search.

    Attributes:
        hits: per query vector, the finest level's hits ranked best first (every hit at or above the
            threshold, then the best others up to ``k``), as :func:`rsrag.tools.retrieval.search_index`
            returns them; each hit's ``extra`` records its ``level``, ``levels`` and ``window``.
        visits: what happened at each level searched, coarsest first.
        start_level: the level the search started from (the finest complete one).
        finest_share: share of the finest level's windows that were scored.
        complete: the finest level was complete: the search saw the whole scene at the finest footprint.
        encoded: windows this search encoded (0 when everything it visited was stored).
        seconds: wall time of the search, encoding included.
    """

    model_config = ConfigDict(frozen=True)

    hits: list[list[Hit]]
    visits: list[LevelVisit]
    start_level: int
    finest_share: float
    complete: bool
    encoded: int
    seconds: float
    pyramid: str
    n_levels: int
    index_key: str
    index_version: int

    @property
    def levels(self) -> list[str]:
        """The levels searched, as ``L<level>:<window>px``."""
        return [f"L{v.level}:{v.window}px" for v in self.visits]

    def describe(self) -> str:
        """One line for people and models: levels searched and how much of the finest level was seen."""
        if self.complete:
            seen = "the whole finest level"
        else:
            pct = 100.0 * self.finest_share
            seen = f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"
            seen += " of the finest level (the rest is not encoded yet)"
        first, last = self.visits[0], self.visits[-1]
        span = f"level {first.level}" if first is last else f"levels {first.level}-{last.level}"
        sizes = f"{first.window} px" if first is last else f"{first.window}-{last.window} px"
        return f"searched {span} of {self.n_levels} (windows {sizes}), {seen}; {self.encoded} windows encoded"


def _distinct(hits: Sequence[Hit], n: int, max_overlap: float = 0.5) -> list[Hit]:
    """The first ``n`` hits that do not overlap an earlier pick by more than ``max_overlap`` of their area."""
    picked: list[Hit] = []
    for h in hits:
        if len(picked) >= n:
            break
        box = h.region.box
        if all(box.intersection(p.region.box) <= max_overlap * box.area for p in picked):
            picked.append(h)
    return picked


CONTRAST_MAX = 4096
"""Most stored windows of a level ranked by local contrast (the rest by score alone)."""


def local_contrast(level: Level, hits: Sequence[Hit], empty: Iterable[int] = ()) -> list[Hit]:
    """Hits of one level re-ranked by *local contrast*: a window's score minus the mean score of the scored
    windows around it that do not overlap it (the ring two grid steps away: with half-overlapping windows
    the adjacent ones share half its area, and so its object); its own score when none was scored. A
    neighbour known to hold no data (``empty``: never encoded) counts with the lowest score of the level, so
    content surrounded by nodata still stands out, as it did when empty windows were encoded.

    At coarse levels a small object moves a window's score only a little, while the background class
    (a quadrant of farmland, a city) moves every window around it; ranking the beam by raw score then spends
    it all on the background most like the phrase. Contrast with the neighbourhood cancels the background and
    keeps the window where something differs in the phrase's direction (on planted-target mosaics it doubled
    the share of sites a descent reaches, see BENCHMARKS.md).
    """
    by_patch = {int(h.patch): h.score for h in hits if h.patch is not None}
    if by_patch:
        floor = min(by_patch.values())
        for i in empty:
            by_patch.setdefault(int(i), floor)
    ncols = len(level.xs)
    ring = max(1, math.ceil(level.window / max(1, level.step)))  # grid steps to the first non-overlapping window
    keyed: list[tuple[float, int, Hit]] = []
    for i, h in enumerate(hits):
        if h.patch is None:
            keyed.append((0.0, i, h))
            continue
        r, c = divmod(int(h.patch), ncols)
        near = [by_patch[rr * ncols + cc] for rr, cc in _ring(r, c, ring)
                if 0 <= cc < ncols and rr >= 0 and rr * ncols + cc in by_patch]
        keyed.append((h.score - (sum(near) / len(near) if near else h.score), i, h))
    keyed.sort(key=lambda t: (-t[0], t[1]))
    return [h for _, _, h in keyed]


def _ring(r: int, c: int, d: int) -> list[tuple[int, int]]:
    """Grid cells at Chebyshev distance exactly ``d`` from ``(r, c)``."""
    return [(r + dr, c + dc) for dr in range(-d, d + 1) for dc in range(-d, d + 1) if max(abs(dr), abs(dc)) == d]


def select_regions(level: Level, hits: Sequence[Hit], *, beam: int, expand: int, threshold: float,
                   contrast: bool = True, empty: Iterable[int] = ()) -> list[Hit]:
    """The regions of one level whose children a descent visits, for one query vector: the best ``beam``
    distinct windows (by local contrast, or by score; ``empty``: windows known to hold no data, see
    :func:`local_contrast`), then every window at or above ``threshold``, at most ``expand`` in all."""
    order = local_contrast(level, hits, empty) if contrast else list(hits)
    above = [h for h in hits if h.confidence >= threshold]
    picked: dict[tuple[int, int, int, int], Hit] = {}
    for h in _distinct(order, beam) + above:
        if len(picked) >= expand:
            break
        picked.setdefault(h.region.box.as_tuple(), h)
    return list(picked.values())


def level_extras(pyramid: Pyramid, level: int) -> dict[str, str | float | int]:
    """Provenance every hit of a level carries: its level, the pyramid's depth and the window footprint."""
    lv = pyramid.levels[level]
    return {"level": level, "levels": pyramid.n_levels, "window": lv.window,
            "px_per_input_px": round(lv.window / pyramid.encoder.image_size, 3), "pyramid": pyramid.id}


def descend(
    pyramid: Pyramid,
    vectors: np.ndarray,
    queries: Sequence[str],
    *,
    path: HitPath = "fast",
    k: int = 20,
    threshold: float = 0.5,
    beam: int = DEFAULT_BEAM,
    expand: int = DEFAULT_EXPAND,
    calibration: Calibration | None = None,
    prompt_version: str | None = None,
    extras: Sequence[Mapping[str, str | float | int]] | None = None,
    progress: ProgressCallback | None = None,
    contrast: bool = True,
    tiled: bool = False,
) -> PyramidSearch:
    """Search a pyramid coarse to fine with query vectors, encoding only the windows it visits.

    Starts from the finest complete level (encoding level 0 first on a fresh scene); at each level searches
    every stored window with :func:`rsrag.tools.retrieval.search_index`, keeps per query vector the best
    ``beam`` distinct regions by local contrast plus every region at or above ``threshold`` (at most
    ``expand``; :func:`select_regions`), encodes their children at the next level and goes on to the finest
    level, whose hits (ranked by score and confidence, as a flat search ranks them) are the result.

    Args:
        pyramid: the scene's pyramid.
        vectors: unit query vectors ``(n, dim)``.
        queries: the text each vector stands for.
        path: the retrieval path the hits are recorded as.
        k: hits kept per vector at the finest level besides those at or above ``threshold``.
        threshold: confidence a hit needs to count as found (and to be expanded regardless of the beam).
        beam: distinct regions per vector expanded at each level.
        expand: most regions per vector expanded at each level.
        calibration: z-score to confidence mapping.
        prompt_version: recorded on the hits.
        extras: provenance per vector, copied into its hits.
        progress: called while windows are encoded.
        contrast: rank the beam by local contrast (:func:`local_contrast`) rather than by raw score.
        tiled: above the finest level, visit only the 2 x 2 children that tile a region side by side, not
            all 3 x 3 half-overlapping ones (:meth:`Level.inside`; the finest level always gets all of them).
            Fewer windows per region, so a wider beam for the same cost, but an object on the border of two
            children is cut at that level and can be lost there: off by default (see BENCHMARKS.md).

    Raises:
        QueryError: bad ``k``, ``beam`` or ``expand``, or not one query text per vector.
        EncoderError: the vectors' dimension is not the encoder's.
    """
    vecs = np.asarray(vectors, dtype=np.float32)
    vecs = vecs[None] if vecs.ndim == 1 else vecs
    if k <= 0 or beam <= 0 or expand < beam:
        raise QueryError(f"k and beam must be positive and expand >= beam; got k={k}, beam={beam}, expand={expand}")
    if len(queries) != len(vecs):
        raise QueryError(f"give one query text per vector: {len(vecs)} vectors, {len(queries)} texts")
    if vecs.shape[1] != pyramid.encoder.dim:
        raise EncoderError(f"query vectors have {vecs.shape[1]} dimensions, the encoder {pyramid.encoder.id!r} {pyramid.encoder.dim}")
    with pyramid.searching():
        return _descend(pyramid, vecs, queries, path=path, k=k, threshold=threshold, beam=beam, expand=expand,
                        calibration=calibration, prompt_version=prompt_version, extras=extras, progress=progress,
                        contrast=contrast, tiled=tiled)


def sparse_beam(beam: int, expand: int, data_share: float) -> int:
    """The beam of a scene of which only ``data_share`` of the pixels hold data: ``beam / data_share``, at most
    ``expand``. Windows without data are never encoded, so a mostly empty scene (a sparse mosaic, a swath in
    a nodata frame) has windows to spare; it spends them on more regions per level, up to the expansion cap.
    A scene with data everywhere keeps ``beam``."""
    if data_share >= 1.0:
        return beam
    return max(beam, min(expand, math.ceil(beam / max(data_share, 1e-6))))


def _descend(pyramid: Pyramid, vecs: np.ndarray, queries: Sequence[str], *, path: HitPath, k: int, threshold: float,
             beam: int, expand: int, calibration: Calibration | None, prompt_version: str | None,
             extras: Sequence[Mapping[str, str | float | int]] | None, progress: ProgressCallback | None,
             contrast: bool, tiled: bool) -> PyramidSearch:
    from rsrag.tools.retrieval import search_index

    t0 = time.perf_counter()
    complete = [lv.level for lv in pyramid.levels if pyramid.complete(lv.level)]
    encoded_at: dict[int, int] = {}
    if complete:
        start = max(complete)
    else:
        start = 0
        encoded_at[0] = pyramid.ensure(0, range(pyramid.levels[0].count), progress=progress)
    if start < pyramid.n_levels - 1:  # a descent to come (a search of the complete finest level needs no beam)
        beam = sparse_beam(beam, expand, pyramid.data_share())
    visits: list[LevelVisit] = []
    per_vector_extras = [dict(extras[i]) if extras is not None else {} for i in range(len(vecs))]
    level = start
    while True:
        lv = pyramid.levels[level]
        info = pyramid.info(level)
        assert info is not None
        scored = info.n_patches if info.complete else pyramid.patches.count(info)
        covered = pyramid.covered(level)  # scored, plus the windows known to hold no data
        finest = level == pyramid.n_levels - 1
        tags = [{**e, **level_extras(pyramid, level)} for e in per_vector_extras]
        if finest:
            for t in tags:
                t.update(searched_share=round(covered / lv.count, 6), finest_complete=int(info.complete))
        # above the finest level every stored window is fetched, so each can be compared with its neighbours
        want = k if finest else max(4 * beam, 16, min(scored, CONTRAST_MAX))
        if scored:
            lists = search_index(pyramid.patches, info, vecs, list(queries), k=want, path=path,
                                 min_confidence=threshold, calibration=calibration, prompt_version=prompt_version,
                                 extras=tags)
        else:  # every window visited here holds no data: nothing to rank, nothing to descend into
            lists = [[] for _ in vecs]
        if finest:
            release_freed_memory()
            visits.append(LevelVisit(level=level, scale=lv.scale, window=lv.window, windows=lv.count, scored=scored,
                                     encoded=encoded_at.get(level, 0), complete=info.complete))
            version = max((h.index_version or 0 for hs in lists for h in hs), default=0)
            return PyramidSearch(
                hits=lists, visits=visits, start_level=start, finest_share=covered / lv.count, complete=info.complete,
                encoded=sum(encoded_at.values()), seconds=time.perf_counter() - t0, pyramid=pyramid.id,
                n_levels=pyramid.n_levels, index_key=info.key, index_version=version,
            )
        parents: dict[tuple[int, int, int, int], PixelBox] = {}
        empty = pyramid.empty(level)
        for hits in lists:
            for h in select_regions(lv, hits, beam=beam, expand=expand, threshold=threshold, contrast=contrast,
                                    empty=empty):
                parents[h.region.box.as_tuple()] = h.region.box
        child = pyramid.levels[level + 1]
        side_by_side = tiled and level + 1 < pyramid.n_levels - 1
        children = sorted({i for box in parents.values() for i in child.inside(box, tiled=side_by_side)})
        visits.append(LevelVisit(level=level, scale=lv.scale, window=lv.window, windows=lv.count, scored=scored,
                                 encoded=encoded_at.get(level, 0), complete=info.complete, expanded=len(parents)))
        encoded_at[level + 1] = pyramid.ensure(level + 1, children, progress=progress)
        level += 1


class PyramidIndex:
    """A scene's pyramid seen as one index: what :meth:`rsrag.agent.workspace.Workspace.index` returns for
    a pyramid tiling. It has the attributes of :class:`~rsrag.tools.store.IndexInfo` that searches read
    (``key``, ``scene``, ``encoder`` id, ``tiling``, ``n_patches`` of the finest level, ``dim``,
    ``complete``), and :meth:`search`, which :func:`rsrag.tools.retrieval.search_index` delegates to.

    Args:
        pyramid: the scene's pyramid.
        beam / expand: descent parameters (see :func:`descend`).
        progress: called while a search encodes windows.
        on_search: called after every search with its result (the workspace starts a background fill).
    """

    def __init__(self, pyramid: Pyramid, *, beam: int = DEFAULT_BEAM, expand: int = DEFAULT_EXPAND,
                 progress: ProgressCallback | None = None,
                 on_search: Callable[[PyramidSearch], None] | None = None) -> None:
        self.pyramid = pyramid
        self.beam, self.expand = beam, expand
        self.progress = progress
        self.on_search = on_search
        self.key = index_key(pyramid.scene.fingerprint, pyramid.id, pyramid.encoder.id)
        self.scene = pyramid.scene.fingerprint
        self.encoder = pyramid.encoder.id
        self.tiling = pyramid.id
        self.dim = pyramid.encoder.dim
        self.n_patches = pyramid.finest.count
        self.width, self.height = pyramid.scene.width, pyramid.scene.height
        self.source = str(pyramid.scene.path)

    is_pyramid = True
    """Marks this index for :func:`rsrag.tools.retrieval.search_index`, which delegates to :meth:`search`."""

    def __repr__(self) -> str:
        return f"PyramidIndex({self.pyramid!r})"

    @property
    def complete(self) -> bool:
        """Whether the finest level is complete (a search then sees the whole scene)."""
        return self.pyramid.complete(self.pyramid.n_levels - 1)

    @property
    def status(self) -> str:
        return "complete" if self.complete else "building"

    def search(self, vectors: np.ndarray, queries: Sequence[str], *, k: int, path: HitPath = "fast",
               min_confidence: float | None = None, calibration: Calibration | None = None,
               prompt_version: str | None = None, extras: Sequence[Mapping[str, str | float | int]] | None = None,
               threshold: float | None = None) -> PyramidSearch:
        """:func:`descend` with this index's parameters (``min_confidence``, else ``threshold``, else 0.5,
        is the descent's threshold)."""
        limit = min_confidence if min_confidence is not None else threshold if threshold is not None else 0.5
        result = descend(self.pyramid, vectors, queries, path=path, k=k, threshold=limit, beam=self.beam,
                         expand=max(self.expand, self.beam), calibration=calibration, prompt_version=prompt_version,
                         extras=extras, progress=self.progress)
        if self.on_search is not None:
            self.on_search(result)
        return result
