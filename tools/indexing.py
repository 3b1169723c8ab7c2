"""Build patch indexes: tiles -> windowed reads on background threads -> batched encode -> store.

Pipeline (:func:`index_scene`):

1. The tiling's patches are grouped into fixed *chunks* of ``chunk_size`` consecutive patch indexes; chunks
   already committed to the store (a previous, possibly killed, run) are skipped.
2. Reader threads read each patch window decimated to the encoder's input size (GDAL uses overviews where
   present) and preprocess it into a tensor, a whole batch per task. Several batches are in flight, so the
   next batch is decoded while the model computes the current one. A window whose read holds no data
   (nodata value or alpha everywhere) is not encoded nor stored; a complete index holds the others.
3. The calling thread encodes batches; a writer thread commits each finished chunk in one atomic write.
4. When every chunk is stored the index gets its scene statistics and is marked complete.

A per-index file lock stops two processes from building the same index at once (:class:`IndexBusyError`,
or a wait with ``wait=True``). Re-running on an unchanged image with the same encoder and tiling is a no-op.

:func:`encode_units` is the pipeline itself (steps 2 and 3) over any sequence of *units* (a list of windows
committed together, each window tagged with its chunk id); the pyramid index (:mod:`rsrag.tools.pyramid`)
uses it to encode just the windows a search visits, one chunk per window, without a second indexer. Both
stop cleanly between two batches when their ``stop`` event is set: complete units are committed, the rest
is left for the next run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import InvalidRasterError, TilingError
from rsrag.tools.raster import Scene, open_scene
from rsrag.tools.region import Region
from rsrag.tools.store import IndexInfo, PatchStore, Store, as_patch_store, index_key
from rsrag.tools.tiling import PatchSpec, TilingScheme, parse_tiling
from rsrag.tools.encoders.hubness import index_dim, index_keys
from rsrag.tools.encoders.spec import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:  # torch is imported when a run starts, so importing this module (and the CLI) stays fast
    import torch

    from rsrag.tools.encoders.base import Encoder

DEFAULT_TILING = "vit:448"
DEFAULT_CHUNK_SIZE = 1024


@dataclass(frozen=True)
class IndexProgress:
    """Progress of one indexing run, passed to the progress callback after every batch.

    Attributes:
        done: patches stored or encoded so far, including those skipped from earlier runs.
        total: patches in the index.
        encoded: patches encoded by this run.
        elapsed_s: seconds since this run started encoding.
        rate: patches per second encoded by this run.
        eta_s: estimated seconds left (``None`` until the rate is known).
        stage: what is running: ``index`` (a flat index), ``descend`` (a search encoding the windows it
            visits) or ``fill`` (completing a pyramid level).
        level: the pyramid level (0 = coarsest) being encoded, ``None`` for a flat index.
        levels: how many levels the pyramid has, ``None`` for a flat index.
        scene: fingerprint of the scene being encoded.
    """

    done: int
    total: int
    encoded: int
    elapsed_s: float
    rate: float
    eta_s: float | None
    stage: str = "index"
    level: int | None = None
    levels: int | None = None
    scene: str | None = None

    def describe(self) -> str:
        """One line for people: what is being encoded and how far it is."""
        what = {"descend": "search: encoding the windows it visits", "fill": "background fill",
                "index": "indexing"}.get(self.stage, self.stage)
        where = ""
        if self.level is not None and self.levels is not None:
            where = " of the finest level" if self.level == self.levels - 1 else f" of level {self.level}/{self.levels - 1}"
        eta = f", about {self.eta_s:.0f} s left" if self.eta_s is not None and self.stage != "descend" else ""
        return f"{what}: {self.done:,} / {self.total:,} windows{where} ({self.rate:.1f}/s{eta})"


class IndexReport(BaseModel):
    """What an indexing run did."""

    model_config = ConfigDict(frozen=True)

    info: IndexInfo
    encoded: int
    """Patches encoded by this run (0 for a no-op)."""
    skipped: int
    """Patches already stored by an earlier run."""
    chunks_written: int
    seconds: float
    patches_per_s: float
    no_op: bool
    stopped: bool = False
    """The run was stopped (its ``stop`` event set) before the index was complete; what it committed stays."""


ProgressCallback = Callable[[IndexProgress], None]


def default_readers() -> int:
    """Reader threads for this machine: half its cores, 1 to 4.

    On CPU the encoder's own threads use every core; one reader decodes several times faster than the
    encoder consumes (BENCHMARKS.md, Index and fast path), and each extra reader only competes with the
    encoder (on 2 cores: 0.80 of the encoder's throughput with 2 readers, 0.89 with 1).
    """
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _read_size(spec: PatchSpec, image_size: int) -> tuple[int, int]:
    """(height, width) to read a patch at: the shorter side decimated to the encoder input, never upsampled."""
    h, w = spec.box.height, spec.box.width
    f = min(1.0, image_size / min(h, w))
    return max(1, round(h * f)), max(1, round(w * f))


WindowReader = Callable[[PatchSpec], tuple[np.ndarray, np.ndarray]]
"""Reads one window for the encoder: (display RGB, mask of its pixels with data), as
:meth:`rsrag.tools.raster.Scene.read_display_valid` gives them."""


def _read_batch(scene: Scene, encoder: Encoder, specs: list[PatchSpec], skip_empty: bool = True,
                read: WindowReader | None = None) -> tuple[torch.Tensor | None, list[Region], list[bool]]:
    """Read and preprocess a batch of windows: (tensor of the windows that hold data, their regions, and per
    window whether it holds data). With ``skip_empty``, a window whose decimated read is entirely nodata (the
    scene's nodata value or alpha band) is left out: it is not encoded. ``read`` replaces the windowed read
    (the pyramid crops its coarse levels from one decimated image of the scene)."""
    arrays, regions, keep = [], [], []
    for s in specs:
        if read is not None:
            rgb, valid = read(s)
        else:
            rgb, valid = scene.read_display_valid(s.box, out_size=_read_size(s, encoder.image_size))
        keep.append(bool(valid.any()) or not skip_empty)
        if keep[-1]:
            arrays.append(encoder.preprocess(rgb).numpy())
            regions.append(scene.region(s.box, scale=s.scale))
    if not arrays:  # nothing to encode: torch is not even imported (a search that re-reads empty windows)
        return None, regions, keep
    import torch

    return torch.from_numpy(np.stack(arrays)), regions, keep


Unit = tuple[Sequence[int], Sequence[PatchSpec]]
"""Windows committed together in one atomic write: (chunk id of each window, the windows)."""


def _unit_batches(units: Iterable[Unit], batch_size: int) -> Iterator[tuple[Sequence[int], bool, list[PatchSpec]]]:
    """(chunk ids, last batch of its unit?, windows) for every unit; batches never cross units."""
    for chunks, specs in units:
        specs = list(specs)
        for start in range(0, len(specs), batch_size):
            yield chunks[start:start + batch_size], start + batch_size >= len(specs), specs[start:start + batch_size]


def _pending_units(specs: Iterator[PatchSpec], chunk_size: int, done: set[int]) -> Iterator[Unit]:
    """The tiling's chunks not yet committed, each one unit."""
    chunk = 0
    while True:
        members = list(islice(specs, chunk_size))
        if not members:
            return
        if chunk not in done:
            yield [chunk] * len(members), members
        chunk += 1


def index_scene(
    scene: Scene | str | os.PathLike[str],
    encoder: Encoder,
    tiling: TilingScheme | str = DEFAULT_TILING,
    store: Store | PatchStore | str | os.PathLike[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    readers: int | None = None,
    prefetch: int | None = None,
    wait: bool = False,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> IndexReport:
    """Index one scene with one encoder and tiling (resumable, idempotent).

    Args:
        scene: an open scene or a path to an image.
        encoder: the image encoder.
        tiling: a tiling scheme or its spec string (a flat tiling; a pyramid is filled by
            :func:`rsrag.tools.pyramid.build_index`).
        store: the store, a :class:`PatchStore`, an embedded store's folder, or ``None`` for the default one.
        batch_size: patches per encoder call.
        chunk_size: patches per atomic commit (the unit of resumption).
        readers: reader threads (default :func:`default_readers`).
        prefetch: batches read ahead of the encoder (default ``readers + 1``).
        wait: when another process is building the same index, wait for it instead of raising.
        progress: called after every encoded batch.
        stop: when set (from another thread), the run stops after the current batch; committed chunks stay
            and the report says ``stopped``.

    Returns:
        What was done; ``no_op`` when the index was already complete.

    Raises:
        TilingError: the image is smaller than one patch of the tiling, or the tiling is a pyramid.
        IndexBusyError: another process is building this index and ``wait`` is False.
        StoreError: the store cannot be written (read-only, full); committed chunks stay valid.
    """
    readers = default_readers() if readers is None else readers
    if batch_size <= 0 or chunk_size <= 0 or readers <= 0:
        raise ValueError("batch_size, chunk_size and readers must be positive")
    own_scene = not isinstance(scene, Scene)
    sc = scene if isinstance(scene, Scene) else open_scene(Path(scene))
    scheme = parse_tiling(tiling) if isinstance(tiling, str) else tiling
    if getattr(scheme, "is_pyramid", False):
        raise TilingError(f"tiling {scheme.id!r} is a pyramid: fill it with rsrag.tools.pyramid.build_index")
    patches = as_patch_store(store)
    try:
        n_patches = scheme.count(sc.width, sc.height)
        key = index_key(sc.fingerprint, scheme.id, encoder.id)
        existing = patches.info(key)
        if existing is not None and existing.complete:
            return IndexReport(info=existing, encoded=0, skipped=existing.n_patches, chunks_written=0,
                               seconds=0.0, patches_per_s=0.0, no_op=True)
        with patches.store.lock(f"index-{key}", wait=wait):
            existing = patches.info(key)
            if existing is not None and existing.complete:  # finished by the process we waited for
                return IndexReport(info=existing, encoded=0, skipped=existing.n_patches, chunks_written=0,
                                   seconds=0.0, patches_per_s=0.0, no_op=True)
            info = IndexInfo(
                key=key, scene=sc.fingerprint, tiling=scheme.id, encoder=encoder.id, dim=index_dim(encoder),
                patch_table="", source=str(sc.path), width=sc.width, height=sc.height, n_patches=n_patches,
                chunk_size=chunk_size if existing is None else existing.chunk_size, status="building", updated=0.0,
            )
            info = info.model_copy(update={"patch_table": patches.patch_table(info).name})
            info = patches.begin(info)
            done_chunks = patches.done_chunks(info)
            last_chunk = info.n_chunks - 1
            skipped = sum(min(info.chunk_size, info.n_patches - c * info.chunk_size) for c in done_chunks if c <= last_chunk)
            units = _pending_units(scheme.patches(sc.width, sc.height), info.chunk_size, done_chunks)
            run = encode_units(sc, encoder, patches, info, units, batch_size=batch_size, readers=readers,
                               prefetch=prefetch, progress=progress, stop=stop, done_before=skipped)
            if run.stopped:
                return IndexReport(info=info, encoded=run.encoded, skipped=skipped, chunks_written=run.written,
                                   seconds=run.seconds, patches_per_s=run.rate, no_op=False, stopped=True)
            if run.empty or skipped:
                # windows without data are not stored: the complete index holds the others (a resumed run
                # cannot know which windows of earlier chunks were empty, so it counts what the store holds)
                held = info.n_patches - len(run.empty) if not done_chunks else min(info.n_patches, patches.count(info))
                if held == 0:
                    raise InvalidRasterError(
                        f"{sc.path.name}: every window of {scheme.id!r} is nodata (the file's nodata value, alpha "
                        "band or mask band everywhere): nothing to index"
                    )
                info = info.model_copy(update={"n_patches": held})
            info = patches.finish(info)
            return IndexReport(info=info, encoded=run.encoded, skipped=skipped, chunks_written=run.written,
                               seconds=run.seconds, patches_per_s=run.rate, no_op=False)
    finally:
        if own_scene:
            sc.close()


@dataclass(frozen=True)
class EncodeRun:
    """What :func:`encode_units` did: windows encoded and committed, units written, time, whether stopped."""

    encoded: int
    written: int
    seconds: float
    stopped: bool
    empty: tuple[int, ...] = ()
    """Windows (patch indexes) read and found entirely without data: not encoded, not stored."""

    @property
    def rate(self) -> float:
        """Windows encoded per second."""
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def encode_units(
    sc: Scene,
    encoder: Encoder,
    patches: PatchStore,
    info: IndexInfo,
    units: Iterable[Unit],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    readers: int = 1,
    prefetch: int | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    done_before: int = 0,
    total: int | None = None,
    stage: str = "index",
    level: int | None = None,
    levels: int | None = None,
    executors: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None,
    read: WindowReader | None = None,
) -> EncodeRun:
    """Read, encode and commit windows of index ``info``, one atomic write per unit.

    The caller holds the index's lock and has recorded the index (:meth:`PatchStore.begin`); this does not
    finish it. Windows are read on ``readers`` threads (several batches ahead), encoded on the calling
    thread, and committed by a writer thread; a unit whose windows are all encoded is written as one
    :meth:`PatchStore.add_rows`. Windows whose read holds no data (nodata everywhere) are not encoded nor
    written; the run lists them in :attr:`EncodeRun.empty` (a unit of only such windows writes nothing). When ``stop`` is set the run ends after the current batch: complete units are
    committed, a partly encoded unit is dropped (never half-written).

    Args:
        sc: the scene.
        encoder: the image encoder.
        patches: the patch store holding ``info``.
        info: the index the windows belong to.
        units: the windows to encode, grouped into commits.
        batch_size: windows per encoder call.
        readers: reader threads.
        prefetch: batches read ahead of the encoder (default ``readers + 1``).
        progress: called after every encoded batch.
        stop: stops the run between two batches when set.
        done_before: windows of the index already stored (for progress).
        total: windows the progress counts towards (default: the index's).
        stage / level / levels: reported in the progress.
        executors: (readers, writer) thread pools to use instead of new ones (a caller that encodes many
            small sets keeps its threads, and so the allocator's per-thread arenas, from one call to the next).
        read: reads one window instead of the scene's windowed read (see :data:`WindowReader`).
    """
    ahead = prefetch if prefetch is not None else readers + 1
    batches = _unit_batches(units, batch_size)
    goal = info.n_patches if total is None else total
    encoded = written = 0
    empty: list[int] = []
    stopped = False
    start = time.perf_counter()
    acc_chunks: list[int] = []
    acc_ids: list[int] = []
    acc_regions: list[Region] = []
    acc_vecs: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        if executors is None:
            pool = stack.enter_context(ThreadPoolExecutor(readers, thread_name_prefix="rsrag-read"))
            writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="rsrag-write"))
        else:
            pool, writer = executors
        inflight: deque[tuple[Sequence[int], bool, list[PatchSpec],
                              Future[tuple[torch.Tensor | None, list[Region], list[bool]]]]] = deque()
        writes: deque[Future[int]] = deque()

        def fill() -> None:
            while len(inflight) < ahead and not (stop is not None and stop.is_set()):
                item = next(batches, None)
                if item is None:
                    return
                chunks, last, specs = item
                inflight.append((chunks, last, specs, pool.submit(_read_batch, sc, encoder, specs, True, read)))

        try:
            fill()
            while inflight:
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                chunks, last, specs, fut = inflight.popleft()
                tensor, regions, keep = fut.result()
                fill()  # queue the next read before the model takes the cores
                empty.extend(s.index for s, k in zip(specs, keep, strict=True) if not k)
                if tensor is not None:
                    acc_vecs.append(index_keys(encoder, encoder.encode_image_tensors(tensor)))
                    acc_chunks.extend(c for c, k in zip(chunks, keep, strict=True) if k)
                    acc_ids.extend(s.index for s, k in zip(specs, keep, strict=True) if k)
                    acc_regions.extend(regions)
                    encoded += len(regions)
                if last:
                    if acc_ids:
                        while len(writes) >= 2:
                            writes.popleft().result()
                        writes.append(writer.submit(patches.add_rows, info, acc_chunks, acc_ids, acc_regions,
                                                    np.concatenate(acc_vecs)))
                        written += 1
                    acc_chunks, acc_ids, acc_regions, acc_vecs = [], [], [], []
                if progress is not None:
                    elapsed = time.perf_counter() - start
                    seen = encoded + len(empty)
                    rate = seen / elapsed if elapsed > 0 else 0.0
                    left = goal - done_before - seen
                    progress(IndexProgress(done=done_before + seen, total=goal, encoded=encoded,
                                           elapsed_s=elapsed, rate=rate, eta_s=left / rate if rate > 0 else None,
                                           stage=stage, level=level, levels=levels, scene=info.scene))
            if stop is not None and stop.is_set() and (inflight or next(batches, None) is not None):
                stopped = True
            for _, _, _, f in inflight:
                f.cancel()
            while writes:
                writes.popleft().result()
        except BaseException:
            for _, _, _, f in inflight:
                f.cancel()
            raise
    if stopped:  # the encoded part of an unfinished unit is dropped: it was never committed
        encoded -= len(acc_ids)
    return EncodeRun(encoded=encoded, written=written, seconds=time.perf_counter() - start, stopped=stopped,
                     empty=tuple(empty))
