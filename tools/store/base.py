"""The store interface: tables of records with named vectors, scalar fields and simple filters.

Every backend (the embedded LanceDB store, the Weaviate scale-out store) implements :class:`Store` and
:class:`StoreTable`; the patch index (:mod:`rsrag.tools.store.patches`) and the knowledge base are written
against these two classes only.

Data moves in *columns*: a mapping from field name to a sequence of values (vectors as a 2-D float32
array of shape ``(rows, dim)``). Every write is atomic: after it returns, all of its rows are visible, and
if the process dies during a write none of them are. Tables are versioned: every write produces a new
version number and every :class:`SearchResult` names the version it read.

Filters (:data:`Where`) are a conjunction of per-field conditions, so that every backend can translate
them: ``{"scene": "abc"}`` (equality), ``{"scale": [0, 1]}`` (membership), ``{"x0": Range(0, 512)}``
(inclusive range, either end may be ``None``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from rsrag.tools.errors import StoreError

Columns = Mapping[str, Sequence[Any] | np.ndarray]
"""Column-oriented records: field name -> values, one per row; vector fields as ``(rows, dim)`` arrays."""


class FieldType(StrEnum):
    """Scalar field types every backend can store and filter on."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    BYTES = "bytes"
    """Opaque binary (not filterable)."""


@dataclass(frozen=True)
class ScalarField:
    """A named scalar field of a table."""

    name: str
    type: FieldType
    nullable: bool = False


@dataclass(frozen=True)
class VectorField:
    """A named vector of a table (cosine similarity; vectors are stored as float32)."""

    name: str
    dim: int


@dataclass(frozen=True)
class TableSchema:
    """The shape of one table: its key field, scalar fields and named vectors."""

    name: str
    key: str
    """Name of the string field that identifies a record (upserts match on it)."""
    fields: tuple[ScalarField, ...]
    vectors: tuple[VectorField, ...] = ()

    def field_names(self) -> list[str]:
        """All field names: scalar fields then vectors."""
        return [f.name for f in self.fields] + [v.name for v in self.vectors]

    def check_filter(self, where: Mapping[str, Any]) -> None:
        """Raise :class:`StoreError` when ``where`` names a field that cannot be filtered on (every backend)."""
        known = {f.name for f in self.fields if f.type is not FieldType.BYTES}
        for name in where:
            if name not in known:
                raise StoreError(f"cannot filter table {self.name!r} on {name!r}: filterable fields are {sorted(known)}")

    def vector(self, name: str) -> VectorField:
        """The vector field called ``name``."""
        for v in self.vectors:
            if v.name == name:
                return v
        raise KeyError(f"table {self.name!r} has no vector named {name!r}")

    text_fields: tuple[str, ...] = ()
    """String fields with full-text (BM25) search, for :meth:`StoreTable.text_search` (appended field)."""


@dataclass(frozen=True)
class Range:
    """An inclusive range condition for :data:`Where` (either bound may be ``None``)."""

    lo: float | int | None = None
    hi: float | int | None = None


Where = Mapping[str, Any]
"""Filter: field -> value (equality), list/tuple/set of values (membership) or :class:`Range`; ANDed."""


@dataclass
class SearchResult:
    """Nearest neighbours of one query vector.

    Attributes:
        table: Table name.
        version: Table version the search read.
        rows: One dict per hit, best first, with the requested fields.
        scores: Cosine similarity per hit (same order as ``rows``).
        exact: Whether the search was exhaustive (no approximate index used).
    """

    table: str
    version: int
    rows: list[dict[str, Any]]
    scores: list[float]
    exact: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class StoreTable(abc.ABC):
    """One versioned table of a :class:`Store`."""

    schema: TableSchema

    @property
    def name(self) -> str:
        """The table's name."""
        return self.schema.name

    @abc.abstractmethod
    def version(self) -> int:
        """The latest committed version (refreshes from storage)."""

    @abc.abstractmethod
    def add(self, columns: Columns) -> int:
        """Append rows atomically; returns the new version."""

    @abc.abstractmethod
    def upsert(self, columns: Columns) -> int:
        """Insert rows, replacing rows with the same key, atomically; returns the new version."""

    @abc.abstractmethod
    def delete(self, where: Where) -> int:
        """Delete the rows matching ``where``; returns the new version."""

    @abc.abstractmethod
    def count(self, where: Where | None = None) -> int:
        """Number of rows (matching ``where`` when given)."""

    @abc.abstractmethod
    def scan(
        self,
        where: Where | None = None,
        fields: Sequence[str] | None = None,
        batch_rows: int = 65536,
    ) -> Iterator[dict[str, Any]]:
        """Stream matching rows as column batches (vectors as ``(rows, dim)`` float32 arrays)."""

    @abc.abstractmethod
    def search(
        self,
        vector: str,
        query: np.ndarray,
        k: int,
        where: Where | None = None,
        fields: Sequence[str] | None = None,
        exact: bool = False,
    ) -> SearchResult:
        """The ``k`` rows whose vector ``vector`` is most cosine-similar to ``query``.

        Args:
            vector: Name of the vector field to search.
            query: Query vector, shape ``(dim,)``.
            k: Number of neighbours.
            where: Optional filter, applied before ranking (results always satisfy it).
            fields: Fields to return (default: all scalar fields, no vectors).
            exact: Force an exhaustive search even when an approximate index exists.
        """

    def ensure_vector_index(self, vector: str, min_rows: int = 100_000) -> bool:
        """Build an approximate-nearest-neighbour index on ``vector`` when the table is large enough.

        Returns whether an index exists afterwards. Backends without a separate index step return True.
        """
        return True

    # --- full-text and hybrid search (added for the knowledge base) -------------------------------------

    def text_search(
        self,
        text: str,
        k: int,
        where: Where | None = None,
        fields: Sequence[str] | None = None,
    ) -> SearchResult:
        """The ``k`` rows whose :attr:`TableSchema.text_fields` best match ``text`` by BM25.

        Scores are the backend's BM25 scores (higher is better; only their order is comparable across
        backends). Rows that match no query term are not returned.

        Raises:
            StoreError: the table has no text fields, or the backend has no full-text search.
        """
        from rsrag.tools.errors import StoreError

        raise StoreError(f"table {self.name!r}: this store backend ({type(self).__name__}) has no full-text search")

    def hybrid_search(
        self,
        text: str,
        vector: str,
        query: np.ndarray,
        k: int,
        alpha: float = 0.5,
        where: Where | None = None,
        fields: Sequence[str] | None = None,
    ) -> SearchResult:
        """BM25 on the text fields and vector search on ``vector``, fused by relative scores.

        Each list's scores are min-max normalised to [0, 1] and combined as
        ``alpha * vector + (1 - alpha) * bm25`` (a row missing from one list scores 0 there): Weaviate's
        ``relativeScoreFusion``. ``alpha = 1`` is pure vector search, ``alpha = 0`` pure BM25.
        """
        if not 0.0 <= alpha <= 1.0:
            from rsrag.tools.errors import QueryError

            raise QueryError(f"hybrid alpha must be in [0, 1], got {alpha}")
        pool = max(4 * int(k), 50)
        if fields is not None:  # rows of the two lists are matched on the key
            fields = list(dict.fromkeys([self.schema.key, *fields]))
        vec = self.search(vector, query, pool, where=where, fields=fields) if alpha > 0 else None
        bm25 = self.text_search(text, pool, where=where, fields=fields) if alpha < 1 and text.strip() else None
        return self.fuse_relative([(vec, alpha), (bm25, 1.0 - alpha)], k)

    def fuse_relative(self, parts: Sequence[tuple[SearchResult | None, float]], k: int) -> SearchResult:
        """Relative-score fusion of several result lists of this table (rows matched on the key field)."""
        key = self.schema.key
        combined: dict[Any, float] = {}
        rows: dict[Any, dict[str, Any]] = {}
        details: dict[Any, dict[str, float]] = {}
        version = -1
        for i, (res, weight) in enumerate(parts):
            if res is None or not res.rows:
                continue
            version = max(version, res.version)
            s = np.asarray(res.scores, dtype=np.float64)
            span = float(s.max() - s.min())
            norm = (s - s.min()) / span if span > 0 else np.ones_like(s)
            for row, raw, n in zip(res.rows, s, norm):
                rid = row.get(key, id(row))
                rows.setdefault(rid, row)
                combined[rid] = combined.get(rid, 0.0) + weight * float(n)
                details.setdefault(rid, {})[f"part{i}"] = float(raw)
        order = sorted(combined, key=lambda r: -combined[r])[: int(k)]
        if version < 0:
            version = self.version()
        return SearchResult(table=self.name, version=version, rows=[rows[r] for r in order],
                            scores=[combined[r] for r in order], exact=True,
                            extra={"fusion": "relative_score", "raw": [details[r] for r in order]})


class Store(abc.ABC):
    """A collection of versioned tables at one location."""

    location: str

    @abc.abstractmethod
    def table(self, schema: TableSchema) -> StoreTable:
        """Open the table ``schema.name``, creating it if missing; raises StoreError on a schema clash."""

    @abc.abstractmethod
    def open_table(self, schema: TableSchema) -> StoreTable | None:
        """Open the existing table ``schema.name`` without creating it; ``None`` when it does not exist."""

    @abc.abstractmethod
    def table_names(self) -> list[str]:
        """Names of the existing tables."""

    @abc.abstractmethod
    def drop_table(self, name: str) -> None:
        """Delete a table and its data."""

    @property
    def receipts_dir(self) -> Path | None:
        """A local folder where receipts of complete indexes are kept (:mod:`rsrag.tools.store.receipts`), or
        ``None`` when the backend keeps none (the default)."""
        return None

    def local_versions(self, names: Sequence[str]) -> dict[str, int] | None:
        """The current version of each table ``names`` (absent: the table does not exist), read without
        opening the store; ``None`` when this backend cannot tell (the default)."""
        return None

    @abc.abstractmethod
    def lock(self, name: str, *, wait: bool = False, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """An exclusive, cross-process lock named ``name``.

        Raises:
            IndexBusyError: The lock is held elsewhere and ``wait`` is False (or ``timeout`` expired).
        """
