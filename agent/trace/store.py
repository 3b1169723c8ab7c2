"""Trace storage: append-only, hash-chained events in SQLite (by default the sessions file, own tables).

Tables (all prefixed ``rsrag_trace_``):

* ``events``: one row per event; the payload is the event's canonical JSON. Rows of a thread form a hash
  chain (``prev_hash`` -> ``hash``); triggers refuse ``UPDATE`` and ``DELETE``.
* ``heads``: per thread, the number of events and the hash of the last one (detects removed tail events),
  and, when a key is set, an HMAC-SHA256 signature of that head.
* ``runs``: one row per run (a question), for queries by thread, scene and time; derived from the events
  (:meth:`TraceStore.verify` checks that its question, answer and scene still match the events).

Every append is its own committed transaction, so a run that crashes keeps the steps written so far. The
file is in SQLite's WAL mode with a busy timeout, so a server's threads and other processes append at once.

What :meth:`TraceStore.verify` proves. Alone, it proves the stored chain is internally consistent: no
event was edited, removed or reordered *without the chain being rewritten*. It cannot detect a rewrite of
the whole chain by someone who can write the file (drop the triggers, edit, recompute every hash and the
head), since everything it checks is in the same file. To detect that, anchor the chain:

* a :class:`ChainHead` recorded elsewhere (``rsrag trace export`` writes it into every export; print it with
  ``rsrag trace verify THREAD`` and keep it): ``verify(thread, anchor=head)`` proves the chain still holds
  that head at that position, i.e. the events up to it are the ones that existed when the head was taken
  (events appended later are reported as not covered);
* an HMAC key (``hmac_key``): every head is signed as it is written, and ``verify`` checks the stored
  head's signature, so a rewrite by someone without the key is detected; it cannot detect a rollback to an
  older head whose signature was kept, nor anything done by someone who holds the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rsrag.agent.trace.events import TraceEvent
from rsrag.tools.errors import TraceError, TraceIntegrityError, TraceNotFoundError

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another connection's write to finish before "database is locked"."""

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


class ChainHead(BaseModel):
    """The head of a thread's chain: its number of events and the hash of the last one, optionally signed.

    Recorded elsewhere (an export, a ticket, a log), it anchors the chain: see :meth:`TraceStore.verify`.
    """

    model_config = ConfigDict(frozen=True)

    thread_id: str
    events: int
    hash: str
    signature: str | None = None
    algorithm: str = "sha256-chain; hmac-sha256"

    def line(self) -> str:
        """``HASH:EVENTS`` (what ``rsrag trace verify --head`` takes)."""
        return f"{self.hash}:{self.events}"


def sign_head(key: bytes, thread_id: str, events: int, head_hash: str) -> str:
    """HMAC-SHA256 (hex) of a thread head under ``key``."""
    return hmac.new(key, f"rsrag-trace-head\n{thread_id}\n{events}\n{head_hash}".encode(), hashlib.sha256).hexdigest()


def parse_head(text: str, thread_id: str) -> ChainHead:
    """A head given on the command line: ``HASH`` or ``HASH:EVENTS``.

    Raises:
        TraceError: not a 64-digit hex hash (with an optional event count).
    """
    digest, _, count = text.strip().partition(":")
    digest = digest.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or (count and not count.isdigit()):
        raise TraceError(f"--head {text[:80]!r} is not a chain head: give the 64-digit hash, optionally "
                         "followed by :EVENTS, as `rsrag trace verify` or an export prints it")
    return ChainHead(thread_id=thread_id, events=int(count) if count else 0, hash=digest)


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
    head: ChainHead | None = None
    anchored_at: int | None = None
    """Chain index of the anchor's head when an anchor was given and found (events after it are not covered)."""
    signed: bool = False
    """Whether the stored head's HMAC signature was checked and holds."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def proves(self) -> str:
        """What this verification proves, in one line."""
        if not self.ok:
            return f"{len(self.problems)} problem(s) found"
        said = [f"{self.events} events of thread {self.thread_id} are consistent"]
        if self.anchored_at is not None:
            rest = self.events - self.anchored_at - 1
            said.append(f"events #0-#{self.anchored_at} match the head recorded elsewhere"
                        + (f" ({rest} later event(s) not covered by it)" if rest else ""))
        if self.signed:
            said.append("the head's HMAC signature holds")
        if self.anchored_at is None and not self.signed:
            said.append("not anchored: a rewrite of the whole chain would not be detected (give --head or "
                        "--export, or set an HMAC key)")
        return "; ".join(said)


class TraceStore:
    """Trace events and runs in a SQLite file.

    Args:
        path: the SQLite file (usually the sessions file, so traces sit beside the checkpoints).
        hmac_key: when given, every head written is signed with it and :meth:`verify` checks the signature.
    """

    def __init__(self, path: str | os.PathLike[str], hmac_key: bytes | None = None) -> None:
        self.path = Path(path)
        self.hmac_key = hmac_key or None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self._schema_complete():  # a reader of a set-up file never needs the write lock
                self._set_up()
        except sqlite3.DatabaseError as exc:
            raise TraceError(f"{self.path}: cannot open the trace tables ({exc})") from exc
        self._lock = threading.Lock()

    def _schema_complete(self) -> bool:
        names = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'rsrag_trace_%'")}
        needed = {"rsrag_trace_events", "rsrag_trace_heads", "rsrag_trace_runs", "rsrag_trace_events_no_update",
                  "rsrag_trace_events_no_delete"}
        if not needed <= names:
            return False
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(rsrag_trace_heads)")}
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        return "signature" in columns and str(mode).lower() == "wal"

    def _set_up(self) -> None:
        """Create the tables (and migrate older files), once, in one write transaction."""
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("BEGIN IMMEDIATE")  # one schema set-up at a time, across processes
        try:
            for statement in _SCHEMA.split(";\n"):
                if statement.strip():
                    self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(rsrag_trace_heads)")}
            if "signature" not in columns:  # files written before heads were signed
                self._db.execute("ALTER TABLE rsrag_trace_heads ADD COLUMN signature TEXT")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

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
                signature = sign_head(self.hmac_key, stored.thread_id, count + 1, digest) if self.hmac_key else None
                db.execute("INSERT INTO rsrag_trace_heads (thread_id, count, head_hash, signature) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT(thread_id) DO UPDATE SET count = excluded.count, head_hash = excluded.head_hash,"
                           " signature = excluded.signature", (stored.thread_id, count + 1, digest, signature))
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

    def head(self, thread: str) -> ChainHead:
        """The thread's head as recorded (with its signature, when one was written).

        Raises:
            TraceNotFoundError: the thread has no trace.
        """
        with self._lock:
            row = self._db.execute("SELECT count, head_hash, signature FROM rsrag_trace_heads WHERE thread_id = ?",
                                   (thread,)).fetchone()
        if row is None:
            raise TraceNotFoundError(f"no trace for thread {thread!r} in {self.path}")
        return ChainHead(thread_id=thread, events=int(row[0]), hash=str(row[1]), signature=row[2])

    def verify(self, thread: str, anchor: ChainHead | None = None,
               exported: list[tuple[int, str]] | None = None) -> VerifyReport:
        """Check a thread's hash chain, its runs rows, and (when given) an anchor; each problem names the event
        or row at fault. See the module docstring for what this proves with and without an anchor.

        Args:
            thread: the thread.
            anchor: a head recorded elsewhere: the chain must hold that hash (at that position, when the head
                says how many events it covered); its signature is checked when it has one and a key is set.
            exported: ``(chain index, hash)`` of events in an export: each must match the stored event.

        Raises:
            TraceNotFoundError: the thread has no trace.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT chain_index, run_id, kind, payload, prev_hash, hash FROM rsrag_trace_events "
                "WHERE thread_id = ? ORDER BY chain_index", (thread,)).fetchall()
            head = self._db.execute("SELECT count, head_hash, signature FROM rsrag_trace_heads WHERE thread_id = ?",
                                    (thread,)).fetchone()
            runs = self._db.execute(
                "SELECT run_id, thread_id, scene_path, scene_fingerprint, question, answer, n_events "
                "FROM rsrag_trace_runs WHERE thread_id = ?", (thread,)).fetchall()
        if not rows:
            raise TraceNotFoundError(f"no trace for thread {thread!r} in {self.path}")
        report = VerifyReport(thread_id=thread, events=len(rows))
        events: list[TraceEvent | None] = []
        prev_hash, prev_label = "", ""
        for expected, (index, run_id, kind, payload, prev_col, digest) in enumerate(rows):
            label = f"event #{index} ({kind}, run {run_id[:8]})"
            try:
                event = TraceEvent.model_validate_json(payload)
                label = event.label()
            except ValueError:
                event = None
                report.problems.append(f"{label}: its stored content is not a valid event (edited)")
            events.append(event)
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
        if head is not None:
            report.head = ChainHead(thread_id=thread, events=int(head[0]), hash=str(head[1]), signature=head[2])
        self._check_runs(report, [e for e in events if e is not None], runs)
        if self.hmac_key is not None and head is not None:
            if not head[2]:
                report.problems.append("the thread head carries no signature although a key is set (written "
                                       "without the key, or the signature was removed)")
            elif not hmac.compare_digest(head[2], sign_head(self.hmac_key, thread, int(head[0]), str(head[1]))):
                report.problems.append("the thread head's signature does not match (the chain or its head was "
                                       "rewritten without the key, or the key differs)")
            else:
                report.signed = True
        if anchor is not None:
            self._check_anchor(report, anchor, [r[5] for r in rows])
        for index, digest in exported or []:
            if index >= len(rows):
                report.problems.append(f"the export has event #{index}, which the stored chain no longer has")
            elif rows[index][5] != digest:
                report.problems.append(f"event #{index} differs from the export (stored {rows[index][5][:12]}, "
                                       f"exported {digest[:12]})")
        return report

    def _check_anchor(self, report: VerifyReport, anchor: ChainHead, hashes: list[str]) -> None:
        if anchor.thread_id != report.thread_id:
            report.problems.append(f"the anchor is the head of thread {anchor.thread_id!r}, not {report.thread_id!r}")
            return
        if anchor.signature and self.hmac_key is not None and not hmac.compare_digest(
                anchor.signature, sign_head(self.hmac_key, anchor.thread_id, anchor.events, anchor.hash)):
            report.problems.append("the anchor's signature does not match its head (the recorded head was "
                                   "altered, or the key differs)")
        if anchor.events:
            position = anchor.events - 1
            if position >= len(hashes) or hashes[position] != anchor.hash:
                found = f"has {hashes[position][:12]} there" if position < len(hashes) else f"has only {len(hashes)} events"
                report.problems.append(
                    f"the anchored head ({anchor.events} events ending in {anchor.hash[:12]}) is not in the stored "
                    f"chain, which {found}: the trace was rewritten or truncated since the head was recorded")
                return
        elif anchor.hash not in hashes:
            report.problems.append(f"the anchored head {anchor.hash[:12]} is in no event of the stored chain: the "
                                   "trace was rewritten or truncated since the head was recorded")
            return
        else:
            position = hashes.index(anchor.hash)
        report.anchored_at = position

    @staticmethod
    def _check_runs(report: VerifyReport, events: list[TraceEvent], runs: list[tuple]) -> None:
        """The runs rows must say what the events say (question, answer, scene, number of events)."""
        by_run: dict[str, list[TraceEvent]] = {}
        for ev in events:
            by_run.setdefault(ev.run_id, []).append(ev)
        seen = set()
        for run_id, _thread_id, scene_path, fingerprint, question, answer, n_events in runs:
            seen.add(run_id)
            own = by_run.get(run_id)
            if not own:
                report.problems.append(f"runs row {run_id[:8]} has no events in the chain (added or left over)")
                continue
            start = next((e for e in own if e.kind == "run_start"), None)
            end = next((e for e in own if e.kind == "run_end"), None)
            expected = {
                "question": start.question if start else None,
                "scene path": start.provenance.scene_path if start and start.provenance else None,
                "scene fingerprint": start.provenance.scene_fingerprint if start and start.provenance else None,
                "answer": (end.answer.text if end.answer else None) if end else None,
                "number of events": len(own),
            }
            stored = {"question": question, "scene path": scene_path, "scene fingerprint": fingerprint,
                      "answer": answer, "number of events": n_events}
            for name, value in expected.items():
                if stored[name] != value:
                    report.problems.append(f"runs row {run_id[:8]}: its {name} differs from the run's events "
                                           "(the row was edited)")
        for run_id in by_run.keys() - seen:
            report.problems.append(f"run {run_id[:8]} has events but no runs row (the row was deleted)")

    def check(self, thread: str) -> VerifyReport:
        """:meth:`verify`, raising :class:`TraceIntegrityError` naming the first problem."""
        report = self.verify(thread)
        if not report.ok:
            more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            raise TraceIntegrityError(f"trace of thread {thread!r} is tampered: {report.problems[0]}{more}")
        return report
