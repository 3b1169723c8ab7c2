"""Trace storage: append-only, hash-chained events in SQLite (by default the sessions file, own tables).

Tables (all prefixed ``rsrag_trace_``):

* ``events``: one row per event; the payload is the event's canonical JSON. Rows of a thread form a hash
  chain (``prev_hash`` -> ``hash``); triggers refuse ``UPDATE`` and ``DELETE``.
* ``heads``: per thread, the number of events and the hash of the last one (detects removed tail events).
* ``runs``: one row per run (a question), for queries by thread, scene and time; derived from the events.

Every append is its own committed transaction, so a run that crashes keeps the steps written so far.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rsrag.agent.trace.events import TraceEvent
from rsrag.tools.errors import TraceError, TraceIntegrityError, TraceNotFoundError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rsrag_trace_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL,
    chain_index INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (thread_id, chain_index)
);
CREATE INDEX IF NOT EXISTS rsrag_trace_events_run ON rsrag_trace_events (run_id);
CREATE INDEX IF NOT EXISTS rsrag_trace_events_time ON rsrag_trace_events (time);
CREATE TRIGGER IF NOT EXISTS rsrag_trace_events_no_update BEFORE UPDATE ON rsrag_trace_events
BEGIN SELECT RAISE(ABORT, 'rsrag trace events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS rsrag_trace_events_no_delete BEFORE DELETE ON rsrag_trace_events
BEGIN SELECT RAISE(ABORT, 'rsrag trace events are append-only'); END;
CREATE TABLE IF NOT EXISTS rsrag_trace_heads (
    thread_id TEXT PRIMARY KEY, count INTEGER NOT NULL, head_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rsrag_trace_runs (
    run_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, scene_path TEXT, scene_fingerprint TEXT,
    question TEXT, started REAL, finished REAL, status TEXT, n_events INTEGER NOT NULL DEFAULT 0,
    answer TEXT
);
CREATE INDEX IF NOT EXISTS rsrag_trace_runs_thread ON rsrag_trace_runs (thread_id);
CREATE INDEX IF NOT EXISTS rsrag_trace_runs_scene ON rsrag_trace_runs (scene_fingerprint);
CREATE INDEX IF NOT EXISTS rsrag_trace_runs_started ON rsrag_trace_runs (started);
"""


@dataclass(frozen=True)
class RunRow:
    """One run (question) as listed by :meth:`TraceStore.runs`."""

    run_id: str
    thread_id: str
    scene_path: str | None
    scene_fingerprint: str | None
    question: str | None
    started: float | None
    finished: float | None
    status: str | None
    n_events: int
    answer: str | None


@dataclass
class VerifyReport:
    """Result of checking a thread's hash chain: ``ok``, the events checked, and each problem found."""

    thread_id: str
    events: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class TraceStore:
    """Trace events and runs in a SQLite file.

    Args:
        path: the SQLite file (usually the sessions file, so traces sit beside the checkpoints).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise TraceError(f"{self.path}: cannot open the trace tables ({exc})") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing ----------------------------------------------------------------------------------------

    def append(self, event: TraceEvent) -> TraceEvent:
        """Append ``event`` to its thread's chain (one committed transaction); returns it as stored."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                head = db.execute("SELECT count, head_hash FROM rsrag_trace_heads WHERE thread_id = ?",
                                  (event.thread_id,)).fetchone()
                count, prev = head if head else (0, "")
                stored = event.model_copy(update={"index": count, "prev_hash": prev, "seq": 0, "hash": ""})
                payload = stored.canonical()
                digest = hashlib.sha256(payload.encode()).hexdigest()
                cur = db.execute(
                    "INSERT INTO rsrag_trace_events (thread_id, chain_index, run_id, time, kind, payload, prev_hash, hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (stored.thread_id, count, stored.run_id, stored.time, stored.kind, payload, prev, digest))
                db.execute("INSERT INTO rsrag_trace_heads (thread_id, count, head_hash) VALUES (?, ?, ?) "
                           "ON CONFLICT(thread_id) DO UPDATE SET count = excluded.count, head_hash = excluded.head_hash",
                           (stored.thread_id, count + 1, digest))
                self._index_run(stored)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return stored.model_copy(update={"seq": int(cur.lastrowid or 0), "hash": digest})

    def _index_run(self, ev: TraceEvent) -> None:
        db = self._db
        if ev.kind == "run_start":
            prov = ev.provenance
            db.execute(
                "INSERT OR IGNORE INTO rsrag_trace_runs (run_id, thread_id, scene_path, scene_fingerprint, question,"
                " started, status) VALUES (?, ?, ?, ?, ?, ?, 'running')",
                (ev.run_id, ev.thread_id, prov.scene_path if prov else None, prov.scene_fingerprint if prov else None,
                 ev.question, ev.time))
        db.execute("UPDATE rsrag_trace_runs SET n_events = n_events + 1 WHERE run_id = ?", (ev.run_id,))
        if ev.kind == "run_end":
            db.execute("UPDATE rsrag_trace_runs SET finished = ?, status = ?, answer = ? WHERE run_id = ?",
                       (ev.time, ev.result or ev.status, ev.answer.text if ev.answer else None, ev.run_id))

    # --- reading ----------------------------------------------------------------------------------------

    def runs(
        self,
        thread: str | None = None,
        scene: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        """Runs, oldest first, filtered by thread, scene (fingerprint, or part of its path) and start time."""
        sql = "SELECT run_id, thread_id, scene_path, scene_fingerprint, question, started, finished, status, " \
              "n_events, answer FROM rsrag_trace_runs WHERE 1 = 1"
        args: list[object] = []
        if thread is not None:
            sql += " AND thread_id = ?"
            args.append(thread)
        if scene is not None:
            sql += " AND (scene_fingerprint = ? OR scene_path LIKE ?)"
            args += [scene, f"%{scene}%"]
        if since is not None:
            sql += " AND started >= ?"
            args.append(since)
        if until is not None:
            sql += " AND started <= ?"
            args.append(until)
        sql += " ORDER BY started, rowid"
        if limit is not None:
            sql = f"SELECT * FROM ({sql.replace('ORDER BY started, rowid', 'ORDER BY started DESC, rowid DESC')}" \
                  f" LIMIT {int(limit)}) ORDER BY started"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [RunRow(*row) for row in rows]

    def events(self, thread: str, run_id: str | None = None) -> list[TraceEvent]:
        """The events of a thread (of one run when ``run_id`` is given), in chain order.

        Raises:
            TraceNotFoundError: the thread has no trace.
        """
        sql = "SELECT seq, payload, hash FROM rsrag_trace_events WHERE thread_id = ?"
        args: list[object] = [thread]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY chain_index", args).fetchall()
        if not rows:
            known = ", ".join(r.thread_id for r in self.runs(limit=5)) or "none"
            raise TraceNotFoundError(f"no trace for thread {thread!r} in {self.path} (recent threads: {known})")
        return [TraceEvent.model_validate_json(payload).model_copy(update={"seq": seq, "hash": digest})
                for seq, payload, digest in rows]

    # --- integrity --------------------------------------------------------------------------------------

    def verify(self, thread: str) -> VerifyReport:
        """Check a thread's hash chain; each problem names the event at fault.

        Raises:
            TraceNotFoundError: the thread has no trace.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT chain_index, run_id, kind, payload, prev_hash, hash FROM rsrag_trace_events "
                "WHERE thread_id = ? ORDER BY chain_index", (thread,)).fetchall()
            head = self._db.execute("SELECT count, head_hash FROM rsrag_trace_heads WHERE thread_id = ?",
                                    (thread,)).fetchone()
        if not rows:
            raise TraceNotFoundError(f"no trace for thread {thread!r} in {self.path}")
        report = VerifyReport(thread_id=thread, events=len(rows))
        prev_hash, prev_label = "", ""
        for expected, (index, run_id, kind, payload, prev_col, digest) in enumerate(rows):
            label = f"event #{index} ({kind}, run {run_id[:8]})"
            try:
                event = TraceEvent.model_validate_json(payload)
                label = event.label()
            except ValueError:
                event = None
                report.problems.append(f"{label}: its stored content is not a valid event (edited)")
            if index != expected:
                report.problems.append(f"{label}: chain position {index}, expected {expected} (events removed or reordered)")
            if hashlib.sha256(payload.encode()).hexdigest() != digest:
                report.problems.append(f"{label}: content does not match its hash (the event was edited)")
            elif prev_col != prev_hash or (event is not None and event.prev_hash != prev_hash):
                culprit = prev_label or "the start of the chain"
                report.problems.append(f"{label}: link to the previous event is broken ({culprit} was edited or removed)")
            elif event is not None and (event.run_id, event.kind, event.index) != (run_id, kind, index):
                report.problems.append(f"{label}: indexed columns differ from its content (the row was edited)")
            prev_hash, prev_label = digest, label
        if head is None or head[0] != len(rows) or head[1] != prev_hash:
            report.problems.append(
                f"thread head says {head[0] if head else 0} events ending in {(head[1] if head else '')[:12]}, "
                f"found {len(rows)} ending in {prev_hash[:12]} (events after {prev_label} were removed)")
        return report

    def check(self, thread: str) -> VerifyReport:
        """:meth:`verify`, raising :class:`TraceIntegrityError` naming the first problem."""
        report = self.verify(thread)
        if not report.ok:
            more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            raise TraceIntegrityError(f"trace of thread {thread!r} is tampered: {report.problems[0]}{more}")
        return report
