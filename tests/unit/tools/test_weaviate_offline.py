"""The Weaviate backend without a server: schema/config objects, filters, batch use and query arguments
checked against the installed weaviate-client v4 (every call our code makes is bound to the real method's
signature), and an unreachable server reported as StoreUnavailableError naming the URL."""

from __future__ import annotations

import contextlib
import importlib
import inspect
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rsrag.tools.errors import StoreError, StoreUnavailableError
from rsrag.tools.store import FieldType, Range, ScalarField, TableSchema, VectorField
from rsrag.tools.store import weaviate_schema as ws
from rsrag.tools.store.weaviate import WeaviateStore, WeaviateTable

_F = ScalarField
SCHEMA = TableSchema(name="kb_test", key="id", fields=(
    _F("id", FieldType.STR), _F("body", FieldType.STR), _F("cat", FieldType.STR), _F("n", FieldType.INT),
    _F("x", FieldType.FLOAT, nullable=True), _F("ok", FieldType.BOOL), _F("blob", FieldType.BYTES, nullable=True)),
    vectors=(VectorField("text", 4), VectorField("image", 4)), text_fields=("body",))

REAL = {
    "near_vector": ("weaviate.collections.queries.near_vector.query.sync", "_NearVectorQuery"),
    "bm25": ("weaviate.collections.queries.bm25.query.sync", "_BM25Query"),
    "hybrid": ("weaviate.collections.queries.hybrid.query.sync", "_HybridQuery"),
    "fetch_objects": ("weaviate.collections.queries.fetch_objects.query.sync", "_FetchObjectsQuery"),
    "add_object": ("weaviate.collections.batch.collection", "_BatchCollection"),
    "fixed_size": ("weaviate.collections.batch.collection", "_BatchCollectionWrapper"),
    "delete_many": ("weaviate.collections.data.sync", "_DataCollection"),
    "over_all": ("weaviate.collections.aggregations.over_all.sync", "_OverAll"),
    "create": ("weaviate.collections.collections.sync", "_Collections"),
}


def _bind(method: str, *args: Any, **kwargs: Any) -> None:
    mod, cls = REAL[method]
    inspect.signature(getattr(getattr(importlib.import_module(mod), cls), method)).bind(None, *args, **kwargs)


class FakeCollection:
    """Records calls; checks each against the real client method's signature."""

    def __init__(self, failed: list | None = None, objects: list | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.added: list[dict] = []
        outer = self

        class Batch:
            failed_objects = failed or []

            @contextlib.contextmanager
            def fixed_size(self, **kw: Any):  # type: ignore[no-untyped-def]
                _bind("fixed_size", **kw)
                outer.calls.append(("fixed_size", kw))
                yield SimpleNamespace(add_object=outer._add)

        def rec(name: str, result: Any):  # type: ignore[no-untyped-def]
            def call(*a: Any, **kw: Any) -> Any:
                _bind(name, *a, **kw)
                outer.calls.append((name, kw))
                return result
            return call

        ret = SimpleNamespace(objects=objects or [])
        self.batch = Batch()
        self.query = SimpleNamespace(near_vector=rec("near_vector", ret), bm25=rec("bm25", ret), hybrid=rec("hybrid", ret),
                                     fetch_objects=rec("fetch_objects", ret))
        self.data = SimpleNamespace(delete_many=rec("delete_many", SimpleNamespace(matches=0)))
        self.aggregate = SimpleNamespace(over_all=rec("over_all", SimpleNamespace(total_count=3)))

    def _add(self, **kw: Any) -> None:
        _bind("add_object", **kw)
        self.added.append(kw)


def _table(col: FakeCollection) -> WeaviateTable:
    return WeaviateTable(WeaviateStore("http://localhost:8080"), SCHEMA, col)


def test_collection_and_property_mapping() -> None:
    from weaviate.classes.config import DataType, Tokenization

    assert ws.collection_name("kb_test") == "Rsrag_kb_test"
    with pytest.raises(StoreError, match="collection name"):
        ws.collection_name("bad-name")
    props = {p.name: p for p in ws.properties(SCHEMA)}
    assert set(props) == {"id_", "body", "cat", "n", "x", "ok", "blob"}  # `id` is reserved by Weaviate
    assert props["body"].dataType == DataType.TEXT and props["body"].tokenization == Tokenization.WORD and props["body"].indexSearchable
    assert props["cat"].tokenization == Tokenization.FIELD and not props["cat"].indexSearchable
    assert props["n"].dataType == DataType.INT and props["n"].indexRangeFilters
    assert props["x"].dataType == DataType.NUMBER and props["ok"].dataType == DataType.BOOL and props["blob"].dataType == DataType.BLOB
    args = ws.create_arguments(SCHEMA)
    _bind("create", **args)
    assert [v.name for v in args["vector_config"]] == ["text", "image"]
    assert all(v.vectorIndexConfig.distance.value == "cosine" for v in args["vector_config"])
    assert args["inverted_index_config"].indexNullState is True


def test_schema_check_against_an_existing_collection() -> None:
    from weaviate.classes.config import DataType

    props = [SimpleNamespace(name=p.name, data_type=p.dataType) for p in ws.properties(SCHEMA)]
    good = SimpleNamespace(properties=props, vector_config={"text": None, "image": None})
    assert ws.schema_problems(SCHEMA, good) == []
    props[3] = SimpleNamespace(name="n", data_type=DataType.TEXT)
    bad = SimpleNamespace(properties=props[:-1], vector_config={"text": None})
    problems = ws.schema_problems(SCHEMA, bad)
    assert "property 'n' is text, expected int" in problems and "property 'blob' is missing" in problems
    assert "named vector 'image' is missing" in problems


def test_filters() -> None:
    f = ws.build_filter(SCHEMA, {"cat": "a"})
    assert (f.target, f.operator.value, f.value) == ("cat", "Equal", "a")
    f = ws.build_filter(SCHEMA, {"id": ["r1", "r2"]})
    assert (f.target, f.operator.value, f.value) == ("id_", "ContainsAny", ["r1", "r2"])
    f = ws.build_filter(SCHEMA, {"n": Range(1, 3), "x": None, "ok": np.bool_(True)})
    assert type(f).__name__ == "_FilterAnd"
    assert ws.build_filter(SCHEMA, {"id": []}) is ws.EMPTY and ws.build_filter(SCHEMA, None) is None
    with pytest.raises(StoreError, match="filterable"):
        ws.build_filter(SCHEMA, {"blob": b"x"})
    with pytest.raises(StoreError, match="finite"):
        ws.build_filter(SCHEMA, {"x": float("nan")})


def _cols(n: int = 2) -> dict:
    return {"id": [f"r{i}" for i in range(n)], "body": ["a b"] * n, "cat": ["c"] * n, "n": list(range(n)), "x": [None] * n,
            "ok": [True] * n, "blob": [b"\x00\xff"] * n, "text": np.eye(4, dtype=np.float32)[:n], "image": np.eye(4, dtype=np.float32)[:n]}


def test_batch_import_uses_fixed_size_batches_and_reports_failed_objects() -> None:
    col = FakeCollection()
    _table(col).upsert(_cols())
    assert col.calls[0] == ("fixed_size", {"batch_size": 200, "concurrent_requests": 2})
    first = col.added[0]
    assert first["properties"]["id_"] == "r0" and "x" not in first["properties"] and first["properties"]["blob"] == "AP8="
    assert first["vector"] == {"text": [1.0, 0.0, 0.0, 0.0], "image": [1.0, 0.0, 0.0, 0.0]}
    assert first["uuid"] == ws.object_uuid("r0", "Rsrag_kb_test") != col.added[1]["uuid"]
    failed = [SimpleNamespace(message="vector lengths don't match", object_=SimpleNamespace(properties={"id_": "r1"}))]
    with pytest.raises(StoreError, match=r"rejected 1 of 2 objects.*'r1': vector lengths"):
        _table(FakeCollection(failed=failed)).upsert(_cols())
    with pytest.raises(StoreError, match="shape"):
        _table(FakeCollection()).upsert({**_cols(), "text": np.zeros((2, 5), np.float32)})


def test_query_arguments_match_the_client() -> None:
    obj = SimpleNamespace(properties={"id_": "r0", "body": "a b", "n": 1, "blob": "AP8="}, vector={"text": [1, 0, 0, 0]},
                          metadata=SimpleNamespace(distance=0.25, score=2.0))
    col = FakeCollection(objects=[obj])
    t = _table(col)
    res = t.search("text", np.ones(4), k=3, where={"cat": "c"}, fields=["id", "n", "blob", "text"])
    assert res.rows[0]["id"] == "r0" and res.rows[0]["blob"] == b"\x00\xff" and res.scores == [0.75]
    assert np.allclose(res.rows[0]["text"], [1, 0, 0, 0])
    name, kw = col.calls[-1]
    assert name == "near_vector" and kw["target_vector"] == "text" and kw["include_vector"] == ["text"]
    assert kw["return_properties"] == ["id_", "n", "blob"] and kw["limit"] == 3
    assert t.text_search("harbour", k=2).scores == [2.0] and col.calls[-1][1]["query_properties"] == ["body"]
    t.hybrid_search("harbour", "image", np.ones(4), k=2, alpha=0.3)
    name, kw = col.calls[-1]
    assert name == "hybrid" and kw["alpha"] == 0.3 and kw["target_vector"] == "image" and kw["fusion_type"].value == "FUSION_TYPE_RELATIVE_SCORE"
    assert t.count({"cat": "c"}) == 3
    t.delete({"cat": "c"})
    assert col.calls[-1][0] == "delete_many"
    assert t.search("text", np.ones(4), k=3, where={"id": []}).rows == []


def test_unreachable_server_names_the_url() -> None:
    store = WeaviateStore("http://127.0.0.1:9", grpc_port=10, timeout_s=2)
    with pytest.raises(StoreUnavailableError, match=r"Weaviate at http://127.0.0.1:9 .*unreachable"):
        store.table_names()
    args = WeaviateStore("https://demo.example.org", api_key="k").connection_arguments()
    assert args["http_secure"] and args["grpc_secure"] and args["http_port"] == 443 and args["auth_credentials"].api_key == "k"
    with pytest.raises(StoreError, match="not an http"):
        WeaviateStore("ftp://x")
