"""Pure translations from rsrag's store interface to weaviate-client v4 objects (no server needed).

Kept apart from :mod:`.weaviate` so that everything the client can check offline (collection and property
configuration, named vectors, filters, batch configuration) is tested without a Weaviate server.

Mapping:
    * table ``name`` -> collection ``<Prefix>_<name>`` (Weaviate class names start with a capital letter);
    * scalar fields -> properties (STR -> TEXT, INT -> INT, FLOAT -> NUMBER, BOOL -> BOOL, BYTES -> BLOB);
      text fields (:attr:`TableSchema.text_fields`) use word tokenization and are BM25-searchable, other
      strings use field tokenization (exact equality filters); names Weaviate reserves (``id``) get a ``_``
      suffix;
    * vectors -> self-provided named vectors, HNSW with cosine distance;
    * the record key -> the object's UUID (``generate_uuid5(key, collection)``), so writes with the same key
      replace the object (upsert);
    * :data:`Where` -> ``Filter.all_of`` of ``equal`` / ``contains_any`` / ``greater_or_equal`` +
      ``less_or_equal`` / ``is_none`` conditions.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from rsrag.tools.errors import StoreError
from rsrag.tools.store.base import FieldType, Range, TableSchema, Where

RESERVED = frozenset({"id", "_id", "_additional"})
DEFAULT_PREFIX = "Rsrag"
EMPTY = object()
"""Returned by :func:`build_filter` for a filter that matches nothing (an empty membership list)."""


def collection_name(table: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The Weaviate collection of table ``table``."""
    name = f"{prefix}_{table}"
    if not re.fullmatch(r"[A-Z][_0-9A-Za-z]*", name):
        raise StoreError(f"table name {table!r} (prefix {prefix!r}) cannot be a Weaviate collection name: "
                         "use letters, digits and underscores, and a prefix starting with a capital letter")
    return name


def prop(field: str) -> str:
    """The Weaviate property name of a field."""
    return f"{field}_" if field in RESERVED else field


def properties(schema: TableSchema) -> list[Any]:
    """``weaviate.classes.config.Property`` objects for the schema's scalar fields."""
    from weaviate.classes.config import DataType, Property, Tokenization

    types = {FieldType.STR: DataType.TEXT, FieldType.INT: DataType.INT, FieldType.FLOAT: DataType.NUMBER,
             FieldType.BOOL: DataType.BOOL, FieldType.BYTES: DataType.BLOB}
    out = []
    for f in schema.fields:
        kw: dict[str, Any] = {"name": prop(f.name), "data_type": types[f.type]}
        if f.type is FieldType.STR:
            searchable = f.name in schema.text_fields
            kw.update(tokenization=Tokenization.WORD if searchable else Tokenization.FIELD,
                      index_searchable=searchable, index_filterable=True)
        elif f.type in (FieldType.INT, FieldType.FLOAT):
            kw.update(index_filterable=True, index_range_filters=True)
        elif f.type is FieldType.BYTES:
            kw.update(index_filterable=False)
        out.append(Property(**kw))
    return out


def vector_config(schema: TableSchema) -> list[Any]:
    """Self-provided named vectors (HNSW, cosine) for the schema's vectors."""
    from weaviate.classes.config import Configure, VectorDistances

    return [Configure.Vectors.self_provided(name=v.name, vector_index_config=Configure.VectorIndex.hnsw(
        distance_metric=VectorDistances.COSINE)) for v in schema.vectors]


def create_arguments(schema: TableSchema, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """Keyword arguments of ``client.collections.create`` for a table."""
    from weaviate.classes.config import Configure

    return {"name": collection_name(schema.name, prefix), "properties": properties(schema),
            "vector_config": vector_config(schema),
            "inverted_index_config": Configure.inverted_index(index_null_state=True),
            "description": f"rsrag table {schema.name} (key {schema.key})"}


def schema_problems(schema: TableSchema, config: Any) -> list[str]:
    """Differences between a table's schema and an existing collection's config (``collection.config.get()``)."""
    problems = []
    want = {p.name: str(p.dataType.value if hasattr(p.dataType, "value") else p.dataType) for p in properties(schema)}
    have = {p.name: str(p.data_type.value if hasattr(p.data_type, "value") else p.data_type) for p in config.properties}
    for name, dtype in want.items():
        if name not in have:
            problems.append(f"property {name!r} is missing")
        elif have[name] != dtype:
            problems.append(f"property {name!r} is {have[name]}, expected {dtype}")
    vectors = set((config.vector_config or {}).keys())
    for v in schema.vectors:
        if v.name not in vectors:
            problems.append(f"named vector {v.name!r} is missing")
    return problems


def _condition(name: str, cond: Any) -> Any:
    from weaviate.classes.query import Filter

    p = Filter.by_property(prop(name))
    if isinstance(cond, Range):
        parts = ([p.greater_or_equal(_value(cond.lo))] if cond.lo is not None else []) + (
            [Filter.by_property(prop(name)).less_or_equal(_value(cond.hi))] if cond.hi is not None else [])
        return Filter.all_of(parts) if len(parts) > 1 else parts[0] if parts else None
    if isinstance(cond, (list, tuple, set, frozenset)):
        values = [_value(v) for v in cond]
        return EMPTY if not values else p.contains_any(values)
    if cond is None:
        return p.is_none(True)
    return p.equal(_value(cond))


def _value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            raise StoreError(f"filter value {v!r} is not a finite number")
        return float(v)
    if isinstance(v, str):
        return v
    raise StoreError(f"filter value {v!r} has unsupported type {type(v).__name__}")


def build_filter(schema: TableSchema, where: Where | None) -> Any:
    """A v4 filter for a :data:`Where`; ``None`` for no filter, :data:`EMPTY` when nothing can match."""
    if not where:
        return None
    schema.check_filter(where)
    conds = []
    for name, cond in where.items():
        c = _condition(name, cond)
        if c is EMPTY:
            return EMPTY
        if c is not None:
            conds.append(c)
    if not conds:
        return None
    from weaviate.classes.query import Filter

    return conds[0] if len(conds) == 1 else Filter.all_of(conds)


def object_uuid(key: str, collection: str) -> str:
    """The deterministic object UUID of a record key in a collection."""
    from weaviate.util import generate_uuid5

    return str(generate_uuid5(key, collection))
