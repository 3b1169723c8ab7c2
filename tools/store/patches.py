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
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from rsrag.tools.errors import StoreError
from rsrag.tools.region import MapBox, PixelBox, Region
from rsrag.tools.store.base import FieldType, ScalarField, SearchResult, Store, StoreTable, TableSchema, VectorField

if TYPE_CHECKING:
    from rsrag.tools.store.receipts import ReceiptFiles

INDEX_TABLE = "patch_indexes"
PARTIAL_RECEIPT_MAX = 20_000
"""An index still being built gets a receipt (:meth:`PatchStore.save_receipt`) only up to this many stored
patches: saving one re-reads every stored vector (20 MB at 256-d), after each search that encoded some."""
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
        self._receipts_dir = store.receipts_dir
        self._checked: dict[str, dict[str, int] | None] = {}
        """Index key -> the table versions at which its stale receipt was last checked against the store."""
        self._loaded: dict[str, ReceiptFiles] = {}

    # --- receipts (a complete index read without opening the database; see .receipts) ---------------------

    def _current_versions(self, patch_table: str) -> dict[str, int] | None:
        return self.store.local_versions([patch_table, INDEX_TABLE]) if self._receipts_dir is not None else None

    def _receipt(self, key: str, *, vectors: bool = False) -> ReceiptFiles | None:
        """The valid receipt of index ``key`` (its tables at exactly the versions it names), or ``None``; a
        stale one is checked against the store once and re-stamped when the index is unchanged there. The
        versions are checked on every call; the arrays are loaded once per receipt."""
        folder = self._receipts_dir
        if folder is None or not (folder / f"{key}.json").is_file():
            return None
        from rsrag.tools.store.receipts import load_receipt, read_receipt

        for attempt in range(2):
            head = read_receipt(folder, key)
            if head is None:
                return None
            current = self._current_versions(head.patch_table)
            if current is not None and all(current.get(t) == v for t, v in head.versions.items()):
                cached = self._loaded.get(key)
                if cached is not None and cached.receipt == head and (cached.vectors is not None or not vectors or not head.vectors):
                    return cached
                found = load_receipt(folder, key, current, vectors=vectors)
                if found is not None:
                    if len(self._loaded) > 64:
                        self._loaded.clear()
                    self._loaded[key] = found
                return found
            if attempt or (key in self._checked and self._checked[key] == current) or not self.refresh_receipts([key]):
                return None
        return None

    def _same_vectors(self, table: Any, key: str, head: Any) -> bool:
        """Whether the store's vectors of index ``key`` are the receipt's copy (checked once per change of
        the tables' versions, before a receipt with vectors is re-stamped: another index's write moves the
        versions too, and only a comparison tells it from a rewrite of this index's rows)."""
        from rsrag.tools.store.receipts import load_receipt

        files = load_receipt(self._receipts_dir, key, dict(head.versions), vectors=True)
        if files is None or files.vectors is None or files.rows is None:
            return False
        order = {int(p): i for i, p in enumerate(files.rows["patch"])}
        copy = np.asarray(files.vectors, dtype=np.float32)
        for batch in table.scan(where={"index_key": key}, fields=["patch", "vector"]):
            vectors = np.asarray(batch["vector"], dtype=np.float32).reshape(len(batch["patch"]), -1)
            for p, v in zip(batch["patch"], vectors):
                i = order.get(int(p))
                if i is None or not np.array_equal(copy[i], v):
                    return False
        return True

    def refresh_receipts(self, keys: Sequence[str]) -> int:
        """Re-stamp the receipts of indexes ``keys`` at the tables' current versions where the store still
        holds the index as described (:func:`rsrag.tools.store.receipts.restamp`); returns how many are valid.
        A reader checks a stale receipt once per change of the tables' versions."""
        folder = self._receipts_dir
        if folder is None:
            return 0
        from rsrag.tools.store.receipts import read_receipt, restamp

        valid = 0
        for key in keys:
            head = read_receipt(folder, key)
            if head is None:
                continue
            try:
                versions = self._current_versions(head.patch_table)  # first: then the record and the rows
                self._checked[key] = versions
                if versions is None or set(versions) != set(head.versions):
                    continue
                row = self._row(key)
                record = {k: row[k] for k in IndexInfo.model_fields} if row is not None else None
                table = self.store.open_table(patch_schema(head.info["encoder"], int(head.info["dim"])))
                stored = table.count({"index_key": key}) if table is not None else None
                if table is not None and head.vectors and stored == head.stored and not self._same_vectors(table, key, head):
                    stored = None  # the rows were rewritten in place: the receipt's copy is stale (removed below)
            except (StoreError, OSError):  # the store is the source of truth; a receipt is only a shortcut
                continue
            valid += restamp(folder, key, versions, record, stored)
        return valid

    def _write_receipt(self, info: IndexInfo, stats: SceneStats, versions: dict[str, int] | None) -> bool:
        """Write the receipt of the complete index ``info`` stamped with ``versions``, which the caller read
        *before* the record ``info`` (so a write in between leaves the receipt stale, never wrong)."""
        folder = self._receipts_dir
        if folder is None:
            return False
        from rsrag.tools.store.receipts import write_receipt

        table = self.patch_table(info)
        if versions is None or table.name not in versions or INDEX_TABLE not in versions:
            return False
        vectors = rows = None
        expected = info.n_patches if info.complete else self._store_count(info)
        if not info.complete and not 0 < expected <= PARTIAL_RECEIPT_MAX:
            return False  # nothing stored yet, or too much to re-read after every search: the store answers
        if expected < EXACT_SEARCH_MAX:
            order: list[int] = []
            parts: list[np.ndarray] = []
            rows_by_patch: dict[int, dict[str, Any]] = {}
            for batch in table.scan(where={"index_key": info.key}, fields=[*REGION_FIELDS, "vector"]):
                for vals in zip(*(batch[f] for f in REGION_FIELDS)):
                    row = dict(zip(REGION_FIELDS, vals))
                    rows_by_patch[int(row["patch"])] = row
                    order.append(int(row["patch"]))
                parts.append(np.asarray(batch["vector"], dtype=np.float32).reshape(-1, info.dim))
            if len(rows_by_patch) != expected:
                return False  # not what the index holds: keep no receipt, the store answers
            flat = np.concatenate(parts) if parts else np.zeros((0, info.dim), np.float32)
            rank = np.argsort(np.asarray(order, dtype=np.int64), kind="stable")
            vectors = flat[rank]
            rows = [rows_by_patch[p] for p in sorted(rows_by_patch)]
        write_receipt(folder, info.model_dump(), stats.mean, stats.cov, stats.n,
                      {table.name: versions[table.name], INDEX_TABLE: versions[INDEX_TABLE]}, table.name,
                      vectors=vectors, rows=rows)
        return True

    def _backfill(self, row: dict[str, Any]) -> None:
        """Write the missing receipt of a complete index found in the store (one written before receipts
        existed): versions first, then the record again, then its data."""
        try:
            versions = self._current_versions(patch_table_name(str(row["encoder"])))
            again = self._row(str(row["key"]))
            if again is None or again.get("status") != "complete" or again.get("updated") != row.get("updated"):
                return
            info = IndexInfo(**{k: again[k] for k in IndexInfo.model_fields})
            self._write_receipt(info, self.stats(info), versions)
        except (StoreError, OSError, ValueError):  # the store answers; a receipt is only a shortcut
            return

    def _receipt_for(self, info: IndexInfo, *, vectors: bool = False) -> ReceiptFiles | None:
        """The valid receipt of ``info`` when it describes this very record (same ``updated``)."""
        found = self._receipt(info.key, vectors=vectors)
        if found is None or found.receipt.info.get("updated") != info.updated:
            return None
        if vectors and (found.vectors is None or found.rows is None):
            return None
        return found

    def has_receipt(self, info: IndexInfo) -> bool:
        """Whether ``info`` can be read from a valid receipt (no database opened)."""
        return self._receipt_for(info) is not None

    def save_receipt(self, info: IndexInfo) -> bool:
        """Write a receipt of index ``info`` as the store holds it now, also for an index still being built
        (a pyramid level filled on demand: its stored windows, provisional statistics and record), so the
        next process reads it without the database. Call it holding the index's lock, after the writes.

        Returns:
            Whether a receipt was written (not for an index without statistics, or with more than
            :data:`PARTIAL_RECEIPT_MAX` patches stored, or when the store does not hold ``info`` as given).
        """
        if self._receipts_dir is None:
            return False
        try:
            versions = self._current_versions(patch_table_name(info.encoder))  # first: then the record and rows
            row = self._row(info.key)
            if row is None or row.get("updated") != info.updated or row.get("stats_mean") is None:
                return False
            record = IndexInfo(**{k: row[k] for k in IndexInfo.model_fields})
            return self._write_receipt(record, self.stats(record), versions)
        except (StoreError, OSError, ValueError):  # the store answers; a receipt is only a shortcut
            return False

    def _drop_receipt(self, key: str) -> None:
        if self._receipts_dir is not None:
            from rsrag.tools.store.receipts import remove_receipt

            remove_receipt(self._receipts_dir, key)

    def table_version(self, encoder: str, dim: int) -> tuple[str, int | None]:
        """Name and current version of the patch table of encoder ``encoder`` (``None``: no such table); read
        from the store folder without opening the database where the backend allows."""
        name = patch_table_name(encoder)
        local = self.store.local_versions([name])
        if local is not None:
            return name, local.get(name)
        table = self.store.open_table(patch_schema(encoder, dim))
        return name, None if table is None else table.version()

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
        """The record of index ``key``, or ``None`` (a complete index's from its receipt when valid)."""
        found = self._receipt(key)
        if found is not None:
            return IndexInfo(**found.receipt.info)
        row = self._row(key)
        if row is None:
            return None
        if row.get("status") == "complete" and self._receipts_dir is not None:
            from rsrag.tools.store.receipts import read_receipt

            if read_receipt(self._receipts_dir, key) is None:
                self._backfill(row)
        return IndexInfo(**{k: row[k] for k in IndexInfo.model_fields})

    def find(self, scene: str | None = None, encoder: str | None = None, tiling: str | None = None,
             complete_only: bool = True) -> list[IndexInfo]:
        """Indexes matching the given scene fingerprint, encoder id and tiling id (most recent first).

        With all three given (one key) a complete index is read from its receipt when valid."""
        if scene is not None and encoder is not None and tiling is not None:  # one key: at most one index
            info = self.info(index_key(scene, tiling, encoder))
            return [] if info is None or (complete_only and not info.complete) else [info]
        return self._find_in_store(scene, encoder, tiling, complete_only)

    def _find_in_store(self, scene: str | None = None, encoder: str | None = None, tiling: str | None = None,
                       complete_only: bool = True) -> list[IndexInfo]:
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
        self._drop_receipt(info.key)  # before the record or rows change
        row = self._row(info.key)
        existing = IndexInfo(**{k: row[k] for k in IndexInfo.model_fields}) if row else None
        if existing is not None and (existing.n_patches, existing.chunk_size) != (info.n_patches, info.chunk_size):
            # Same scene, tiling and encoder but a different chunking: start the index again.
            self.patch_table(info).delete({"index_key": info.key})
        record = info.model_copy(update={"status": "building", "updated": time.time()})
        self._write_info(record, stats=None)
        return record

    def _write_info(self, info: IndexInfo, stats: SceneStats | None) -> int:
        if not info.complete:
            self._drop_receipt(info.key)
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
        found = self._receipt_for(info)
        if found is not None:
            d = info.dim
            mean = found.stats[0].astype(np.float64)
            cov = found.stats[1:].astype(np.float64).reshape(d, d)
            stats = SceneStats(n=found.receipt.stats_n, mean=mean, cov=cov)
            if len(self._stats) > 64:
                self._stats.clear()
            self._stats[(info.key, info.updated)] = stats
            return stats
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

    def vectors(self, info: IndexInfo, patches: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of patches ``patches`` of an index, by patch number (those stored); from the
        receipt of a complete index when valid."""
        wanted = sorted({int(p) for p in patches})
        found = self._receipt_for(info, vectors=True) if wanted else None
        if found is not None and found.vectors is not None and found.rows is not None:
            ids = np.asarray(found.rows["patch"])
            at = np.searchsorted(ids, wanted)
            return {p: np.array(found.vectors[i], dtype=np.float32) for p, i in zip(wanted, at)
                    if i < len(ids) and ids[i] == p}
        table = self.store.open_table(patch_schema(info.encoder, info.dim))
        out: dict[int, np.ndarray] = {}
        if table is None or not wanted:
            return out
        for batch in table.scan(where={"index_key": info.key, "patch": wanted}, fields=["patch", "vector"]):
            vecs = np.asarray(batch["vector"], dtype=np.float32).reshape(-1, info.dim)
            out.update((int(p), v) for p, v in zip(batch["patch"], vecs))
        return out

    def stored_patches(self, info: IndexInfo, patches: Sequence[int] | None = None) -> set[int]:
        """Patch numbers stored for an index (among ``patches``, when given); from its receipt when valid."""
        found = self._receipt_for(info, vectors=True)
        if found is not None and found.rows is not None:
            have = {int(p) for p in found.rows["patch"]}
            return have if patches is None else have & {int(p) for p in patches}
        table = self.store.open_table(patch_schema(info.encoder, info.dim))
        if table is None:
            return set()
        where: dict[str, Any] = {"index_key": info.key}
        if patches is not None:
            where["patch"] = sorted({int(p) for p in patches})
        out: set[int] = set()
        for batch in table.scan(where=where, fields=["patch"]):
            out.update(int(p) for p in batch["patch"])
        return out

    def patch_rows(self, info: IndexInfo, patches: Sequence[int]) -> list[tuple[dict[str, Any], np.ndarray]]:
        """The stored rows (``REGION_FIELDS``) and vectors of patches ``patches`` of an index, in patch order;
        from its receipt when valid."""
        wanted = sorted({int(p) for p in patches})
        found = self._receipt_for(info, vectors=True) if wanted else None
        if found is not None and found.vectors is not None and found.rows is not None:
            ids = np.asarray(found.rows["patch"])
            at = np.searchsorted(ids, wanted)
            return [(_receipt_row(found, info, int(i)), np.array(found.vectors[i], dtype=np.float32))
                    for p, i in zip(wanted, at) if i < len(ids) and ids[i] == p]
        table = self.store.open_table(patch_schema(info.encoder, info.dim))
        out: list[tuple[dict[str, Any], np.ndarray]] = []
        if table is None or not wanted:
            return out
        for batch in table.scan(where={"index_key": info.key, "patch": wanted}, fields=[*REGION_FIELDS, "vector"]):
            vecs = np.asarray(batch["vector"], dtype=np.float32).reshape(-1, info.dim)
            for j, vals in enumerate(zip(*(batch[f] for f in REGION_FIELDS))):
                out.append((dict(zip(REGION_FIELDS, vals)), vecs[j]))
        return sorted(out, key=lambda rv: int(rv[0]["patch"]))

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
        found = self._receipt_for(info)
        if found is not None:
            return found.receipt.stored
        return self._store_count(info)

    def _store_count(self, info: IndexInfo) -> int:
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
        # under the index's lock nothing else writes this index: versions read now describe `done`
        try:
            if self._write_receipt(done, stats, self._current_versions(table.name)):
                self._refresh_scene(done)
        except (StoreError, OSError, ValueError):  # no receipt (a read-only or full disk...): searches read the store
            self._drop_receipt(done.key)
        return done

    def _refresh_scene(self, done: IndexInfo) -> None:
        """Completing an index moved both tables: re-stamp the receipts of the scene's other indexes (the
        other levels of its pyramid), so the next search of the scene reads no database."""
        folder = self._receipts_dir
        if folder is None:
            return
        from rsrag.tools.store.receipts import read_receipt, receipt_keys

        others = [k for k in receipt_keys(folder) if k != done.key
                  and (r := read_receipt(folder, k)) is not None and r.info.get("scene") == done.scene]
        self.refresh_receipts(others)

    def search(self, info: IndexInfo, query: np.ndarray, k: int, exact: bool | None = None) -> SearchResult:
        """Top-``k`` patches of one index for a unit query vector (exhaustive for small indexes).

        A complete index searched exhaustively is searched in its receipt's vectors when the receipt is
        valid (the same rows, scores and table version as the store's exact search)."""
        use_exact = (info.n_patches < EXACT_SEARCH_MAX or not info.complete) if exact is None else exact
        if use_exact:
            found = self._receipt_for(info, vectors=True)
            if found is not None:
                return _receipt_search(found, info, query, k)
        table = self.store.open_table(patch_schema(info.encoder, info.dim))
        if table is None:
            raise StoreError(f"patch table for encoder {info.encoder} is missing from store {self.store.location}")
        # An index still being built (a pyramid level filled on demand) is searched exhaustively: its rows
        # are few, and an ANN index of the shared table would not hold all of them.
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


def _receipt_search(found: ReceiptFiles, info: IndexInfo, query: np.ndarray, k: int) -> SearchResult:
    """Exact cosine top-``k`` over a receipt's vectors, as the store's exact search computes it (float32
    distance ``1 - cos``, best first; equal scores in patch order)."""
    assert found.vectors is not None and found.rows is not None
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if q.shape[0] != info.dim:
        raise StoreError(f"query vector has {q.shape[0]} dimensions, index {info.key} holds {info.dim}")
    dots = np.asarray(found.vectors, dtype=np.float32) @ q
    denom = found.norms() * np.float32(np.linalg.norm(q))
    cos = dots / np.maximum(denom, np.float32(1e-30))
    dist = (np.float32(1.0) - cos).astype(np.float32)
    n = len(dist)
    k = max(0, min(int(k), n))
    if k < n:
        part = np.argpartition(dist, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
        # ties at the cut: take the lowest patch ids among equal distances, as a full sort would
        cut = dist[part].max() if k > 0 else 0.0
        pool = np.flatnonzero(dist <= cut) if k > 0 else part
    else:
        pool = np.arange(n)
    order = pool[np.lexsort((pool, dist[pool]))][:k]
    rows = [_receipt_row(found, info, int(i)) for i in order]
    version = found.receipt.versions[found.receipt.patch_table]
    return SearchResult(table=found.receipt.patch_table, version=version, rows=rows,
                        scores=[float(1.0 - float(dist[i])) for i in order], exact=True, extra={"from": "receipt"})


def _receipt_row(found: ReceiptFiles, info: IndexInfo, i: int) -> dict[str, Any]:
    """Row ``i`` of a receipt as the store returns it (``REGION_FIELDS``, Python values)."""
    assert found.rows is not None
    r = found.rows[i]
    code = int(r["crs"])
    has_map = code >= 0
    return {
        "patch": int(r["patch"]), "scene": info.scene, "scale": int(r["scale"]),
        "x0": int(r["x0"]), "y0": int(r["y0"]), "x1": int(r["x1"]), "y1": int(r["y1"]),
        "map_crs": found.receipt.crs[code] if has_map else None,
        "map_left": float(r["map_left"]) if has_map else None, "map_bottom": float(r["map_bottom"]) if has_map else None,
        "map_right": float(r["map_right"]) if has_map else None, "map_top": float(r["map_top"]) if has_map else None,
    }
