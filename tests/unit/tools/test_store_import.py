"""Opening the embedded store imports lancedb without building the REST client's validators up front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, sys
import pydantic
from pydantic._internal import _validate_call

built = []
original_init = _validate_call.ValidateCallWrapper.__init__
def counting_init(self, *args, **kwargs):
    built.append(1)
    original_init(self, *args, **kwargs)
_validate_call.ValidateCallWrapper.__init__ = counting_init

from rsrag.tools.store import FieldType, LanceStore, ScalarField, TableSchema, VectorField
store = LanceStore(sys.argv[1])
schema = TableSchema(name="t", key="id", fields=(ScalarField("id", FieldType.STR),), vectors=(VectorField("v", 2),))
table = store.table(schema)
table.add({"id": ["a", "b"], "v": [[1.0, 0.0], [0.0, 1.0]]})
hits = table.search("v", [1.0, 0.0], k=1)
nearest = hits.rows[0]["id"]
at_import = len(built)

from lance_namespace_urllib3_client.api.table_api import TableApi
error = ""
try:
    TableApi().describe_table(id=123)  # wrong type: must still be refused by pydantic
except pydantic.ValidationError as exc:
    error = type(exc).__name__
import pydantic.validate_call_decorator as decorator_module
print(json.dumps({"at_import": at_import, "after_call": len(built), "error": error, "nearest": nearest,
                  "restored": pydantic.validate_call is decorator_module.validate_call}))
"""


def test_store_opens_without_building_rest_validators_and_they_still_validate(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "store")], capture_output=True, text=True,
                         check=True, timeout=120)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["nearest"] == "a"  # the store works as before
    assert report["at_import"] == 0  # none of the REST client's few hundred validators built to open a store
    assert report["after_call"] >= 1  # the called method built its own on first call...
    assert report["error"] == "ValidationError"  # ...and refuses a bad argument exactly as pydantic would
    assert report["restored"]  # pydantic.validate_call is pydantic's own again for everyone else


def test_import_lancedb_returns_the_module_once() -> None:
    from rsrag.tools.store._lancedb import import_lancedb

    first = import_lancedb()
    assert first is import_lancedb()
    assert first.__name__ == "lancedb"


_RACE = r"""
import json, sys, threading
from rsrag.tools.store import LanceStore, FieldType, ScalarField, TableSchema, VectorField

barrier, errors, opened = threading.Barrier(4), [], []

def open_store(i):
    barrier.wait()  # four searches open their store at the same moment, on a fresh process
    try:
        store = LanceStore(sys.argv[1] + str(i))
        schema = TableSchema(name="t", key="id", fields=(ScalarField("id", FieldType.STR),), vectors=(VectorField("v", 2),))
        store.table(schema).add({"id": ["a"], "v": [[1.0, 0.0]]})
        opened.append(i)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")

threads = [threading.Thread(target=open_store, args=(i,)) for i in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"opened": sorted(opened), "errors": errors}))
"""


def test_stores_opened_from_several_threads_at_once_all_open(tmp_path: Path) -> None:
    # the agent runs a question's searches in parallel: on a fresh process each one's first store access
    # imports lancedb; a thread must never be handed the module before its import has finished
    out = subprocess.run([sys.executable, "-c", _RACE, str(tmp_path / "store")], capture_output=True, text=True,
                         check=True, timeout=120)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"opened": [0, 1, 2, 3], "errors": []}
