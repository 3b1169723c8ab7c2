"""The scale-out store: Weaviate collections (weaviate-client v4) behind the :class:`Store` interface.

For a Weaviate server or cluster the user runs. Each table is a collection with self-provided named
vectors (cosine HNSW), created on first use and checked against the expected schema on later use
(:mod:`.weaviate_schema` holds the mapping). Writes go through the client's fixed-size batching; objects the
server rejects are reported one by one in a :class:`StoreError` (key and server message).

Differences from the embedded store, by Weaviate's design:
    * no table versions: :meth:`WeaviateTable.version` is always 0 and results report version 0;
    * a batch write is not atomic: after a failed write some objects may be stored; writes are upserts on
      the key (deterministic UUIDs), so repeating a failed write is safe;
    * :meth:`WeaviateStore.lock` is a file lock on this machine only (Weaviate has no locks).

The connection opens lazily on first use; an unreachable server raises :class:`StoreUnavailableError`
naming the URL.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np
from filelock import FileLock, Timeout

from rsrag.tools.errors import IndexBusyError, StoreError, StoreUnavailableError
from rsrag.tools.store import weaviate_schema as ws
from rsrag.tools.store.base import Columns, FieldType, SearchResult, Store, StoreTable, TableSchema, Where
from rsrag.tools.store.location import rsrag_home

QUERY_MAXIMUM_RESULTS = 10_000
"""Weaviate's default cap on ``limit + offset`` of one query; larger filtered scans iterate all objects."""


def _columns_to_rows(schema: TableSchema, columns: Columns) -> list[tuple[str, dict[str, Any], dict[str, list[float]]]]:
    """Validate columns and turn them into ``(key, properties, vectors)`` per row."""
    known = set(schema.field_names())
    unknown = set(columns) - known
    if unknown:
        raise StoreError(f"table {schema.name!r} has no fields {sorted(unknown)}")
    n = None
    vecs: dict[str, np.ndarray] = {}
    for v in schema.vectors:
        if columns.get(v.name) is None:
            raise StoreError(f"table {schema.name!r}: missing vector column {v.name!r}")
        arr = np.asarray(columns[v.name], dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != v.dim:
            raise StoreError(f"table {schema.name!r}: vector {v.name!r} must have shape (rows, {v.dim}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise StoreError(f"table {schema.name!r}: vector {v.name!r} contains NaN or infinite values")
        vecs[v.name] = arr
        n = arr.shape[0] if n is None else n
    lengths = {len(columns[f.name]) for f in schema.fields if columns.get(f.name) is not None} | ({n} if n is not None else set())
    if len(lengths) > 1:
        raise StoreError(f"table {schema.name!r}: columns have different lengths {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    out = []
    for i in range(rows):
        props: dict[str, Any] = {}
        for f in schema.fields:
            col = columns.get(f.name)
            value = None if col is None else col[i]
            if value is None:
                if not f.nullable:
                    raise StoreError(f"table {schema.name!r}: missing value for field {f.name!r} (row {i})")
                continue
            if f.type is FieldType.BYTES:
                value = base64.b64encode(bytes(value)).decode("ascii")
            elif isinstance(value, np.generic):
                value = value.item()
            props[ws.prop(f.name)] = value
        out.append((str(props[ws.prop(schema.key)]), props, {k: v[i].tolist() for k, v in vecs.items()}))
    return out


class WeaviateTable(StoreTable):
    """One Weaviate collection behind the :class:`StoreTable` interface."""

    def __init__(self, store: WeaviateStore, schema: TableSchema, collection: Any) -> None:
        self.schema = schema
        self._store = store
        self._col = collection
        self._cname = ws.collection_name(schema.name, store.prefix)

    # --- writing ---------------------------------------------------------------------------------------

    def add(self, columns: Columns) -> int:
        return self.upsert(columns)

    def upsert(self, columns: Columns) -> int:
        rows = _columns_to_rows(self.schema, columns)
        with self._store._errors(f"write to collection {self._cname}"):
            with self._col.batch.fixed_size(batch_size=self._store.batch_size, concurrent_requests=2) as batch:
                for key, props, vectors in rows:
                    batch.add_object(properties=props, vector=vectors or None, uuid=ws.object_uuid(key, self._cname))
            failed = list(self._col.batch.failed_objects)
        if failed:
            first = "; ".join(f"{f.object_.properties.get(ws.prop(self.schema.key))!r}: {f.message}" for f in failed[:5])
            raise StoreError(f"Weaviate at {self._store.url} rejected {len(failed)} of {len(rows)} objects of "
                             f"collection {self._cname} (the others were written; repeating the write is safe): {first}")
        return 0

    def delete(self, where: Where) -> int:
        flt = ws.build_filter(self.schema, where)
        if flt is None:
            raise StoreError("refusing to delete with an empty filter; drop the table instead")
        if flt is ws.EMPTY:
            return 0
        with self._store._errors(f"delete from collection {self._cname}"):
            while self._col.data.delete_many(where=flt).matches > 0:
                pass
        return 0

    # --- reading ---------------------------------------------------------------------------------------

    def version(self) -> int:
        return 0

    def count(self, where: Where | None = None) -> int:
        flt = ws.build_filter(self.schema, where)
        if flt is ws.EMPTY:
            return 0
        with self._store._errors(f"count collection {self._cname}"):
            return int(self._col.aggregate.over_all(total_count=True, filters=flt).total_count or 0)

    def _fields(self, fields: Sequence[str] | None, vectors: bool) -> tuple[list[str], list[str]]:
        names = [f.name for f in self.schema.fields] if fields is None else list(fields)
        unknown = set(names) - set(self.schema.field_names())
        if unknown:
            raise StoreError(f"table {self.name!r} has no fields {sorted(unknown)}")
        vec_names = {v.name for v in self.schema.vectors}
        scalars = [n for n in names if n not in vec_names]
        wanted = [n for n in names if n in vec_names] if fields is not None else ([v.name for v in self.schema.vectors] if vectors else [])
        return scalars, wanted

    def _row(self, obj: Any, scalars: list[str], vectors: list[str]) -> dict[str, Any]:
        types = {f.name: f.type for f in self.schema.fields}
        row: dict[str, Any] = {}
        for name in scalars:
            value = obj.properties.get(ws.prop(name))
            if value is not None and types[name] is FieldType.BYTES:
                value = base64.b64decode(value)
            elif value is not None and types[name] is FieldType.INT:
                value = int(value)
            row[name] = value
        for name in vectors:
            row[name] = np.asarray(obj.vector[name], dtype=np.float32)
        return row

    def scan(self, where: Where | None = None, fields: Sequence[str] | None = None, batch_rows: int = 65536) -> Iterator[dict[str, Any]]:
        scalars, vectors = self._fields(fields, vectors=True)
        flt = ws.build_filter(self.schema, where)
        if flt is ws.EMPTY:
            return
        props = [ws.prop(n) for n in scalars]
        include = vectors or False
        with self._store._errors(f"scan collection {self._cname}"):
            if flt is None or self.count(where) > QUERY_MAXIMUM_RESULTS:
                # cursor over every object; a filter is then applied here (Weaviate cursors take no filter)
                need = list(dict.fromkeys(props + [ws.prop(n) for n in (where or {})]))
                source = self._col.iterator(include_vector=bool(vectors), return_properties=need)
                check = None if flt is None else _local_filter(self.schema, where or {})
            else:
                source = self._col.query.fetch_objects(filters=flt, limit=QUERY_MAXIMUM_RESULTS, include_vector=include,
                                                       return_properties=props).objects
                check = None
            batch: list[dict[str, Any]] = []
            for obj in source:
                if check is not None and not check(obj.properties):
                    continue
                batch.append(self._row(obj, scalars, vectors))
                if len(batch) >= batch_rows:
                    yield self._columnar(batch, scalars, vectors)
                    batch = []
            if batch:
                yield self._columnar(batch, scalars, vectors)

    def _columnar(self, rows: list[dict[str, Any]], scalars: list[str], vectors: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {n: [r[n] for r in rows] for n in scalars}
        for n in vectors:
            out[n] = np.stack([r[n] for r in rows]).astype(np.float32)
        return out

    def _result(self, objs: Any, scalars: list[str], vectors: list[str], score: Any) -> SearchResult:
        rows = [self._row(o, scalars, vectors) for o in objs]
        return SearchResult(table=self.name, version=0, rows=rows, scores=[float(score(o.metadata)) for o in objs])

    def search(self, vector: str, query: np.ndarray, k: int, where: Where | None = None,
               fields: Sequence[str] | None = None, exact: bool = False) -> SearchResult:
        from weaviate.classes.query import MetadataQuery

        self.schema.vector(vector)
        scalars, vectors = self._fields(fields, vectors=False)
        flt = ws.build_filter(self.schema, where)
        if flt is ws.EMPTY:
            return SearchResult(table=self.name, version=0, rows=[], scores=[], exact=False)
        q = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        with self._store._errors(f"search collection {self._cname}"):
            res = self._col.query.near_vector(near_vector=q, target_vector=vector, limit=int(k), filters=flt,
                                              include_vector=vectors or False, return_properties=[ws.prop(n) for n in scalars],
                                              return_metadata=MetadataQuery(distance=True))
        out = self._result(res.objects, scalars, vectors, lambda m: 1.0 - float(m.distance))
        out.exact = False
        return out

    def text_search(self, text: str, k: int, where: Where | None = None, fields: Sequence[str] | None = None) -> SearchResult:
        from weaviate.classes.query import MetadataQuery

        if not self.schema.text_fields:
            raise StoreError(f"table {self.name!r} has no text fields to search; declare them in its TableSchema.text_fields")
        scalars, vectors = self._fields(fields, vectors=False)
        flt = ws.build_filter(self.schema, where)
        if flt is ws.EMPTY or not text.strip():
            return SearchResult(table=self.name, version=0, rows=[], scores=[])
        with self._store._errors(f"search the text of collection {self._cname}"):
            res = self._col.query.bm25(query=text, query_properties=[ws.prop(f) for f in self.schema.text_fields],
                                       limit=int(k), filters=flt, include_vector=vectors or False,
                                       return_properties=[ws.prop(n) for n in scalars], return_metadata=MetadataQuery(score=True))
        return self._result([o for o in res.objects if (o.metadata.score or 0) > 0], scalars, vectors, lambda m: m.score)

    def hybrid_search(self, text: str, vector: str, query: np.ndarray, k: int, alpha: float = 0.5,
                      where: Where | None = None, fields: Sequence[str] | None = None) -> SearchResult:
        """Weaviate's native hybrid search (BM25 + vector, relative-score fusion, ``alpha`` = vector weight)."""
        from weaviate.classes.query import HybridFusion, MetadataQuery

        from rsrag.tools.errors import QueryError

        if not 0.0 <= alpha <= 1.0:
            raise QueryError(f"hybrid alpha must be in [0, 1], got {alpha}")
        self.schema.vector(vector)
        scalars, vectors = self._fields(fields, vectors=False)
        flt = ws.build_filter(self.schema, where)
        if flt is ws.EMPTY:
            return SearchResult(table=self.name, version=0, rows=[], scores=[])
        q = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        with self._store._errors(f"hybrid-search collection {self._cname}"):
            res = self._col.query.hybrid(query=text or None, vector=q, target_vector=vector, alpha=float(alpha),
                                         fusion_type=HybridFusion.RELATIVE_SCORE,
                                         query_properties=[ws.prop(f) for f in self.schema.text_fields] or None,
                                         limit=int(k), filters=flt, include_vector=vectors or False,
                                         return_properties=[ws.prop(n) for n in scalars], return_metadata=MetadataQuery(score=True))
        out = self._result(res.objects, scalars, vectors, lambda m: m.score)
        out.extra["fusion"] = "weaviate_relative_score"
        return out


def _local_filter(schema: TableSchema, where: Where) -> Any:
    from rsrag.tools.store.base import Range

    def ok(props: dict[str, Any]) -> bool:
        for name, cond in where.items():
            v = props.get(ws.prop(name))
            if isinstance(cond, Range):
                if v is None or (cond.lo is not None and v < cond.lo) or (cond.hi is not None and v > cond.hi):
                    return False
            elif isinstance(cond, (list, tuple, set, frozenset)):
                if v not in cond:
                    return False
            elif v != cond:
                return False
        return True

    return ok


class WeaviateStore(Store):
    """A Weaviate server or cluster as an rsrag store.

    Args:
        url: HTTP(S) URL of the server, e.g. ``http://localhost:8080`` (explicit; no environment lookup).
        api_key: API key, or ``None`` for an open server.
        grpc_port: gRPC port (Weaviate's default 50051); the gRPC host is the URL's host.
        prefix: collection-name prefix (several rsrag installations can share a server).
        batch_size: objects per batch request.
        timeout_s: seconds to wait for the server when connecting.
    """

    def __init__(self, url: str, api_key: str | None = None, *, grpc_port: int = 50051, prefix: str = ws.DEFAULT_PREFIX,
                 batch_size: int = 200, timeout_s: float = 10.0) -> None:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StoreError(f"Weaviate URL {url!r} is not an http(s) URL such as http://localhost:8080")
        self.url = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or (443 if parsed.scheme == 'https' else 8080)}"
        self.location = self.url
        self.api_key = api_key
        self.grpc_port = grpc_port
        self.prefix = prefix
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self._parsed = parsed
        self._client: Any = None

    def connection_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``weaviate.connect_to_custom`` for this store."""
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout as WTimeout

        secure = self._parsed.scheme == "https"
        host = self._parsed.hostname
        return {"http_host": host, "http_port": self._parsed.port or (443 if secure else 8080), "http_secure": secure,
                "grpc_host": host, "grpc_port": self.grpc_port, "grpc_secure": secure,
                "auth_credentials": Auth.api_key(self.api_key) if self.api_key else None,
                "additional_config": AdditionalConfig(timeout=WTimeout(init=self.timeout_s, query=60, insert=120))}

    def client(self) -> Any:
        """The connected client (connects on first use)."""
        if self._client is None:
            import weaviate

            with self._errors("connect"):
                self._client = weaviate.connect_to_custom(**self.connection_arguments())
        return self._client

    def close(self) -> None:
        """Close the connection (reopened on next use)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from weaviate import exceptions as wx

        try:
            yield
        except StoreError:  # already worded by an inner call (StoreUnavailableError is a ConnectionError too)
            raise
        except (wx.WeaviateConnectionError, wx.WeaviateStartUpError, wx.WeaviateGRPCUnavailableError,
                wx.WeaviateTimeoutError, wx.WeaviateClosedClientError, ConnectionError) as exc:
            raise StoreUnavailableError(
                f"Weaviate at {self.url} (gRPC port {self.grpc_port}) is unreachable; could not {action}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. Start the server or fix the URL"
            ) from exc
        except wx.AuthenticationFailedError as exc:
            raise StoreUnavailableError(f"Weaviate at {self.url} refused the credentials; check the API key") from exc
        except wx.WeaviateBaseError as exc:
            raise StoreError(f"Weaviate at {self.url}: could not {action}: {str(exc).splitlines()[0]}") from exc

    def table(self, schema: TableSchema) -> WeaviateTable:
        existing = self.open_table(schema)
        if existing is not None:
            return existing
        args = ws.create_arguments(schema, self.prefix)
        with self._errors(f"create collection {args['name']}"):
            col = self.client().collections.create(**args)
        return WeaviateTable(self, schema, col)

    def open_table(self, schema: TableSchema) -> WeaviateTable | None:
        name = ws.collection_name(schema.name, self.prefix)
        with self._errors(f"open collection {name}"):
            if not self.client().collections.exists(name):
                return None
            col = self.client().collections.use(name)
            problems = ws.schema_problems(schema, col.config.get())
        if problems:
            raise StoreError(f"collection {name} on Weaviate at {self.url} does not match table {schema.name!r}: "
                             f"{'; '.join(problems)}; use another prefix or drop the collection")
        return WeaviateTable(self, schema, col)

    def table_names(self) -> list[str]:
        lead = f"{self.prefix}_"
        with self._errors("list collections"):
            names = list(self.client().collections.list_all(simple=True))
        return sorted(n[len(lead):] for n in names if n.startswith(lead))

    def drop_table(self, name: str) -> None:
        with self._errors(f"drop collection for table {name}"):
            self.client().collections.delete(ws.collection_name(name, self.prefix))

    @contextlib.contextmanager
    def lock(self, name: str, *, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
        folder = rsrag_home() / "locks" / ("weaviate-" + hashlib.blake2b(self.url.encode(), digest_size=6).hexdigest())
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        lock = FileLock(str(folder / f"{safe}.lock"), timeout=(-1 if timeout is None else timeout) if wait else 0)
        try:
            lock.acquire()
        except Timeout as exc:
            raise IndexBusyError(f"{name} is locked by another process on this machine (lock {lock.lock_file})") from exc
        try:
            yield
        finally:
            lock.release()
