"""Index an archive of scenes on a Ray cluster (or a local Ray instance).

The work is split into one task per *chunk* of windows of each scene (the same chunks as
:func:`rsrag.tools.indexing.index_scene`, so an index started on one machine can be finished on a cluster
and the other way round); for a pyramid tiling, every level of each scene is filled, a task being a group of
windows of one level (a level has one chunk per window, as :mod:`rsrag.tools.pyramid` stores it). Encoder actors, one per worker slot, load the encoder once (its device from the
settings), read their chunk's windows, encode them and commit the chunk to the shared store in one atomic
write. The store must be reachable from every worker: an embedded LanceDB folder on a shared file system
or object store, or Weaviate.

Fault tolerance comes from Ray, not from this module: a task whose worker dies is retried by Ray on a
restarted actor. Retries cannot duplicate a chunk: a chunk is one atomic write, and a task first checks
whether its chunk is already committed (by an attempt that died after its write), so every window is stored
exactly once. The driver finishes each scene's index (statistics, completeness check) when its chunks are
all in.

::

    reports = index_on_ray(["a.tif", "b.tif"], store="/shared/rsrag/store", address="auto", workers=4)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from rsrag.tools.errors import ConfigError, RsragError, StoreUnavailableError, TilingError
from rsrag.tools.indexing import DEFAULT_CHUNK_SIZE, DEFAULT_TILING, IndexReport
from rsrag.tools.store import IndexInfo, as_patch_store, index_key
from rsrag.tools.tiling import parse_tiling
from rsrag.tools.encoders.hubness import index_dim, index_keys
from rsrag.tools.encoders.spec import DEFAULT_BATCH_SIZE, DEFAULT_PRECISION

__all__ = ["ChunkTask", "RayProgress", "index_on_ray", "start_ray"]


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work: encode windows ``windows`` of the index ``info`` (of the scene at ``source``) and
    commit them in one atomic write, window ``windows[i]`` as part of chunk ``chunks[i]``.

    For a flat tiling a task is one chunk of consecutive windows; for a pyramid level (one chunk per
    window) it is a group of windows of that level (``level`` set, ``tiling`` the pyramid's spec).
    """

    source: str
    tiling: str
    info: dict[str, Any]
    chunks: tuple[int, ...]
    windows: tuple[int, ...]
    level: int | None = None


@dataclass(frozen=True)
class RayProgress:
    """Aggregated progress of a Ray indexing run (passed to the progress callback after every chunk)."""

    done: int
    """Windows stored, including those committed before this run."""
    total: int
    scenes_done: int
    scenes: int
    elapsed_s: float
    rate: float
    """Windows per second encoded by this run, over all workers."""


def start_ray(address: str | None = "auto", num_cpus: int | None = None) -> str:
    """Connect to a Ray cluster, or start a local Ray instance; returns how (for the user).

    Args:
        address: ``"auto"`` (a running cluster if there is one, else a local instance), ``"local"`` (always a
            new local instance), or a cluster address such as ``ray://head:10001`` or ``10.0.0.5:6379``.
        num_cpus: CPUs of a local instance (default: all).
    """
    import ray

    if ray.is_initialized():
        return "already connected"
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, **kwargs)
        return "started a local Ray instance"
    if address == "auto":
        try:
            ray.init(address="auto", **kwargs)
            return "connected to the running Ray cluster"
        except (ConnectionError, RuntimeError):
            ray.init(num_cpus=num_cpus, **kwargs)
            return "no running Ray cluster found: started a local Ray instance"
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise StoreUnavailableError(f"cannot connect to the Ray cluster at {address!r}: {str(exc).splitlines()[0]}; "
                                    "check the address (ray status on the head node prints it)") from exc
    return f"connected to the Ray cluster at {address}"


class _EncoderWorker:
    """Body of the Ray actor: one encoder per worker, scenes opened once, chunks committed to the store."""

    def __init__(self, encoder: str | None, device: str, batch_size: int, store: str, precision: str = DEFAULT_PRECISION) -> None:
        from rsrag.tools.encoders import load_encoder

        self.encoder = load_encoder(encoder, device=device, batch_size=batch_size, precision=precision)
        self.batch_size = batch_size
        self.patches = as_patch_store(store)
        self._scenes: dict[str, Any] = {}

    def describe(self) -> tuple[str, int, int, int]:
        return self.encoder.id, index_dim(self.encoder), self.encoder.image_size, os.getpid()

    def run(self, task: ChunkTask) -> tuple[str, tuple[int, ...], int]:
        """Encode and commit one task; returns ``(index key, its windows, windows encoded)`` (0: already stored)."""
        import numpy as np

        from rsrag.tools.indexing import _read_batch  # the in-process indexer's reader: same pixels, same vectors
        from rsrag.tools.raster import open_scene

        info = IndexInfo(**task.info)
        table = self.patches.patch_table(info)
        if table.count({"index_key": info.key, "chunk": sorted(set(task.chunks))}) > 0:
            return info.key, task.windows, 0  # committed (atomically, whole) by an attempt that died before returning
        scene = self._scenes.get(task.source)
        if scene is None:
            scene = self._scenes[task.source] = open_scene(task.source)
        scheme = parse_tiling(task.tiling)
        if task.level is not None:
            from rsrag.tools.pyramid import PyramidTiling

            assert isinstance(scheme, PyramidTiling), f"{task.tiling!r} is not a pyramid"
            level = scheme.resolve(self.encoder.image_size).levels(scene.width, scene.height)[task.level]
            specs = [level.spec(i, self.encoder.image_size) for i in task.windows]
        else:
            specs = list(islice(scheme.patches(scene.width, scene.height), task.windows[0], task.windows[-1] + 1))
        regions, vectors = [], []
        for b in range(0, len(specs), self.batch_size):
            # every window is encoded here, those without data too (the cluster's plan counts every window)
            tensor, batch_regions, _ = _read_batch(scene, self.encoder, specs[b:b + self.batch_size], skip_empty=False)
            assert tensor is not None
            vectors.append(index_keys(self.encoder, self.encoder.encode_image_tensors(tensor)))
            regions.extend(batch_regions)
        self.patches.add_rows(info, list(task.chunks), [s.index for s in specs], regions, np.concatenate(vectors))
        return info.key, task.windows, len(specs)


def index_on_ray(
    sources: Sequence[str],
    *,
    store: str | os.PathLike[str],
    encoder: str | None = None,
    tiling: str = DEFAULT_TILING,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = DEFAULT_PRECISION,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    max_retries: int = 3,
    progress: Callable[[RayProgress], None] | None = None,
    on_worker: Callable[[list[int]], None] | None = None,
) -> list[IndexReport]:
    """Index ``sources`` on the connected Ray cluster (call :func:`start_ray` first); resumable, idempotent.

    Args:
        sources: image paths or URLs every worker can read.
        store: the store folder (it must be on storage shared by every worker).
        encoder / device / batch_size / precision: the encoder spec, its device on the workers, images per forward
            pass, the precision of image forward passes (see :func:`rsrag.tools.encoders.load_encoder`).
        tiling: tiling spec of the indexes: a flat tiling, or a pyramid (every level is filled).
        chunk_size: windows per task and per atomic commit (for a flat tiling also the index's chunk size).
        workers: encoder actors (default: the cluster's CPUs divided by ``cpus_per_worker``).
        cpus_per_worker / gpus_per_worker: resources each actor reserves.
        max_retries: restarts of a dead actor and retries of its tasks.
        progress: called after every committed task.
        on_worker: called once with the worker process ids (for tests and monitoring).

    Returns:
        One report per scene, in the order given (``no_op`` for scenes already indexed).
    """
    import ray

    if not ray.is_initialized():
        raise ConfigError("Ray is not connected: call rsrag.tools.ray_indexing.start_ray() (or pass --ray) first")
    store_path = str(os.fspath(store))
    if "://" not in store_path and not os.path.isabs(store_path):
        store_path = os.path.abspath(store_path)
    scheme = parse_tiling(tiling)
    n_workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))
    actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_retries,
                           max_task_retries=max_retries)(_EncoderWorker)
    actors = [actor_cls.remote(encoder, device, batch_size, store_path, precision) for _ in range(n_workers)]
    described = ray.get([a.describe.remote() for a in actors])
    encoder_id, dim, image_size = described[0][0], described[0][1], described[0][2]
    if on_worker is not None:
        on_worker([pid for *_, pid in described])

    patches = as_patch_store(store_path)
    plans: dict[str, list[_IndexPlan]] = {}
    reports: dict[str, IndexReport] = {}
    with contextlib.ExitStack() as locks:
        for actor in actors:
            locks.callback(ray.kill, actor)
        for source in dict.fromkeys(sources):
            plan = _plan(source, scheme, tiling, encoder_id, dim, image_size, chunk_size, patches)
            if all(p.done for p in plan):
                first = plan[0].info
                reports[source] = IndexReport(info=first, encoded=0, skipped=sum(p.info.n_patches for p in plan),
                                              chunks_written=0, seconds=0.0, patches_per_s=0.0, no_op=True)
                continue
            for p in plan:  # the same per-index lock as the in-process indexer and the pyramid
                locks.enter_context(patches.store.lock(f"index-{p.info.key}", wait=False))
            plans[source] = plan
        reports.update(_execute(ray, actors, plans, patches, progress))
    return [reports[s] for s in sources]


@dataclass
class _IndexPlan:
    """One index of a scene (a flat index, or one pyramid level) and its tasks not yet committed."""

    source: str
    info: IndexInfo
    tasks: list[ChunkTask]
    skipped: int
    pending: set[tuple[int, ...]]
    encoded: int = 0
    written: int = 0

    @property
    def done(self) -> bool:
        return not self.pending


def _plan(source: str, scheme: Any, tiling: str, encoder_id: str, dim: int, image_size: int, task_size: int,
          patches: Any) -> list[_IndexPlan]:
    """The indexes of one scene and the tasks that fill what is not stored yet."""
    from rsrag.tools.pyramid import PyramidTiling
    from rsrag.tools.raster import open_scene

    with open_scene(source) as sc:
        if isinstance(scheme, PyramidTiling):
            resolved = scheme.resolve(image_size)
            levels = resolved.levels(sc.width, sc.height)
            total = sum(lv.count for lv in levels)
            if total > resolved.max_patches:
                raise TilingError(f"the pyramid {resolved.id!r} of {source} has {total:,} windows, over the cap of "
                                  f"{resolved.max_patches:,}; raise it (e.g. 'pyramid:max=2000000')")
            specs = [(lv.level, lv.tiling_id, lv.count, 1) for lv in levels]
        else:
            specs = [(None, scheme.id, scheme.count(sc.width, sc.height), task_size)]
        plans = []
        for level, tiling_id, n, chunk in specs:
            key = index_key(sc.fingerprint, tiling_id, encoder_id)
            existing = patches.info(key)
            if existing is not None and existing.complete:
                plans.append(_IndexPlan(source, existing, [], existing.n_patches, set()))
                continue
            info = IndexInfo(key=key, scene=sc.fingerprint, tiling=tiling_id, encoder=encoder_id, dim=dim, patch_table="",
                             source=str(sc.path), width=sc.width, height=sc.height, n_patches=n,
                             chunk_size=chunk if existing is None else existing.chunk_size, status="building", updated=0.0)
            info = patches.begin(info.model_copy(update={"patch_table": patches.patch_table(info).name}))
            done = patches.done_chunks(info)
            tasks = []
            if info.chunk_size == 1:  # a pyramid level: any group of windows is a unit
                todo = [w for w in range(n) if w not in done]
                for i in range(0, len(todo), task_size):
                    group = tuple(todo[i:i + task_size])
                    tasks.append(ChunkTask(source, tiling, info.model_dump(), group, group, level))
            else:
                for c in range(info.n_chunks):
                    if c not in done:
                        windows = tuple(range(c * info.chunk_size, min(n, (c + 1) * info.chunk_size)))
                        tasks.append(ChunkTask(source, tiling, info.model_dump(), (c,) * len(windows), windows, level))
            skipped = n - sum(len(t.windows) for t in tasks)
            plans.append(_IndexPlan(source, info, tasks, skipped, {t.windows for t in tasks}))
        return plans


def _execute(ray: Any, actors: list[Any], plans: dict[str, list[_IndexPlan]], patches: Any,
             progress: Callable[[RayProgress], None] | None) -> dict[str, IndexReport]:
    """Run every task on the actors (two in flight per actor), finish each index when its tasks are in."""
    by_key = {p.info.key: p for plan in plans.values() for p in plan}
    queue = [t for plan in plans.values() for p in plan for t in p.tasks][::-1]
    total = sum(p.info.n_patches for p in by_key.values())
    stored = sum(p.skipped for p in by_key.values())
    reports: dict[str, IndexReport] = {}
    inflight: dict[Any, int] = {}
    load = [0] * len(actors)
    started = time.perf_counter()

    def submit() -> None:
        while queue:
            slot = min(range(len(actors)), key=load.__getitem__)
            if load[slot] >= 2:
                return
            ref = actors[slot].run.remote(queue.pop())
            inflight[ref] = slot
            load[slot] += 1

    def finish(source: str) -> None:
        plan = plans[source]
        infos = [p.info if p.info.complete else patches.finish(p.info) for p in plan]
        seconds = time.perf_counter() - started
        encoded = sum(p.encoded for p in plan)
        reports[source] = IndexReport(info=infos[-1], encoded=encoded, skipped=sum(p.skipped for p in plan),
                                      chunks_written=sum(p.written for p in plan), seconds=seconds,
                                      patches_per_s=encoded / seconds if seconds > 0 else 0.0, no_op=False)

    try:
        for source, plan in plans.items():
            if all(p.done for p in plan):
                finish(source)
        submit()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            load[inflight.pop(ref)] -= 1
            try:
                key, windows, n = ray.get(ref)
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, RsragError):
                    raise cause from None
                raise
            p = by_key[key]
            p.pending.discard(tuple(windows))
            p.encoded += n
            p.written += 1 if n else 0
            stored += len(windows)
            if all(q.done for q in plans[p.source]) and p.source not in reports:
                finish(p.source)
            submit()
            if progress is not None:
                elapsed = time.perf_counter() - started
                encoded = sum(q.encoded for q in by_key.values())
                progress(RayProgress(done=stored, total=total, scenes_done=len(reports), scenes=len(plans),
                                     elapsed_s=elapsed, rate=encoded / elapsed if elapsed > 0 else 0.0))
    finally:
        for ref in inflight:
            ray.cancel(ref)
    return reports

