"""Receipts of patch indexes: what a no-op ``rsrag index`` and a search of an indexed scene read instead of
opening the database.

Opening the embedded store (importing lancedb and pyarrow) costs seconds, more than answering a question
about an indexed scene. So when :meth:`PatchStore.finish <rsrag.tools.store.patches.PatchStore.finish>`
completes an index (a flat tiling or one pyramid level), and when a search has encoded the windows it
needed of a pyramid level still being filled (:meth:`PatchStore.save_receipt
<rsrag.tools.store.patches.PatchStore.save_receipt>`, e.g. the finer level a refinement reads), the patch
store writes into ``receipts/`` of the store folder:

* ``KEY.json``: the index record (:class:`~rsrag.tools.store.patches.IndexInfo`), how many patches were
  stored, the versions of the patch table and of the index table it was read at, and the names of the
  files below;
* ``KEY-TOKEN.stats.npy``: the scene statistics (mean row, then the covariance), float32 as stored;
* for indexes searched exhaustively (fewer than ``EXACT_SEARCH_MAX`` patches), ``KEY-TOKEN.vectors.npy``
  (float32 ``(n, dim)``, memory-mapped when read) and ``KEY-TOKEN.rows.npy`` (each patch's id, scale, pixel
  box and map box) of every stored patch, in patch order.

The store stays the source of truth: a receipt is used only while both tables are at exactly the versions
it names, read from the store folder without opening the database (:meth:`Store.local_versions
<rsrag.tools.store.base.Store.local_versions>`); any later write, by any process, sends readers back to the
store. After such a write rsrag re-stamps a receipt (:func:`restamp`: when a reader found it stale, and
for the other levels of a scene when one completes) only after checking the store: the index's record
unchanged and as many rows stored as the receipt holds. rsrag adds rows only under the index's lock and
never rewrites stored rows without first re-recording the index (``begin``, which removes the receipt); a
program that rewrote stored vectors in place, keeping their count, would go unnoticed at the next re-stamp.
Files are written atomically (temporary file, then rename), the JSON last, so a reader sees a whole receipt
or none.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = [
    "FORMAT", "ROW_DTYPE", "Receipt", "ReceiptFiles", "drop_table_receipts", "load_receipt", "read_receipt", "receipt_keys", "remove_receipt", "restamp",
    "write_receipt",
]

FORMAT = "rsrag-receipt/2"
ROW_DTYPE = np.dtype([
    ("patch", "<i8"), ("scale", "<i8"), ("x0", "<i8"), ("y0", "<i8"), ("x1", "<i8"), ("y1", "<i8"),
    ("crs", "<i4"), ("map_left", "<f8"), ("map_bottom", "<f8"), ("map_right", "<f8"), ("map_top", "<f8"),
])
"""One patch of a receipt's ``rows.npy``: ``crs`` indexes :attr:`Receipt.crs` (-1: no map box)."""


class Receipt(BaseModel):
    """The JSON part of a receipt (small values only)."""

    model_config = ConfigDict(frozen=True)

    format: str = FORMAT
    info: dict[str, Any]
    """The complete index's record (the fields of :class:`~rsrag.tools.store.patches.IndexInfo`)."""
    stats_n: int
    patch_table: str
    versions: dict[str, int]
    """Table name -> the version the receipt was read at (the patch table and the index table)."""
    token: str
    """Names this receipt's files (a receipt written again gets new files, never rewrites old ones)."""
    vectors: bool
    """Whether the patch vectors and regions are in the receipt (exhaustively searched indexes only)."""
    stored: int
    """Patches the store held for the index at those versions (all of them for a complete index; the
    windows encoded so far for a pyramid level still being filled)."""
    crs: list[str] = []


class ReceiptFiles:
    """A valid receipt with its arrays loaded (vectors memory-mapped)."""

    def __init__(self, receipt: Receipt, stats: np.ndarray, vectors: np.ndarray | None, rows: np.ndarray | None) -> None:
        self.receipt = receipt
        self.stats = stats
        self.vectors = vectors
        self.rows = rows
        self._norms: np.ndarray | None = None

    def norms(self) -> np.ndarray:
        """Row norms of the vectors (cosine scores divide by them, as the store's search does)."""
        if self._norms is None:
            assert self.vectors is not None
            self._norms = np.linalg.norm(np.asarray(self.vectors, dtype=np.float32), axis=1)
        return self._norms


def _json_path(folder: Path, key: str) -> Path:
    return folder / f"{key}.json"


def _files(folder: Path, key: str, token: str) -> dict[str, Path]:
    return {part: folder / f"{key}-{token}.{part}.npy" for part in ("stats", "vectors", "rows")}


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def write_receipt(folder: Path, info: dict[str, Any], stats_mean: np.ndarray, stats_cov: np.ndarray, stats_n: int,
                  versions: dict[str, int], patch_table: str, vectors: np.ndarray | None = None,
                  rows: list[dict[str, Any]] | None = None) -> Receipt:
    """Write the receipt of index ``info`` (atomically; replaces an older one).

    Args:
        folder: the store's receipt folder (created when missing).
        info: the index record.
        stats_mean / stats_cov / stats_n: its statistics, as the store holds them.
        versions: table name -> version the receipt describes.
        patch_table: the index's patch table.
        vectors / rows: the index's vectors and their stored rows (``REGION_FIELDS``), in patch order (every
            patch stored so far); leave out for a complete index searched approximately.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = str(info["key"])
    token = uuid.uuid4().hex[:12]
    paths = _files(folder, key, token)
    dim = int(info["dim"])
    _atomic_npy(paths["stats"], np.vstack([np.asarray(stats_mean, np.float32).reshape(1, dim),
                                           np.asarray(stats_cov, np.float32).reshape(dim, dim)]))
    crs: list[str] = []
    if vectors is not None and rows is not None:
        table = np.zeros(len(rows), dtype=ROW_DTYPE)
        for i, row in enumerate(rows):
            code = -1
            if row.get("map_crs") is not None:
                if row["map_crs"] not in crs:
                    crs.append(row["map_crs"])
                code = crs.index(row["map_crs"])
            table[i] = (row["patch"], row["scale"], row["x0"], row["y0"], row["x1"], row["y1"], code,
                        *(float(row[f]) if code >= 0 else np.nan for f in ("map_left", "map_bottom", "map_right", "map_top")))
        _atomic_npy(paths["vectors"], np.ascontiguousarray(vectors, dtype=np.float32))
        _atomic_npy(paths["rows"], table)
    stored = len(rows) if rows is not None else int(info["n_patches"])
    receipt = Receipt(info=info, stats_n=int(stats_n), patch_table=patch_table, versions=dict(versions), token=token,
                      vectors=vectors is not None and rows is not None, crs=crs, stored=stored)
    old = read_receipt(folder, key)
    path = _json_path(folder, key)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(receipt.model_dump_json(), encoding="utf-8")
    os.replace(tmp, path)
    if old is not None and old.token != token:
        _remove_files(folder, key, old.token)
    return receipt


def read_receipt(folder: Path, key: str) -> Receipt | None:
    """The JSON part of index ``key``'s receipt (not checked against the store), or ``None``."""
    try:
        data = json.loads(_json_path(folder, key).read_text(encoding="utf-8"))
        receipt = Receipt(**data)
    except (OSError, ValueError, TypeError):
        return None
    return receipt if receipt.format == FORMAT and receipt.info.get("key") == key else None


def _remove_files(folder: Path, key: str, token: str | None) -> None:
    """Remove the files of one receipt (``token``), or every file of index ``key`` (``None``)."""
    paths = _files(folder, key, token).values() if token is not None else folder.glob(f"{key}-*.npy")
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_receipt(folder: Path | None, key: str) -> None:
    """Remove the receipt of index ``key`` (before its record or rows change); no error when there is none."""
    if folder is None:
        return
    with contextlib.suppress(OSError):
        _json_path(folder, key).unlink()
    _remove_files(folder, key, None)


def load_receipt(folder: Path | None, key: str, current: dict[str, int] | None, *, vectors: bool = False) -> ReceiptFiles | None:
    """The receipt of index ``key`` when it is valid at the tables' ``current`` versions; else ``None``.

    Args:
        folder: the receipt folder (``None``: the store keeps none).
        key: the index key.
        current: table name -> current version (``None`` when unknown: no receipt is trusted).
        vectors: also load the vectors and rows (``None`` when the receipt has none).
    """
    if folder is None or current is None:
        return None
    receipt = read_receipt(folder, key)
    if receipt is None or any(current.get(t) != v for t, v in receipt.versions.items()):
        return None
    paths = _files(folder, key, receipt.token)
    dim, n = int(receipt.info["dim"]), receipt.stored
    try:
        stats = np.load(paths["stats"], allow_pickle=False)
        vecs = rows = None
        if vectors and receipt.vectors:
            vecs = np.load(paths["vectors"], mmap_mode="r", allow_pickle=False)
            rows = np.load(paths["rows"], allow_pickle=False)
    except (OSError, ValueError):
        return None
    if stats.shape != (dim + 1, dim):
        return None
    if vecs is not None and (vecs.shape != (n, dim) or rows is None or rows.shape != (n,) or rows.dtype != ROW_DTYPE):
        return None
    return ReceiptFiles(receipt, stats, vecs, rows)


def drop_table_receipts(folder: Path | None, table: str) -> None:
    """Remove the receipts that name table ``table`` (it was dropped)."""
    for key in receipt_keys(folder):
        assert folder is not None
        receipt = read_receipt(folder, key)
        if receipt is None or table in receipt.versions:
            remove_receipt(folder, key)


def receipt_keys(folder: Path | None) -> list[str]:
    """Keys of the indexes with a receipt in ``folder``."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if not p.name.startswith("."))


def restamp(folder: Path | None, key: str, versions: dict[str, int], record: dict[str, Any] | None,
            stored: int | None) -> bool:
    """Move the receipt of index ``key`` to the tables' current ``versions`` if the store still holds the
    index as the receipt describes it: its record unchanged and ``stored`` rows (its patch count).

    Args:
        folder: the receipt folder.
        key: the index.
        versions: table name -> current version, read *before* ``record`` and ``stored`` (a write in between
            then leaves the new stamp stale, never wrong).
        record: the index's record in the store now (``None``: gone).
        stored: rows the store holds for the index now.

    Returns:
        Whether the receipt is valid at ``versions`` now. A receipt whose index is gone, re-recorded or
        short of rows is removed (readers use the store).
    """
    receipt = read_receipt(folder, key) if folder is not None else None
    if folder is None or receipt is None:
        return False
    if set(versions) != set(receipt.versions):
        return False
    if (record is None or any(record.get(f) != v for f, v in receipt.info.items())
            or stored != receipt.stored):
        remove_receipt(folder, key)
        return False
    if versions != receipt.versions:
        stamped = receipt.model_copy(update={"versions": dict(versions)})
        path = _json_path(folder, key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(stamped.model_dump_json(), encoding="utf-8")
        os.replace(tmp, path)
    return True
