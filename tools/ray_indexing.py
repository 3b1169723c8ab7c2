"""Index an archive of scenes on a Ray cluster (or a local Ray instance).

The work is split into one task per *chunk* of windows of each scene (the same chunks as
:func:`rsrag.tools.indexing.index_scene`, so an index started on one machine can be finished on a cluster
and the other way round). Encoder actors, one per worker slot, load the encoder once (its device from the
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

from rsrag.tools.errors import ConfigError, RsragError, StoreUnavailableError
from rsrag.tools.indexing import DEFAULT_CHUNK_SIZE, IndexReport
from rsrag.tools.store import IndexInfo, as_patch_store, index_key
from rsrag.tools.tiling import parse_tiling

__all__ = ["ChunkTask", "RayProgress", "index_on_ray", "start_ray"]


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work: encode and commit chunk ``chunk`` of the index ``info`` of the scene at ``source``."""

    source: str
    tiling: str
    info: dict[str, Any]
    chunk: int


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

    def __init__(self, encoder: str | None, device: str, batch_size: int, store: str) -> None:
        from rsrag.tools.encoders import load_encoder

        self.encoder = load_encoder(encoder, device=device, batch_size=batch_size)
        self.batch_size = batch_size
        self.patches = as_patch_store(store)
        self._scenes: dict[str, Any] = {}

    def describe(self) -> tuple[str, int, int]:
        return self.encoder.id, self.encoder.dim, os.getpid()

    def run(self, task: ChunkTask) -> tuple[str, int, int]:
        """Encode and commit one chunk; returns ``(index key, chunk, windows encoded)`` (0: already stored)."""
        import numpy as np

        from rsrag.tools.indexing import _read_batch  # the in-process indexer's reader: same pixels, same vectors
        from rsrag.tools.raster import open_scene

        info = IndexInfo(**task.info)
        table = self.patches.patch_table(info)
        if table.count({"index_key": info.key, "chunk": task.chunk}) > 0:
            return info.key, task.chunk, 0  # committed by an earlier attempt that died before returning
        scene = self._scenes.get(task.source)
        if scene is None:
            scene = self._scenes[task.source] = open_scene(task.source)
        scheme = parse_tiling(task.tiling)
        start = task.chunk * info.chunk_size
        specs = list(islice(scheme.patches(scene.width, scene.height), start, start + info.chunk_size))
        ids, regions, vectors = [], [], []
        for b in range(0, len(specs), self.batch_size):
            batch = specs[b:b + self.batch_size]
            tensor, batch_regions = _read_batch(scene, self.encoder, batch)
            vectors.append(np.asarray(self.encoder.encode_image_tensors(tensor), dtype=np.float32))
            ids.extend(s.index for s in batch)
            regions.extend(batch_regions)
        self.patches.add_chunk(info, task.chunk, ids, regions, np.concatenate(vectors))
        return info.key, task.chunk, len(specs)


def index_on_ray(
    sources: Sequence[str],
    *,
    store: str | os.PathLike[str],
    encoder: str | None = None,
    tiling: str = "vit:448",
    device: str = "cpu",
    batch_size: int = 32,
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
        encoder / device / batch_size: the encoder spec, its device on the workers, images per forward pass.
        tiling: tiling spec of the indexes.
        chunk_size: windows per task and per atomic commit.
        workers: encoder actors (default: the cluster's CPUs divided by ``cpus_per_worker``).
        cpus_per_worker / gpus_per_worker: resources each actor reserves.
        max_retries: restarts of a dead actor and retries of its tasks.
        progress: called after every committed chunk.
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
    actors = [actor_cls.remote(encoder, device, batch_size, store_path) for _ in range(n_workers)]
    described = ray.get([a.describe.remote() for a in actors])
    encoder_id, dim = described[0][0], described[0][1]
    if on_worker is not None:
        on_worker([pid for _, _, pid in described])

    from rsrag.tools.raster import open_scene

    patches = as_patch_store(store_path)
    reports: dict[str, IndexReport] = {}
    infos: dict[str, IndexInfo] = {}
    pending: dict[str, set[int]] = {}
    tasks: list[ChunkTask] = []
    skipped: dict[str, int] = {}
    with contextlib.ExitStack() as locks:
        for actor in actors:
            locks.callback(ray.kill, actor)
        for source in dict.fromkeys(sources):
            with open_scene(source) as sc:
                n = scheme.count(sc.width, sc.height)
                key = index_key(sc.fingerprint, scheme.id, encoder_id)
                existing = patches.info(key)
                if existing is not None and existing.complete:
                    reports[source] = IndexReport(info=existing, encoded=0, skipped=existing.n_patches, chunks_written=0,
                                                  seconds=0.0, patches_per_s=0.0, no_op=True)
                    continue
                info = IndexInfo(key=key, scene=sc.fingerprint, tiling=scheme.id, encoder=encoder_id, dim=dim, patch_table="",
                                 source=str(sc.path), width=sc.width, height=sc.height, n_patches=n,
                                 chunk_size=chunk_size if existing is None else existing.chunk_size, status="building", updated=0.0)
            locks.enter_context(patches.store.lock(f"index-{key}", wait=False))  # same lock as the in-process indexer
            info = patches.begin(info.model_copy(update={"patch_table": patches.patch_table(info).name}))
            done = patches.done_chunks(info)
            todo = [c for c in range(info.n_chunks) if c not in done]
            infos[source], pending[source] = info, set(todo)
            skipped[source] = sum(min(info.chunk_size, info.n_patches - c * info.chunk_size) for c in done)
            tasks.extend(ChunkTask(source=source, tiling=tiling, info=info.model_dump(), chunk=c) for c in todo)

        total = sum(i.n_patches for i in infos.values())
        stored = sum(skipped.values())
        encoded_by: dict[str, int] = dict.fromkeys(infos, 0)
        chunks_by: dict[str, int] = dict.fromkeys(infos, 0)
        started = time.perf_counter()
        by_key = {i.key: s for s, i in infos.items()}
        queue = list(reversed(tasks))
        inflight: dict[Any, int] = {}
        per_actor = 2  # one chunk computing, one queued, per actor
        load = [0] * len(actors)

        def submit() -> None:
            while queue:
                slot = min(range(len(actors)), key=load.__getitem__)
                if load[slot] >= per_actor:
                    return
                ref = actors[slot].run.remote(queue.pop())
                inflight[ref] = slot
                load[slot] += 1

        def finish_scene(source: str) -> None:
            info = patches.finish(infos[source])
            seconds = time.perf_counter() - started
            reports[source] = IndexReport(info=info, encoded=encoded_by[source], skipped=skipped[source],
                                          chunks_written=chunks_by[source], seconds=seconds,
                                          patches_per_s=encoded_by[source] / seconds if seconds > 0 else 0.0, no_op=False)

        try:
            for source in [s for s in infos if not pending[s]]:
                finish_scene(source)
            submit()
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                ref = ready[0]
                load[inflight.pop(ref)] -= 1
                try:
                    key, chunk, n = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, RsragError):
                        raise cause from None
                    raise
                source = by_key[key]
                pending[source].discard(chunk)
                encoded_by[source] += n
                chunks_by[source] += 1 if n else 0
                stored += min(infos[source].chunk_size, infos[source].n_patches - chunk * infos[source].chunk_size)
                if not pending[source]:
                    finish_scene(source)
                submit()
                if progress is not None:
                    elapsed = time.perf_counter() - started
                    progress(RayProgress(done=stored, total=total, scenes_done=sum(1 for s in infos if not pending[s]),
                                         scenes=len(infos), elapsed_s=elapsed,
                                         rate=sum(encoded_by.values()) / elapsed if elapsed > 0 else 0.0))
        finally:
            for ref in inflight:
                ray.cancel(ref)
    return [reports[s] for s in sources]
