"""Vector stores: one interface (:mod:`.base`), the embedded LanceDB backend (:mod:`.lance`), and the patch
index built on top of any backend (:mod:`.patches`).

Example:
    >>> store = open_store()                       # $RSRAG_HOME/store or the user's data dir   # doctest: +SKIP
    >>> patches = PatchStore(store)                                                            # doctest: +SKIP
"""

from __future__ import annotations

import os

from rsrag.tools.store.base import (
    Columns,
    FieldType,
    Range,
    ScalarField,
    SearchResult,
    Store,
    StoreTable,
    TableSchema,
    VectorField,
    Where,
)
from rsrag.tools.store.lance import LanceStore, LanceTable
from rsrag.tools.store.location import resolve_store_path, rsrag_home
from rsrag.tools.store.patches import IndexInfo, PatchStore, SceneStats, index_key, region_from_row

__all__ = [
    "Columns", "FieldType", "IndexInfo", "LanceStore", "LanceTable", "PatchStore", "Range", "ScalarField",
    "SceneStats", "SearchResult", "Store", "StoreTable", "TableSchema", "VectorField", "Where", "index_key",
    "as_patch_store", "open_store", "region_from_row", "resolve_store_path", "rsrag_home",
]


def open_store(path: str | os.PathLike[str] | None = None) -> Store:
    """Open the embedded store at ``path`` (explicit) or the default location (see :mod:`.location`)."""
    return LanceStore(path)


def as_patch_store(store: Store | PatchStore | str | os.PathLike[str] | None) -> PatchStore:
    """A :class:`PatchStore` over ``store``: a store, a patch store, a folder of an embedded store, or
    ``None`` for the default embedded store."""
    if isinstance(store, PatchStore):
        return store
    if isinstance(store, Store):
        return PatchStore(store)
    return PatchStore(open_store(store))
