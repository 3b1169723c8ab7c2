"""The knowledge base: entries with text and image vectors plus BM25, on any store backend.

One class serves both uses of the issue: RS-RAG world/domain knowledge (``kind="knowledge"``) and the slow
path's visual concept library (``kind="concept"``). Vectors of different encoders are not comparable, so a
knowledge base's tables are per (name, encoder id).

Writes are idempotent: an entry whose content hash (all fields plus its images' SHA-1) is already stored
is skipped without encoding; a changed one replaces the old. Each batch writes the image rows first and the
entry rows last, so an entry row (with its hash) exists only once its images are stored; a killed run is
completed by running it again.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.errors import DataError, QueryError
from rsrag.tools.knowledge.entry import EntryKind, KnowledgeEntry
from rsrag.tools.knowledge.schema import entry_schema, image_schema
from rsrag.tools.store import Range, Store, StoreTable, open_store

if TYPE_CHECKING:
    from PIL import Image

    from rsrag.tools.encoders.base import Encoder, ImageLike

ANN_MIN_ROWS = 50_000
"""Entries tables with at least this many rows get an approximate (IVF-PQ, exactly re-ranked) vector index."""
Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after every batch of entries."""


class AddReport(BaseModel):
    """What :meth:`KnowledgeBase.add` did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    images: int = 0
    version: int = -1


class KnowledgeHit(BaseModel):
    """One retrieved entry with its scores (``scores``: the parts that made ``score``)."""

    model_config = ConfigDict(frozen=True)

    entry: KnowledgeEntry
    score: float
    scores: dict[str, float] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.entry.id


class KnowledgeResult(BaseModel):
    """Entries found by one :meth:`KnowledgeBase.search`, with what produced them."""

    hits: list[KnowledgeHit]
    mode: str
    table: str
    version: int
    encoder: str


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def load_rgb(path: str, size: int | None = None) -> Image.Image:
    """Open an image file as RGB (JPEG draft mode when a target size is given)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if size and im.format == "JPEG":
                im.draft("RGB", (2 * size, 2 * size))
            return im.convert("RGB")
    except (FileNotFoundError, IsADirectoryError):
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from None


class KnowledgeBase:
    """Knowledge entries in a store, searchable by text (BM25 + vector), by image, or both.

    Args:
        store: a :class:`Store`, an embedded store's folder, or ``None`` for the default embedded store.
        encoder: the image/text encoder (its id names the tables).
        name: the knowledge base's name (several can share a store).
    """

    def __init__(self, store: Store | str | os.PathLike[str] | None, encoder: Encoder, name: str = "default") -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        self.encoder = encoder
        self.name = name
        self.entry_schema = entry_schema(name, encoder.id, encoder.dim)
        self.image_schema = image_schema(name, encoder.id, encoder.dim)

    # --- tables ----------------------------------------------------------------------------------------

    def entries_table(self, create: bool = False) -> StoreTable | None:
        """The entries table (created when ``create``; else ``None`` while it does not exist)."""
        return self.store.table(self.entry_schema) if create else self.store.open_table(self.entry_schema)

    def images_table(self, create: bool = False) -> StoreTable | None:
        """The per-image table (created when ``create``; else ``None`` while it does not exist)."""
        return self.store.table(self.image_schema) if create else self.store.open_table(self.image_schema)

    # --- writing ---------------------------------------------------------------------------------------

    def _stored_hashes(self, table: StoreTable, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for batch in table.scan(where={"id": ids}, fields=["id", "content_hash"]):
            out.update(zip(batch["id"], batch["content_hash"]))
        return out

    def _encode_images(self, paths: Sequence[str], batch: int) -> np.ndarray:
        vecs = [np.zeros((0, self.encoder.dim), np.float32)]
        for i in range(0, len(paths), batch):
            ims = [load_rgb(p, self.encoder.image_size) for p in paths[i:i + batch]]
            vecs.append(np.asarray(self.encoder.encode_images(ims), dtype=np.float32))
        return np.concatenate(vecs)

    def add(self, entries: Iterable[KnowledgeEntry], *, batch_entries: int = 64, image_batch: int = 64,
            total: int | None = None, progress: Progress | None = None) -> AddReport:
        """Add or update entries (idempotent; see the module docs).

        Raises:
            StoreError: the store cannot be written.
        """
        entries_t = self.entries_table(create=True)
        images_t = self.images_table(create=True)
        assert entries_t is not None and images_t is not None
        report = AddReport()
        done = 0
        pending: list[KnowledgeEntry] = []

        def flush() -> None:
            nonlocal done
            batch = list({e.id: e for e in pending}.values())
            pending.clear()
            stored = self._stored_hashes(entries_t, [e.id for e in batch])
            todo = [e for e in batch if stored.get(e.id) != e.content_hash()]
            report.unchanged += len(batch) - len(todo)
            if todo:
                self._write(entries_t, images_t, todo, {e.id for e in todo if e.id in stored}, image_batch, report)
                report.updated += sum(e.id in stored for e in todo)
                report.added += sum(e.id not in stored for e in todo)
            done += len(batch)
            if progress is not None:
                progress(done, total if total is not None else done)

        for entry in entries:
            pending.append(entry)
            if len(pending) >= batch_entries:
                flush()
        if pending:
            flush()
        if report.added or report.updated:
            self.maintain()
        report.version = entries_t.version()
        return report

    def maintain(self, ann_min_rows: int = ANN_MIN_ROWS) -> None:
        """Build the indexes searches use, where the backend has separate index steps (idempotent):
        BM25 on the text, a scalar index on ids (entry look-ups), and ANN indexes on the vectors once the
        table has ``ann_min_rows`` entries. Called by :meth:`add`."""
        entries_t, images_t = self.entries_table(), self.images_table()
        for table, key in ((entries_t, "id"), (images_t, "entry_id")):
            if table is None:
                continue
            for name, args in (("ensure_text_index", ()), ("ensure_scalar_index", (key,))):
                fn = getattr(table, name, None)
                if callable(fn) and (name != "ensure_text_index" or table.schema.text_fields):
                    fn(*args)
        if entries_t is not None:
            for v in entries_t.schema.vectors:
                entries_t.ensure_vector_index(v.name, min_rows=ann_min_rows)

    def _write(self, entries_t: StoreTable, images_t: StoreTable, todo: list[KnowledgeEntry], replaced: set[str],
               image_batch: int, report: AddReport) -> None:
        text_vecs = _unit(self.encoder.encode_texts([e.embed_text() for e in todo]))
        paths = [im.path for e in todo for im in e.images]
        img_vecs = self._encode_images(paths, image_batch)
        if replaced:
            images_t.delete({"entry_id": sorted(replaced)})
        if paths:
            owners = [(e, i, im) for e in todo for i, im in enumerate(e.images)]
            images_t.upsert({
                "id": [f"{e.id}#{i}" for e, i, _ in owners], "entry_id": [e.id for e, _, _ in owners],
                "kind": [e.kind for e, _, _ in owners], "category": [e.category for e, _, _ in owners],
                "path": [im.path for _, _, im in owners], "sha1": [im.sha1 for _, _, im in owners], "image": img_vecs,
            })
            report.images += len(paths)
        entry_img = text_vecs.copy()
        start = 0
        for j, e in enumerate(todo):
            if e.images:
                entry_img[j] = _unit(img_vecs[start:start + len(e.images)].mean(axis=0))
                start += len(e.images)
        entries_t.upsert({
            "id": [e.id for e in todo], "kind": [e.kind for e in todo], "name": [e.name for e in todo],
            "category": [e.category for e in todo], "search_text": [e.search_text() for e in todo],
            "entry_json": [e.model_dump_json() for e in todo], "content_hash": [e.content_hash() for e in todo],
            "n_images": [len(e.images) for e in todo], "has_image": [bool(e.images) for e in todo],
            "lon": [e.location.lon if e.location else None for e in todo],
            "lat": [e.location.lat if e.location else None for e in todo],
            "source": [e.source for e in todo], "licence": [e.licence for e in todo],
            "text": text_vecs, "image": entry_img,
        })

    def remove(self, ids: Sequence[str]) -> int:
        """Delete entries and their images; returns the number of entries removed."""
        entries_t, images_t = self.entries_table(), self.images_table()
        if entries_t is None or not ids:
            return 0
        n = entries_t.count({"id": list(ids)})
        if images_t is not None:
            images_t.delete({"entry_id": list(ids)})
        entries_t.delete({"id": list(ids)})
        return n

    # --- reading ---------------------------------------------------------------------------------------

    def count(self, kind: EntryKind | None = None) -> int:
        """Number of entries (of one kind, when given)."""
        table = self.entries_table()
        return 0 if table is None else table.count({"kind": kind} if kind else None)

    def get(self, ids: Sequence[str]) -> list[KnowledgeEntry]:
        """The stored entries with these ids (in the given order; missing ids are left out)."""
        table = self.entries_table()
        if table is None or not ids:
            return []
        found: dict[str, KnowledgeEntry] = {}
        for batch in table.scan(where={"id": list(ids)}, fields=["id", "entry_json"]):
            for rid, js in zip(batch["id"], batch["entry_json"]):
                found[rid] = KnowledgeEntry.model_validate_json(js)
        return [found[i] for i in ids if i in found]

    def image_vectors(self, entry_id: str) -> np.ndarray:
        """The image vectors of one entry's images, shape ``(n, dim)`` (``n`` may be 0)."""
        table = self.images_table()
        if table is None:
            return np.zeros((0, self.encoder.dim), np.float32)
        parts = [b["image"] for b in table.scan(where={"entry_id": entry_id}, fields=["image"])]
        return np.concatenate(parts) if parts else np.zeros((0, self.encoder.dim), np.float32)

    def entry_vectors(self, ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
        """``id -> (text vector, image vector, has_image)`` for the given entries."""
        table = self.entries_table()
        out: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
        if table is None or not ids:
            return out
        for b in table.scan(where={"id": list(ids)}, fields=["id", "text", "image", "has_image"]):
            for j, rid in enumerate(b["id"]):
                out[rid] = (b["text"][j], b["image"][j], bool(b["has_image"][j]))
        return out

    def stats(self) -> dict[str, Any]:
        """Counts by kind and category, images, tables, version and encoder."""
        entries_t, images_t = self.entries_table(), self.images_table()
        kinds: Counter[str] = Counter()
        cats: Counter[str] = Counter()
        located = 0
        if entries_t is not None:
            for b in entries_t.scan(fields=["kind", "category", "lon"]):
                kinds.update(b["kind"])
                cats.update(b["category"])
                located += sum(v is not None for v in b["lon"])
        return {
            "name": self.name, "store": self.store.location, "encoder": self.encoder.id,
            "entries": sum(kinds.values()), "by_kind": dict(kinds), "categories": dict(cats.most_common()),
            "located": located, "images": images_t.count() if images_t is not None else 0,
            "table": self.entry_schema.name, "version": entries_t.version() if entries_t is not None else None,
        }

    def where(self, kind: EntryKind | None = None, category: str | Sequence[str] | None = None,
              bbox: tuple[float, float, float, float] | None = None) -> dict[str, Any]:
        """A store filter: entry kind, category (one or several), lon/lat box ``(west, south, east, north)``."""
        where: dict[str, Any] = {}
        if kind:
            where["kind"] = kind
        if category:
            where["category"] = category if isinstance(category, str) else list(category)
        if bbox is not None:
            west, south, east, north = bbox
            if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
                raise QueryError(f"location box {bbox} is not (west, south, east, north) in degrees with west <= east, south <= north")
            where["lon"], where["lat"] = Range(west, east), Range(south, north)
        return where

    def search(self, text: str | None = None, image: ImageLike | str | None = None, *, k: int = 10,
               alpha: float = 0.5, image_weight: float = 0.5, kind: EntryKind | None = None,
               category: str | Sequence[str] | None = None,
               bbox: tuple[float, float, float, float] | None = None) -> KnowledgeResult:
        """Search entries by text, by image, or both.

        * text only: hybrid BM25 + text-vector search, ``alpha`` = vector weight (0 = BM25 only, 1 = vector only).
        * image only: image-vector search over entries that have images.
        * both: candidates of both searches re-ranked by RS-RAG's
          ``image_weight * cos(image, entry image) + (1 - image_weight) * cos(text, entry text)``.

        Raises:
            QueryError: neither text nor image, or a bad filter.
        """
        from rsrag.tools.rerank import rsrag_scores

        text = (text or "").strip() or None
        if text is None and image is None:
            raise QueryError("give a text or an image (or both) to search the knowledge base")
        if k <= 0:
            raise QueryError(f"k must be positive, got {k}")
        where = self.where(kind, category, bbox)
        pic = load_rgb(image, self.encoder.image_size) if isinstance(image, str) else image
        table = self.entries_table()
        if table is None:
            return KnowledgeResult(hits=[], mode="empty", table=self.entry_schema.name, version=-1, encoder=self.encoder.id)
        tvec = _unit(self.encoder.encode_texts([text])[0]) if text else None
        ivec = None
        if pic is not None:
            ivec = _unit(self.encoder.encode_images([pic])[0])
        if ivec is None:
            assert text is not None and tvec is not None
            res = table.hybrid_search(text, "text", tvec, k, alpha=alpha, where=where, fields=["id", "entry_json"])
            raw = res.extra.get("raw", [{}] * len(res.rows))
            hits = [KnowledgeHit(entry=KnowledgeEntry.model_validate_json(r["entry_json"]), score=s,
                                 scores={"vector": d.get("part0", 0.0), "bm25": d.get("part1", 0.0)})
                    for r, s, d in zip(res.rows, res.scores, raw)]
            return KnowledgeResult(hits=hits, mode="text", table=table.name, version=res.version, encoder=self.encoder.id)
        img_where = {**where, "has_image": True}
        pool = max(4 * k, 50)
        cands = table.search("image", ivec, pool, where=img_where, fields=["id"])
        ids = [r["id"] for r in cands.rows]
        mode = "image"
        if tvec is not None:
            assert text is not None
            mode = "image+text"
            tres = table.hybrid_search(text, "text", tvec, pool, alpha=alpha, where=where, fields=["id"])
            ids = list(dict.fromkeys(ids + [r["id"] for r in tres.rows]))
        vecs = self.entry_vectors(ids)
        ids = [i for i in ids if i in vecs]
        img_sim = np.array([float(vecs[i][1] @ ivec) if vecs[i][2] else 0.0 for i in ids])
        txt_sim = np.array([float(vecs[i][0] @ tvec) for i in ids]) if tvec is not None else np.zeros(len(ids))
        weight = image_weight if tvec is not None else 1.0
        score = rsrag_scores(img_sim, txt_sim, weight)
        order = np.argsort(-score, kind="stable")[:k]
        chosen = [ids[j] for j in order]
        entries = {e.id: e for e in self.get(chosen)}
        hits = [KnowledgeHit(entry=entries[ids[j]], score=float(score[j]),
                             scores={"image": float(img_sim[j]), "text": float(txt_sim[j])})
                for j in order if ids[j] in entries]
        return KnowledgeResult(hits=hits, mode=mode, table=table.name, version=cands.version, encoder=self.encoder.id)
