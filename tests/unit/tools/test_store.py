"""The store interface on the embedded LanceDB backend: location, versions, filters, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsrag.tools.errors import IndexBusyError, StoreError
from rsrag.tools.store import (
    FieldType,
    LanceStore,
    Range,
    ScalarField,
    TableSchema,
    VectorField,
    open_store,
    resolve_store_path,
)
from tests.index_doubles import readonly_view

SCHEMA = TableSchema(
    name="things",
    key="id",
    fields=(ScalarField("id", FieldType.STR), ScalarField("kind", FieldType.STR), ScalarField("n", FieldType.INT),
            ScalarField("note", FieldType.STR, nullable=True)),
    vectors=(VectorField("image", 4), VectorField("text", 3)),
)


def _rows(ids: list[str], kinds: list[str], seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return {"id": ids, "kind": kinds, "n": list(range(len(ids))),
            "image": rng.standard_normal((len(ids), 4)), "text": rng.standard_normal((len(ids), 3))}


def test_location_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSRAG_HOME", str(tmp_path / "home"))
    assert resolve_store_path() == tmp_path / "home" / "store"
    assert resolve_store_path(tmp_path / "explicit") == tmp_path / "explicit"  # explicit argument wins
    monkeypatch.delenv("RSRAG_HOME")
    default = resolve_store_path()
    assert default.name == "store" and "rsrag" in str(default)


def test_nothing_is_created_until_the_first_write(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    assert store.table_names() == [] and store.open_table(SCHEMA) is None
    assert not (tmp_path / "s").exists()


def test_versions_filters_and_named_vectors(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    table = store.table(SCHEMA)
    v1 = table.add(_rows(["a", "b", "c"], ["x", "y", "x"]))
    v2 = table.upsert({**_rows(["c", "d"], ["z", "y"], seed=1), "note": ["changed", None]})
    assert v2 > v1 and table.version() == v2
    assert table.count() == 4
    assert table.count({"kind": "x"}) == 1 and table.count({"kind": ["y", "z"]}) == 3
    assert table.count({"n": Range(1, None)}) == 2
    rows = [r for b in table.scan({"id": "c"}) for r in zip(b["id"], b["note"], b["text"])]
    assert rows[0][:2] == ("c", "changed") and rows[0][2].shape == (3,)
    query = _rows(["c", "d"], ["z", "y"], seed=1)["text"][1]  # the text vector of "d"
    res = table.search("text", query, k=2, where={"kind": ["y", "z"]})
    assert res.rows[0]["id"] == "d" and res.scores[0] == pytest.approx(1.0, abs=1e-5)
    assert res.version == v2 and all(r["kind"] in ("y", "z") for r in res.rows)
    v3 = table.delete({"kind": "z"})
    assert v3 > v2 and table.count() == 3
    # a second handle on the same folder sees the same table and versions
    again = LanceStore(tmp_path / "s").table(SCHEMA)
    assert again.version() == v3 and again.count() == 3


def test_bad_rows_are_rejected_before_anything_is_written(tmp_path: Path) -> None:
    table = open_store(tmp_path / "s").table(SCHEMA)
    table.add(_rows(["a"], ["x"]))
    version = table.version()
    bad = _rows(["b", "c"], ["x", "y"])
    bad["image"] = np.full((2, 4), np.nan)
    with pytest.raises(StoreError, match="NaN"):
        table.add(bad)
    with pytest.raises(StoreError, match="shape"):
        table.add({**_rows(["b"], ["x"]), "image": np.zeros((1, 5))})
    with pytest.raises(StoreError, match="filter"):
        table.count({"nope": 1})
    assert table.version() == version and table.count() == 1


def test_schema_clash_is_a_clear_error(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    store.table(SCHEMA).add(_rows(["a"], ["x"]))
    other = TableSchema(name="things", key="id", fields=(ScalarField("id", FieldType.STR),), vectors=(VectorField("image", 8),))
    with pytest.raises(StoreError, match="different schema"):
        LanceStore(tmp_path / "s").table(other)


def test_lock_is_exclusive(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    with store.lock("index-abc"):
        with pytest.raises(IndexBusyError, match="locked"):
            with LanceStore(tmp_path / "s").lock("index-abc"):
                pass
    with LanceStore(tmp_path / "s").lock("index-abc"):
        pass


def test_read_only_store_can_be_read_but_not_written(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    store.table(SCHEMA).add(_rows(["a", "b"], ["x", "y"]))
    with readonly_view(tmp_path / "s") as ro:
        ro_store = open_store(ro)
        table = ro_store.table(SCHEMA)
        assert table.count() == 2
        assert len(table.search("image", np.ones(4), k=1).rows) == 1
        with pytest.raises(StoreError, match="not writable"):
            table.add(_rows(["c"], ["x"]))
        with pytest.raises(StoreError):
            open_store(ro / "new").table(SCHEMA)
    assert open_store(tmp_path / "s").table(SCHEMA).count() == 2
