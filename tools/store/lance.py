"""The embedded store: LanceDB tables in a folder on local disk.

LanceDB commits every write as a new table version with an atomic manifest swap, so a process killed during
a write leaves the previous version intact (the orphaned data files are invisible and removed by
:meth:`LanceTable.optimize`). Writers from several processes are additionally serialised by a file lock in
the store folder. Reads never take a lock, so a read-only store folder can still be searched.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsrag.tools.errors import IndexBusyError, StoreError
from rsrag.tools.store.base import (
    Columns,
    FieldType,
    Range,
    SearchResult,
    Store,
    StoreTable,
    TableSchema,
    Where,
)
from rsrag.tools.store.location import resolve_store_path

if TYPE_CHECKING:
    import pyarrow as pa


def _pa() -> Any:
    """pyarrow, imported on first use: a search answered from receipts never needs it (nor lancedb)."""
    import pyarrow

    return pyarrow


def _arrow_type(kind: FieldType) -> pa.DataType:
    pa = _pa()
    return {FieldType.STR: pa.string(), FieldType.INT: pa.int64(), FieldType.FLOAT: pa.float64(),
            FieldType.BOOL: pa.bool_(), FieldType.BYTES: pa.large_binary()}[kind]
_LOCK_DIR = ".locks"
_U64_MAX = 2**64 - 1
KEEP_VERSIONS = timedelta(hours=1)
""":meth:`LanceTable.optimize` removes table versions older than this (younger ones stay readable)."""

# lance's Rust logger warns on every table creation otherwise; a value the user set is kept
os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("LANCEDB_LOG", "error")


def arrow_schema(schema: TableSchema) -> pa.Schema:
    """The Arrow schema of a table."""
    pa = _pa()
    cols = [pa.field(f.name, _arrow_type(f.type), nullable=f.nullable) for f in schema.fields]
    cols += [pa.field(v.name, pa.list_(pa.float32(), v.dim), nullable=False) for v in schema.vectors]
    return pa.schema(cols)


def _sql_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise StoreError(f"filter value {value!r} is not a finite number")
        return repr(float(value))
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise StoreError(f"filter value {value!r} has unsupported type {type(value).__name__}")


def where_sql(schema: TableSchema, where: Where | None) -> str | None:
    """Translate a :data:`Where` filter to a LanceDB SQL predicate."""
    if not where:
        return None
    schema.check_filter(where)
    parts = []
    for name, cond in where.items():
        if isinstance(cond, Range):
            if cond.lo is not None:
                parts.append(f"{name} >= {_sql_value(cond.lo)}")
            if cond.hi is not None:
                parts.append(f"{name} <= {_sql_value(cond.hi)}")
        elif isinstance(cond, (list, tuple, set, frozenset)):
            if not cond:
                parts.append("false")
            else:
                parts.append(f"{name} IN ({', '.join(_sql_value(v) for v in cond)})")
        elif cond is None:
            parts.append(f"{name} IS NULL")
        else:
            parts.append(f"{name} = {_sql_value(cond)}")
    return " AND ".join(parts) if parts else None


def _store_error(action: str, location: str, exc: BaseException) -> StoreError:
    text = str(exc)
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in text
    readonly = isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) or any(
        s in text for s in ("Permission denied", "Read-only file system", "Operation not permitted")
    )
    hint = ""
    if full:
        hint = " (the disk is full: free space or choose another store folder with --store / RSRAG_HOME)"
    elif readonly:
        hint = " (the folder is not writable: choose another store folder with --store / RSRAG_HOME)"
    return StoreError(f"could not {action} in store {location}: {text.splitlines()[0] if text else type(exc).__name__}{hint}")


class LanceTable(StoreTable):
    """A LanceDB table behind the :class:`StoreTable` interface."""

    def __init__(self, store: LanceStore, schema: TableSchema, table: Any) -> None:
        self.schema = schema
        self._store = store
        self._tbl = table
        self._arrow = arrow_schema(schema)

    # --- writing ---------------------------------------------------------------------------------------

    def _to_arrow(self, columns: Columns) -> pa.Table:
        pa = _pa()
        lengths = set()
        arrays = []
        for fld in self._arrow:
            values = columns.get(fld.name)
            if pa.types.is_fixed_size_list(fld.type):
                dim = fld.type.list_size
                if values is None:
                    raise StoreError(f"table {self.name!r}: missing vector column {fld.name!r}")
                vec = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
                if vec.ndim != 2 or vec.shape[1] != dim:
                    raise StoreError(f"table {self.name!r}: vector {fld.name!r} must have shape (rows, {dim}), got {vec.shape}")
                if not np.isfinite(vec).all():
                    raise StoreError(f"table {self.name!r}: vector {fld.name!r} contains NaN or infinite values")
                arr = pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), dim)
            elif values is None:
                if not fld.nullable:
                    raise StoreError(f"table {self.name!r}: missing column {fld.name!r}")
                arr = None
            else:
                arr = pa.array(values.tolist() if isinstance(values, np.ndarray) else list(values), type=fld.type)
            if arr is not None:
                lengths.add(len(arr))
            arrays.append(arr)
        unknown = set(columns) - set(self._arrow.names)
        if unknown:
            raise StoreError(f"table {self.name!r} has no fields {sorted(unknown)}")
        if len(lengths) > 1:
            raise StoreError(f"table {self.name!r}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        arrays = [a if a is not None else pa.nulls(n, type=f.type) for a, f in zip(arrays, self._arrow)]
        return pa.Table.from_arrays(arrays, schema=self._arrow)

    def add(self, columns: Columns) -> int:
        data = self._to_arrow(columns)
        with self._store._write("add rows to table " + self.name):
            return int(self._tbl.add(data).version)

    def upsert(self, columns: Columns) -> int:
        data = self._to_arrow(columns)
        with self._store._write("upsert rows in table " + self.name):
            res = self._tbl.merge_insert(self.schema.key).when_matched_update_all().when_not_matched_insert_all().execute(data)
            return int(res.version)

    def delete(self, where: Where) -> int:
        sql = where_sql(self.schema, where)
        if sql is None:
            raise StoreError("refusing to delete with an empty filter; drop the table instead")
        with self._store._write("delete rows from table " + self.name):
            self._tbl.delete(sql)
            return int(self._tbl.version)

    def optimize(self) -> None:
        """Compact small fragments, fold new rows into indices and remove unreferenced files."""
        with self._store._write("optimize table " + self.name):
            self._tbl.optimize(cleanup_older_than=KEEP_VERSIONS, delete_unverified=False)

    # --- reading ---------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        try:
            self._tbl.checkout_latest()
        except Exception as exc:  # noqa: BLE001 - lance raises several kinds
            raise _store_error("read table " + self.name, self._store.location, exc) from exc

    def version(self) -> int:
        self._refresh()
        return int(self._tbl.version)

    def count(self, where: Where | None = None) -> int:
        self._refresh()
        return int(self._tbl.count_rows(where_sql(self.schema, where)))

    def _columns(self, fields: Sequence[str] | None, vectors: bool) -> list[str]:
        if fields is None:
            return [f.name for f in self.schema.fields] + ([v.name for v in self.schema.vectors] if vectors else [])
        unknown = set(fields) - set(self._arrow.names)
        if unknown:
            raise StoreError(f"table {self.name!r} has no fields {sorted(unknown)}")
        return list(fields)

    def _decode(self, batch: pa.RecordBatch | pa.Table, names: Sequence[str]) -> dict[str, Any]:
        pa = _pa()
        out: dict[str, Any] = {}
        vec_names = {v.name: v.dim for v in self.schema.vectors}
        for name in names:
            col = batch.column(name)
            if name in vec_names:
                if isinstance(col, pa.ChunkedArray):
                    col = col.combine_chunks()
                flat = col.flatten().to_numpy(zero_copy_only=False)
                out[name] = np.asarray(flat, dtype=np.float32).reshape(-1, vec_names[name])
            else:
                out[name] = col.to_pylist()
        return out

    def scan(self, where: Where | None = None, fields: Sequence[str] | None = None, batch_rows: int = 65536) -> Iterator[dict[str, Any]]:
        self._refresh()
        names = self._columns(fields, vectors=True)
        query = self._tbl.search().select(names).limit(None)
        sql = where_sql(self.schema, where)
        if sql:
            query = query.where(sql)
        try:
            reader = query.to_batches(batch_rows)
        except Exception as exc:  # noqa: BLE001
            raise _store_error("scan table " + self.name, self._store.location, exc) from exc
        for batch in reader:
            if batch.num_rows:
                yield self._decode(batch, names)

    def has_vector_index(self, vector: str) -> bool:
        """Whether an ANN index exists on ``vector``."""
        return any(vector in idx.columns and str(idx.index_type).upper().startswith(("IVF", "HNSW"))
                   for idx in self._tbl.list_indices())

    def search(self, vector: str, query: np.ndarray, k: int, where: Where | None = None,
               fields: Sequence[str] | None = None, exact: bool = False) -> SearchResult:
        self.schema.vector(vector)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        names = self._columns(fields, vectors=False)
        self._refresh()
        version = int(self._tbl.version)
        indexed = not exact and self.has_vector_index(vector)
        builder = self._tbl.search(q, vector_column_name=vector).distance_type("cosine").limit(int(k))
        builder = builder.select([*names, "_distance"])
        sql = where_sql(self.schema, where)
        if sql:
            builder = builder.where(sql, prefilter=True)
        if indexed:
            builder = builder.nprobes(self._store.nprobes).refine_factor(self._store.refine_factor)
        elif exact:
            builder = builder.bypass_vector_index()
        try:
            table = builder.to_arrow()
        except Exception as exc:  # noqa: BLE001
            raise _store_error("search table " + self.name, self._store.location, exc) from exc
        rows_cols = self._decode(table, names)
        dist = table.column("_distance").to_numpy(zero_copy_only=False) if table.num_rows else np.zeros(0)
        rows = [dict(zip(names, vals)) for vals in zip(*(rows_cols[n] for n in names))] if names else []
        return SearchResult(table=self.name, version=version, rows=rows, scores=[float(1.0 - d) for d in dist], exact=not indexed)

    def ensure_vector_index(self, vector: str, min_rows: int = 100_000) -> bool:
        """Build an IVF-PQ index (cosine) once the table has ``min_rows`` rows; results are refined exactly.

        Rows added later are searched exhaustively until :meth:`optimize` folds them into the index.
        """
        vf = self.schema.vector(vector)
        n = self.count()
        if self.has_vector_index(vector):
            return True
        if n < min_rows:
            return False
        # ~4096 rows per partition keeps k-means training cheap on a few cores (the build time is dominated
        # by it) while a query with `nprobes` partitions still scans only nprobes * 4096 PQ codes.
        parts = min(1024, max(16, n // 4096))
        sub = vf.dim // 8 if vf.dim % 8 == 0 else vf.dim // 4 if vf.dim % 4 == 0 else 1
        with self._store._write("build a vector index on table " + self.name):
            self._tbl.create_index(metric="cosine", vector_column_name=vector, index_type="IVF_PQ",
                                   num_partitions=parts, num_sub_vectors=sub, max_iterations=25)
        return True

    def ensure_scalar_index(self, field: str) -> None:
        """Build a BTREE index on a scalar field used in filters (idempotent)."""
        if any(field in idx.columns for idx in self._tbl.list_indices()):
            return
        with self._store._write("build a scalar index on table " + self.name):
            self._tbl.create_scalar_index(field, index_type="BTREE")

    # --- full-text search (added for the knowledge base) ------------------------------------------------

    def ensure_text_index(self) -> None:
        """Build Lance's native BM25 index on each of the schema's text fields (idempotent).

        Rows added after the index was built are still found (Lance searches unindexed rows exhaustively);
        :meth:`optimize` folds them into the index.
        """
        import warnings

        have = {c for idx in self._tbl.list_indices() if "FTS" in str(idx.index_type).upper() or "INVERTED" in str(idx.index_type).upper() for c in idx.columns}
        missing = [f for f in self.schema.text_fields if f not in have]
        if not missing:
            return
        with self._store._write("build a full-text index on table " + self.name), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in missing:
                self._tbl.create_fts_index(name, use_tantivy=False, replace=False)

    def text_search(self, text: str, k: int, where: Where | None = None, fields: Sequence[str] | None = None) -> SearchResult:
        if not self.schema.text_fields:
            raise StoreError(f"table {self.name!r} has no text fields to search; declare them in its TableSchema.text_fields")
        names = self._columns(fields, vectors=False)
        self._refresh()
        version = int(self._tbl.version)
        if not text.strip() or self._tbl.count_rows() == 0:
            return SearchResult(table=self.name, version=version, rows=[], scores=[])
        self.ensure_text_index()
        builder = self._tbl.search(text, query_type="fts", fts_columns=list(self.schema.text_fields))
        builder = builder.select([*names, "_score"]).limit(int(k))
        sql = where_sql(self.schema, where)
        if sql:
            builder = builder.where(sql, prefilter=True)
        try:
            table = builder.to_arrow()
        except Exception as exc:  # noqa: BLE001
            raise _store_error("search the text of table " + self.name, self._store.location, exc) from exc
        cols = self._decode(table, names)
        scores = table.column("_score").to_pylist() if table.num_rows else []
        rows = [dict(zip(names, vals)) for vals in zip(*(cols[n] for n in names))] if names else []
        return SearchResult(table=self.name, version=version, rows=rows, scores=[float(x) for x in scores])


class LanceStore(Store):
    """Embedded store: one LanceDB database folder.

    Args:
        path: Store folder. ``None``: ``$RSRAG_HOME/store``, else the user's data dir (see
            :func:`~rsrag.tools.store.location.resolve_store_path`). The folder is created on the first write.
        nprobes: IVF partitions probed by approximate searches.
        refine_factor: Approximate searches re-rank ``k * refine_factor`` candidates with exact distances
            (30 gives recall@20 of 0.9995 against exact search over 1M 512-d vectors; see BENCHMARKS.md).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, nprobes: int = 32, refine_factor: int = 30) -> None:
        self.path = resolve_store_path(path)
        self.location = str(self.path)
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self._db: Any = None
        self._checked_writable = False
        self._tables: dict[str, LanceTable] = {}

    @property
    def receipts_dir(self) -> Path | None:
        """``receipts/`` in the store folder (see :mod:`rsrag.tools.store.receipts`)."""
        return self.path / "receipts"

    def local_versions(self, names: Sequence[str]) -> dict[str, int] | None:
        """The latest version of each table in ``names``, from the manifests in its ``_versions`` folder (no
        lancedb import): Lance commits a version by writing its manifest there, named ``N.manifest`` (naming
        scheme V1) or ``(2**64 - 1 - N).manifest`` zero-padded to 20 digits (V2). A table without that folder
        is left out; ``None`` when a folder holds names of neither scheme (then nothing is trusted)."""
        out: dict[str, int] = {}
        for name in names:
            folder = self.path / f"{name}.lance" / "_versions"
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            best = -1
            for entry in entries:
                stem, dot, ext = entry.partition(".")
                if ext != "manifest" or not stem.isdigit():
                    continue
                n = int(stem)
                best = max(best, _U64_MAX - n if len(stem) == 20 and n > _U64_MAX // 2 else n)
            if best < 0:
                return None
            out[name] = best
        return out

    def _connect(self, create: bool) -> Any:
        if self._db is None:
            if not self.path.is_dir():
                if not create:
                    return None
                self._ensure_writable()
            from rsrag.tools.store._lancedb import import_lancedb  # deferred: keeps `import rsrag.tools.store` light

            try:
                self._db = import_lancedb().connect(str(self.path))
            except Exception as exc:  # noqa: BLE001
                raise _store_error("open the database", self.location, exc) from exc
        return self._db

    def _ensure_writable(self) -> None:
        if self._checked_writable:
            return
        try:
            (self.path / _LOCK_DIR).mkdir(parents=True, exist_ok=True)
            probe = self.path / f".probe-{uuid.uuid4().hex}"
            with open(probe, "wb") as fh:
                fh.write(b"x")
            probe.unlink()
        except OSError as exc:
            raise _store_error("write", self.location, exc) from exc
        self._checked_writable = True

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[None]:
        self._ensure_writable()
        from filelock import FileLock

        lock = FileLock(str(self.path / _LOCK_DIR / "_write.lock"))
        try:
            with lock:
                yield
        except StoreError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            raise _store_error(action, self.location, exc) from exc

    def table(self, schema: TableSchema) -> LanceTable:
        cached = self._tables.get(schema.name)
        if cached is not None and cached.schema == schema:
            return cached
        existing = self.open_table(schema)
        if existing is not None:
            return existing
        db = self._connect(create=True)
        with self._write("create table " + schema.name):
            tbl = db.create_table(schema.name, schema=arrow_schema(schema), exist_ok=True)
        self._check_schema(schema, tbl)
        self._tables[schema.name] = LanceTable(self, schema, tbl)
        return self._tables[schema.name]

    def _check_schema(self, schema: TableSchema, tbl: Any) -> None:
        want, have = arrow_schema(schema), tbl.schema
        if [(f.name, f.type) for f in want] != [(f.name, f.type) for f in have]:
            raise StoreError(
                f"table {schema.name!r} in store {self.location} has a different schema than expected "
                f"(found {have.names}, expected {want.names}); it was written by another rsrag version: "
                "use another store folder or drop the table"
            )

    def open_table(self, schema: TableSchema) -> LanceTable | None:
        name = schema.name
        if name in self._tables and self._tables[name].schema == schema:
            return self._tables[name]
        if self._db is None and not (self.path / f"{name}.lance").is_dir():
            return None  # a local table is its folder: no need to import lancedb to learn it is missing
        db = self._connect(create=False)
        if db is None or name not in self.table_names():
            return None
        try:
            tbl = db.open_table(name)
        except Exception as exc:  # noqa: BLE001
            raise _store_error("open table " + name, self.location, exc) from exc
        self._check_schema(schema, tbl)
        self._tables[name] = LanceTable(self, schema, tbl)
        return self._tables[name]

    def table_names(self) -> list[str]:
        db = self._connect(create=False)
        if db is None:
            return []
        names: list[str] = []
        token = None
        try:
            while True:
                page = db.list_tables(page_token=token)
                names += list(page.tables)
                token = page.page_token
                if not token:
                    return names
        except Exception as exc:  # noqa: BLE001
            raise _store_error("list tables", self.location, exc) from exc

    def drop_table(self, name: str) -> None:
        db = self._connect(create=False)
        self._tables.pop(name, None)
        if db is None or name not in self.table_names():
            return
        with self._write("drop table " + name):
            from rsrag.tools.store.receipts import drop_table_receipts

            drop_table_receipts(self.receipts_dir, name)  # first: a receipt never outlives its table
            db.drop_table(name)

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
        self._ensure_writable()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = self.path / _LOCK_DIR / f"{safe}.lock"
        from filelock import FileLock, Timeout

        lock = FileLock(str(path), timeout=(-1 if timeout is None else timeout) if wait else 0)
        try:
            lock.acquire()
        except Timeout as exc:
            raise IndexBusyError(
                f"{name} is locked by another process (lock file {path}); wait for it to finish, "
                "or retry with waiting enabled"
            ) from exc
        except OSError as exc:
            raise _store_error("take lock " + name, self.location, exc) from exc
        try:
            yield
        finally:
            lock.release()
