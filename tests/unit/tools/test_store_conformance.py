"""One conformance suite for every store backend: LanceDB always; Weaviate when ``RSRAG_WEAVIATE_URL`` is set.

Run against a Weaviate server::

    docker run -d --rm --name rsrag-weaviate -p 8080:8080 -p 50051:50051 \
        -e AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true -e PERSISTENCE_DATA_PATH=/var/lib/weaviate \
        -e CLUSTER_HOSTNAME=node1 cr.weaviate.io/semitechnologies/weaviate:1.33.0
    RSRAG_WEAVIATE_URL=http://localhost:8080 .venv/bin/python -m pytest tests/unit/test_store_conformance.py -q

(``RSRAG_WEAVIATE_API_KEY`` for a server with API-key authentication.) The environment variables are read
here, by the tests only; the store itself takes URL and key as explicit arguments.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.errors import IndexBusyError, StoreError
from rsrag.tools.store import FieldType, Range, ScalarField, Store, TableSchema, VectorField
from rsrag.tools.store.lance import LanceStore

WEAVIATE_URL = os.environ.get("RSRAG_WEAVIATE_URL", "").strip()
DIM = 8
_F = ScalarField


def _schema(name: str, extra: tuple[ScalarField, ...] = ()) -> TableSchema:
    return TableSchema(
        name=name, key="id",
        fields=(_F("id", FieldType.STR), _F("cat", FieldType.STR), _F("n", FieldType.INT), _F("x", FieldType.FLOAT, nullable=True),
                _F("ok", FieldType.BOOL), _F("blob", FieldType.BYTES, nullable=True), _F("body", FieldType.STR), *extra),
        vectors=(VectorField("text", DIM), VectorField("image", DIM)), text_fields=("body",),
    )


BODIES = ["container ships in a busy harbour", "a dense pine forest on a mountain", "airport runway with parked planes",
          "storage tanks near the harbour", "farmland with green fields"]


def _columns(ids: list[str], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(ids)
    t = rng.standard_normal((n, DIM)).astype(np.float32)
    i = rng.standard_normal((n, DIM)).astype(np.float32)
    return {"id": ids, "cat": ["a" if k % 2 == 0 else "b" for k in range(n)], "n": list(range(n)),
            "x": [None if k == 1 else k * 0.5 for k in range(n)], "ok": [k % 3 == 0 for k in range(n)],
            "blob": [bytes([k, 255]) for k in range(n)], "body": [BODIES[k % len(BODIES)] for k in range(n)],
            "text": t / np.linalg.norm(t, axis=1, keepdims=True), "image": i / np.linalg.norm(i, axis=1, keepdims=True)}


BACKENDS = ["lance", pytest.param("weaviate", marks=[pytest.mark.weaviate, pytest.mark.skipif(
    not WEAVIATE_URL, reason="RSRAG_WEAVIATE_URL is not set: no Weaviate server to test against")])]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "lance":
        yield LanceStore(tmp_path / "store")
        return
    from rsrag.tools.store.weaviate import WeaviateStore

    prefix = "Rsragtest" + uuid.uuid4().hex[:8]
    ws = WeaviateStore(WEAVIATE_URL, os.environ.get("RSRAG_WEAVIATE_API_KEY") or None, prefix=prefix)
    try:
        yield ws
    finally:
        for name in ws.table_names():
            ws.drop_table(name)
        ws.close()


@pytest.fixture
def table(store: Store):  # type: ignore[no-untyped-def]
    t = store.table(_schema("conf_" + uuid.uuid4().hex[:8]))
    t.add(_columns([f"r{k}" for k in range(5)]))
    return t


def _all(table, where=None, fields=None) -> dict:  # type: ignore[no-untyped-def]
    out: dict = {}
    for batch in table.scan(where=where, fields=fields):
        for k, v in batch.items():
            out.setdefault(k, []).extend(list(v))
    return out


def test_round_trip_of_every_field_type(table) -> None:  # type: ignore[no-untyped-def]
    cols = _columns([f"r{k}" for k in range(5)])
    rows = _all(table)
    order = np.argsort(rows["id"])
    got = {k: [rows[k][j] for j in order] for k in rows}
    for name in ("id", "cat", "n", "x", "ok", "blob", "body"):
        assert got[name] == cols[name], name
    assert np.allclose(np.stack(got["text"]), cols["text"], atol=1e-6) and np.allclose(np.stack(got["image"]), cols["image"], atol=1e-6)
    assert table.count() == 5 and isinstance(table.version(), int)


def test_upsert_replaces_by_key(table) -> None:  # type: ignore[no-untyped-def]
    cols = _columns(["r1", "r9"], seed=3)
    cols["body"] = ["replaced text", "new row"]
    table.upsert(cols)
    assert table.count() == 6
    rows = _all(table, where={"id": "r1"}, fields=["id", "body"])
    assert rows == {"id": ["r1"], "body": ["replaced text"]}


def test_filters(table) -> None:  # type: ignore[no-untyped-def]
    ids = lambda where: sorted(_all(table, where, ["id"]).get("id", []))  # noqa: E731
    assert ids({"cat": "a"}) == ["r0", "r2", "r4"]
    assert ids({"id": ["r1", "r3", "zz"]}) == ["r1", "r3"]
    assert ids({"n": Range(1, 3)}) == ["r1", "r2", "r3"] and ids({"x": Range(lo=1.5)}) == ["r3", "r4"]
    assert ids({"ok": True, "cat": "a"}) == ["r0"]
    assert ids({"x": None}) == ["r1"]
    assert ids({"id": []}) == [] and table.count({"cat": "b"}) == 2
    with pytest.raises(StoreError, match="filterable fields"):
        table.count({"nope": 1})


def test_vector_search(table) -> None:  # type: ignore[no-untyped-def]
    cols = _columns([f"r{k}" for k in range(5)])
    res = table.search("image", cols["image"][3], k=2)
    assert res.rows[0]["id"] == "r3" and res.scores[0] == pytest.approx(1.0, abs=1e-4) and len(res.rows) == 2
    assert res.scores[0] >= res.scores[1] and "text" not in res.rows[0] and res.rows[0]["body"] == BODIES[3]
    res = table.search("text", cols["text"][3], k=5, where={"cat": "a"}, fields=["id", "text"])
    assert res.rows[0]["id"] == "r4" or res.rows[0]["id"] in ("r0", "r2")
    assert {r["id"] for r in res.rows} == {"r0", "r2", "r4"} and set(res.rows[0]) == {"id", "text"}
    assert np.asarray(res.rows[0]["text"]).shape == (DIM,)


def test_text_search_bm25(table) -> None:  # type: ignore[no-untyped-def]
    res = table.text_search("harbour", k=5, fields=["id"])
    assert sorted(r["id"] for r in res.rows) == ["r0", "r3"] and all(s > 0 for s in res.scores)
    assert [r["id"] for r in table.text_search("harbour", k=5, where={"cat": "b"}, fields=["id"]).rows] == ["r3"]
    assert table.text_search("zeppelin", k=5).rows == []
    assert table.text_search("planes runway", k=1, fields=["id"]).rows[0]["id"] == "r2"


def test_hybrid_search(table) -> None:  # type: ignore[no-untyped-def]
    cols = _columns([f"r{k}" for k in range(5)])
    q = cols["text"][1]
    assert table.hybrid_search("harbour", "text", q, k=1, alpha=1.0, fields=["id"]).rows[0]["id"] == "r1"
    bm25_first = table.hybrid_search("forest mountain", "text", cols["text"][4], k=1, alpha=0.0, fields=["id"])
    assert bm25_first.rows[0]["id"] == "r1"
    mixed = table.hybrid_search("harbour", "text", q, k=5, alpha=0.5, fields=["id"])
    assert {"r0", "r1", "r3"} <= {r["id"] for r in mixed.rows} and mixed.scores == sorted(mixed.scores, reverse=True)
    only_b = table.hybrid_search("harbour", "text", q, k=5, alpha=0.5, where={"cat": "b"}, fields=["id"])
    assert {r["id"] for r in only_b.rows} <= {"r1", "r3"}


def test_delete_and_tables(store: Store, table) -> None:  # type: ignore[no-untyped-def]
    table.delete({"cat": "b"})
    assert table.count() == 3 and table.count({"cat": "b"}) == 0
    with pytest.raises(StoreError, match="empty filter"):
        table.delete({})
    assert table.name in store.table_names()
    assert store.open_table(_schema("absent_" + uuid.uuid4().hex[:6])) is None
    with pytest.raises(StoreError):
        store.table(_schema(table.name, extra=(_F("more", FieldType.INT),)))
    store.drop_table(table.name)
    assert table.name not in store.table_names()


def test_bad_writes_are_refused(table) -> None:  # type: ignore[no-untyped-def]
    cols = _columns(["q1"])
    with pytest.raises(StoreError, match="shape"):
        table.add({**cols, "text": np.zeros((1, DIM + 1), np.float32)})
    with pytest.raises(StoreError, match="NaN"):
        table.add({**cols, "image": np.full((1, DIM), np.nan, np.float32)})
    with pytest.raises(StoreError, match="no fields"):
        table.add({**cols, "bogus": [1]})
    assert table.count() == 5


def test_lock_is_exclusive(store: Store) -> None:
    with store.lock("conformance"):
        with pytest.raises(IndexBusyError):
            with store.lock("conformance"):
                pass
    with store.lock("conformance"):
        pass
