"""The sessions file: one SQLite file holding the LangGraph checkpoints (and, in their own tables, traces).

:func:`open_checkpointer` opens it once per :class:`~rsrag.agent.interfaces.api.Analyst` so that any number
of a server's threads and other processes can use it at the same time: WAL mode (readers never block the
writer), a busy timeout (a writer waits for another instead of failing with "database is locked"), and the
checkpointer's tables set up here, once, inside one write transaction, before any thread can race to do it
lazily.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from rsrag.tools.errors import StoreError

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another connection's write before it fails."""


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection to the sessions file in WAL mode with a busy timeout, shareable across threads.

    Raises:
        StoreError: the file cannot be opened as SQLite (a folder, not a database, unwritable).
    """
    file = Path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(file, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable in WAL mode at each checkpoint; no torn writes
    except (sqlite3.DatabaseError, OSError) as exc:
        raise StoreError(f"sessions file {file} cannot be opened as SQLite ({exc}); check the path "
                         "(paths.sessions) or move the broken file away") from None
    return conn


def open_checkpointer(path: str | os.PathLike[str], serde: Any = None) -> tuple[sqlite3.Connection, Any]:
    """The connection and a LangGraph ``SqliteSaver`` over it, with its tables already set up.

    Raises:
        StoreError: the file cannot be opened or its tables cannot be created.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = connect(path)
    saver = SqliteSaver(conn, serde=serde)
    try:
        with saver.lock:
            saver.setup()  # CREATE TABLE IF NOT EXISTS under the busy timeout; never again lazily in a request
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"sessions file {path}: cannot set up the checkpoint tables ({exc})") from None
    return conn, saver
