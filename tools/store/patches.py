"""The patch index: patch vectors of many scenes in one store, one logical index per (scene, tiling, encoder).

Layout, on any :class:`~rsrag.tools.store.base.Store` backend:

* ``patch_indexes``: one row per index (key = hash of scene fingerprint, tiling id, encoder id) with its
  status (``building`` / ``complete``), expected patch count, and the scene statistics of its vectors (mean
  vector and covariance, used by the fast path's confidence).
* ``patches_<encoder>``: one table per encoder (vectors of different encoders are not comparable), shared
  by every scene and tiling indexed with that encoder. One row per patch: its Region (pixel box, scale, map
  box), the index key, and the *chunk* it was committed in.

Patches are committed in whole chunks (a fixed range of patch indexes), each chunk in one atomic write. The
table itself is therefore the manifest of completed work: a chunk id present in the table is complete, one
absent was never committed. A killed run leaves only whole chunks; the next run skips them, so nothing is
half-written or duplicated.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import StoreError
from rsrag.tools.region import MapBox, PixelBox, Region
from rsrag.tools.store.base import FieldType, ScalarField, SearchResult, Store, StoreTable, TableSchema, VectorField

INDEX_TABLE = "patch_indexes"
EXACT_SEARCH_MAX = 100_000
"""Indexes with fewer patches are searched exhaustively (ANN indices only pay off, and only stay accurate
under a per-scene filter, for large scenes)."""

_F = ScalarField
INDEX_SCHEMA = TableSchema(
    name=INDEX_TABLE,
    key="key",
    fields=(
        _F("key", FieldType.STR), _F("scene", FieldType.STR), _F("tiling", FieldType.STR),
        _F("encoder", FieldType.STR), _F("dim", FieldType.INT), _F("patch_table", FieldType.STR),
        _F("source", FieldType.STR), _F("width", FieldType.INT), _F("height", FieldType.INT),
        _F("n_patches", FieldType.INT), _F("chunk_size", FieldType.INT), _F("status", FieldType.STR),
        _F("updated", FieldType.FLOAT), _F("stats_n", FieldType.INT, nullable=True),
        _F("stats_mean", FieldType.BYTES, nullable=True), _F("stats_cov", FieldType.BYTES, nullable=True),
    ),
)
PATCH_FIELDS = (
    _F("id", FieldType.STR), _F("index_key", FieldType.STR), _F("scene", FieldType.STR),
    _F("tiling", FieldType.STR), _F("encoder", FieldType.STR), _F("chunk", FieldType.INT),
    _F("patch", FieldType.INT), _F("scale", FieldType.INT),
    _F("x0", FieldType.INT), _F("y0", FieldType.INT), _F("x1", FieldType.INT), _F("y1", FieldType.INT),
    _F("map_crs", FieldType.STR, nullable=True), _F("map_left", FieldType.FLOAT, nullable=True),
    _F("map_bottom", FieldType.FLOAT, nullable=True), _F("map_right", FieldType.FLOAT, nullable=True),
    _F("map_top", FieldType.FLOAT, nullable=True),
)
REGION_FIELDS = ["patch", "scene", "scale", "x0", "y0", "x1", "y1", "map_crs", "map_left", "map_bottom", "map_right", "map_top"]


def index_key(scene: str, tiling: str, encoder: str) -> str:
    """The key of the index of one scene fingerprint, tiling id and encoder id."""
    return hashlib.blake2b(f"{scene}|{tiling}|{encoder}".encode(), digest_size=10).hexdigest()


def patch_table_name(encoder: str) -> str:
    """Name of the patch table holding vectors of encoder ``encoder``."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", encoder).strip("_")[:40]
    return f"patches_{slug}_{hashlib.blake2b(encoder.encode(), digest_size=4).hexdigest()}"


def patch_schema(encoder: str, dim: int) -> TableSchema:
    """Schema of the patch table of one encoder."""
    return TableSchema(name=patch_table_name(encoder), key="id", fields=PATCH_FIELDS, vectors=(VectorField("vector", dim),))


class IndexInfo(BaseModel):
    """What the store knows about one patch index (small values only; safe for graph state)."""

    model_config = ConfigDict(frozen=True)

    key: str
    scene: str
    tiling: str
    encoder: str
    dim: int
    patch_table: str
    source: str
    width: int
    height: int
    n_patches: int
    chunk_size: int
    status: str
    updated: float

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def n_chunks(self) -> int:
        return -(-self.n_patches // self.chunk_size)


@dataclass(frozen=True)
class SceneStats:
    """First and second moments of an index's patch vectors (for z-scores of cosine scores)."""

    n: int
    mean: np.ndarray
    cov: np.ndarray

    def zscores(self, query: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """z-scores of cosine ``scores`` of unit ``query`` against this scene's score distribution.

        The scores of one query over all patches have mean ``q . mean`` and variance ``q^T cov q``
        exactly, so no pass over the patches is needed at query time.
        """
        q = np.asarray(query, dtype=np.float64).reshape(-1)
        mu = float(q @ self.mean)
        var = float(q @ self.cov @ q)
        sd = max(np.sqrt(max(var, 0.0)), 1e-4)
        return (np.asarray(scores, dtype=np.float64) - mu) / sd


def region_from_row(row: dict[str, Any]) -> Region:
    """Rebuild a patch's :class:`Region` from its stored row."""
    map_box = None
    if row.get("map_crs") is not None:
        map_box = MapBox(crs=row["map_crs"], left=row["map_left"], bottom=row["map_bottom"], right=row["map_right"], top=row["map_top"])
    box = PixelBox(x0=row["x0"], y0=row["y0"], x1=row["x1"], y1=row["y1"])
    return Region(scene=row["scene"], box=box, map_box=map_box, scale=row["scale"])


class PatchStore:
    """Patch indexes on top of a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stats: dict[tuple[str, float], SceneStats] = {}

    # --- index records ---------------------------------------------------------------------------------

    def _index_table(self, create: bool) -> StoreTable | None:
        return self.store.table(INDEX_SCHEMA) if create else self.store.open_table(INDEX_SCHEMA)

    def _row(self, key: str) -> dict[str, Any] | None:
        table = self._index_table(create=False)
        if table is None:
            return None
        for batch in table.scan(where={"key": key}):
            return {k: v[0] for k, v in batch.items()}
        return None

    def info(self, key: str) -> IndexInfo | None:
        """The record of index ``key``, or ``None``."""
        row = self._row(key)
        return IndexInfo(**{k: row[k] for k in IndexInfo.model_fields}) if row else None

    def find(self, scene: str | None = None, encoder: str | None = None, tiling: str | None = None,
             complete_only: bool = True) -> list[IndexInfo]:
        """Indexes matching the given scene fingerprint, encoder id and tiling id (most recent first)."""
        table = self._index_table(create=False)
        if table is None:
            return []
        where = {k: v for k, v in {"scene": scene, "encoder": encoder, "tiling": tiling}.items() if v is not None}
        if complete_only:
            where["status"] = "complete"
        fields = list(IndexInfo.model_fields)
        out = [IndexInfo(**dict(zip(fields, vals))) for b in table.scan(where=where, fields=fields) for vals in zip(*(b[f] for f in fields))]
        return sorted(out, key=lambda i: -i.updated)

    def begin(self, info: IndexInfo) -> IndexInfo:
        """Record (or re-record) an index as being built; keeps committed chunks."""
        existing = self.info(info.key)
        if existing is not None and (existing.n_patches, existing.chunk_size) != (info.n_patches, info.chunk_size):
            # Same scene, tiling and encoder but a different chunking: start the index again.
            self.patch_table(info).delete({"index_key": info.key})
        record = info.model_copy(update={"status": "building", "updated": time.time()})
        self._write_info(record, stats=None)
        return record

    def _write_info(self, info: IndexInfo, stats: SceneStats | None) -> int:
        cols: dict[str, list[Any]] = {k: [v] for k, v in info.model_dump().items()}
        cols["stats_n"] = [stats.n if stats else None]
        cols["stats_mean"] = [stats.mean.astype(np.float32).tobytes() if stats else None]
        cols["stats_cov"] = [stats.cov.astype(np.float32).tobytes() if stats else None]
        table = self._index_table(create=True)
        assert table is not None
        return table.upsert(cols)

    def stats(self, info: IndexInfo) -> SceneStats:
        """The stored vector statistics of a complete index (cached per index record)."""
        cached = self._stats.get((info.key, info.updated))
        if cached is not None:
            return cached
        row = self._row(info.key)
        if row is None or row.get("stats_mean") is None:
            raise StoreError(f"index {info.key} of scene {info.scene} has no statistics; re-run `rsrag index`")
        d = info.dim
        mean = np.frombuffer(row["stats_mean"], dtype=np.float32).astype(np.float64)
        cov = np.frombuffer(row["stats_cov"], dtype=np.float32).astype(np.float64).reshape(d, d)
        stats = SceneStats(n=int(row["stats_n"]), mean=mean, cov=cov)
        if len(self._stats) > 64:
            self._stats.clear()
        self._stats[(info.key, info.updated)] = stats
        return stats

    # --- patches ---------------------------------------------------------------------------------------

    def patch_table(self, info: IndexInfo) -> StoreTable:
        """The (shared, per-encoder) patch table of an index, created when missing."""
        return self.store.table(patch_schema(info.encoder, info.dim))

    def done_chunks(self, info: IndexInfo) -> set[int]:
        """Chunk ids already committed for this index."""
        table = self.store.open_table(patch_schema(info.encoder, info.dim))
        if table is None:
            return set()
        done: set[int] = set()
        for batch in table.scan(where={"index_key": info.key}, fields=["chunk"]):
            done.update(batch["chunk"])
        return done

    def add_chunk(self, info: IndexInfo, chunk: int, patches: Sequence[int], regions: Sequence[Region], vectors: np.ndarray) -> int:
        """Commit one whole chunk of patches in one atomic write; returns the table version."""
        return self.add_rows(info, [chunk] * len(patches), patches, regions, vectors)

    def add_rows(self, info: IndexInfo, chunks: Sequence[int], patches: Sequence[int], regions: Sequence[Region],
                 vectors: np.ndarray) -> int:
        """Commit whole chunks (``chunks[i]`` is patch ``patches[i]``'s chunk) in one atomic write.

        Every chunk named must be complete in this write: the table is the manifest of completed chunks.
        A pyramid level uses one chunk per window, so any set of windows can be committed together.
        """
        if not (len(chunks) == len(patches) == len(regions) == len(vectors)):
            raise StoreError(f"chunks {sorted(set(chunks))[:4]}...: {len(chunks)} chunk ids, {len(patches)} patch ids, "
                             f"{len(regions)} regions, {len(vectors)} vectors")
        n = len(patches)
        cols: dict[str, Any] = {
            "id": [f"{info.key}:{p}" for p in patches], "index_key": [info.key] * n, "scene": [info.scene] * n,
            "tiling": [info.tiling] * n, "encoder": [info.encoder] * n, "chunk": list(chunks), "patch": list(patches),
            "scale": [r.scale or 0 for r in regions],
            "x0": [r.box.x0 for r in regions], "y0": [r.box.y0 for r in regions],
            "x1": [r.box.x1 for r in regions], "y1": [r.box.y1 for r in regions],
            "map_crs": [r.map_box.crs if r.map_box else None for r in regions],
            "map_left": [r.map_box.left if r.map_box else None for r in regions],
            "map_bottom": [r.map_box.bottom if r.map_box else None for r in regions],
            "map_right": [r.map_box.right if r.map_box else None for r in regions],
            "map_top": [r.map_box.top if r.map_box else None for r in regions],
            "vector": vectors,
        }
        return self.patch_table(info).add(cols)

    def count(self, info: IndexInfo) -> int:
        """Patches stored for this index."""
        table = self.store.open_table(patch_schema(info.encoder, info.dim))
        return 0 if table is None else table.count({"index_key": info.key})

    def vector_stats(self, info: IndexInfo, patches: Sequence[int] | None = None) -> SceneStats:
        """Mean vector and covariance of this index's stored vectors (of ``patches`` only, when given).

        Raises:
            StoreError: no vector is stored (for those patches).
        """
        table = self.patch_table(info)
        where: dict[str, Any] = {"index_key": info.key}
        if patches is not None:
            where["patch"] = sorted({int(p) for p in patches})
        s1 = np.zeros(info.dim)
        s2 = np.zeros((info.dim, info.dim))
        n = 0
        for batch in table.scan(where=where, fields=["vector"]):
            v = np.asarray(batch["vector"], dtype=np.float64).reshape(-1, info.dim)
            s1 += v.sum(axis=0)
            s2 += v.T @ v
            n += len(v)
        if n == 0:
            raise StoreError(f"index {info.key} has no stored vectors to compute statistics from")
        mean = s1 / n
        return SceneStats(n=n, mean=mean, cov=s2 / n - np.outer(mean, mean))

    def set_provisional_stats(self, info: IndexInfo, stats: SceneStats) -> IndexInfo:
        """Record statistics for an index still being built (estimated from a sample of its windows), so a
        partly filled pyramid level can be searched with calibrated confidences; :meth:`finish` replaces
        them with the exact ones. Returns the updated record."""
        record = info.model_copy(update={"status": "building", "updated": time.time()})
        self._write_info(record, stats)
        return record

    def finish(self, info: IndexInfo, ann_min_rows: int = EXACT_SEARCH_MAX) -> IndexInfo:
        """Check completeness, compute the scene statistics, mark the index complete and tidy the table."""
        stored = self.count(info)
        if stored != info.n_patches:
            raise StoreError(f"index {info.key}: {stored} patches stored, {info.n_patches} expected; re-run indexing")
        table = self.patch_table(info)
        stats = self.vector_stats(info)
        optimize = getattr(table, "optimize", None)
        if callable(optimize):
            optimize()
        ensure_scalar = getattr(table, "ensure_scalar_index", None)
        if callable(ensure_scalar):
            ensure_scalar("index_key")
        if info.n_patches >= ann_min_rows:
            table.ensure_vector_index("vector", min_rows=ann_min_rows)
        done = info.model_copy(update={"status": "complete", "updated": time.time()})
        self._write_info(done, stats)
        return done

    def search(self, info: IndexInfo, query: np.ndarray, k: int, exact: bool | None = None) -> SearchResult:
        """Top-``k`` patches of one index for a unit query vector (exhaustive for small indexes)."""
        table = self.store.open_table(patch_schema(info.encoder, info.dim))
        if table is None:
            raise StoreError(f"patch table for encoder {info.encoder} is missing from store {self.store.location}")
        # An index still being built (a pyramid level filled on demand) is searched exhaustively: its rows
        # are few, and an ANN index of the shared table would not hold all of them.
        use_exact = (info.n_patches < EXACT_SEARCH_MAX or not info.complete) if exact is None else exact
        where = {"index_key": info.key}
        if table.count() == info.n_patches:
            # The table holds this index only (one large scene): a filter would select every row, yet
            # building its row mask costs more than the ANN search itself. Search unfiltered and check.
            res = table.search("vector", query, k, fields=[*REGION_FIELDS, "index_key"], exact=use_exact)
            if all(r["index_key"] == info.key for r in res.rows):
                for r in res.rows:
                    del r["index_key"]
                return res
        return table.search("vector", query, k, where=where, fields=REGION_FIELDS, exact=use_exact)
