"""Trace anchoring: the three edits a chain kept in its own file cannot see (a rewrite with recomputed
hashes, a deleted tail with a rewritten head, an edited runs row) are caught by a head recorded elsewhere,
an HMAC-signed head, or the runs check; exports carry the head."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from rsrag.agent.trace.events import AnswerRecord, Provenance, TraceEvent
from rsrag.agent.trace.export import export_geojson, export_jsonl, read_export_anchor
from rsrag.agent.trace.report import render_html
from rsrag.agent.trace.store import ChainHead, TraceStore, parse_head
from rsrag.tools.errors import TraceError

KEY = b"a secret only the recorder holds"


def _record(db: Path, thread: str = "t1", runs: int = 2, key: bytes | None = None) -> TraceStore:
    store = TraceStore(db, hmac_key=key)
    for n in range(runs):
        run = f"run{n:04d}" + "0" * 24
        prov = Provenance(scene_path=f"/data/scene{n}.tif", scene_fingerprint=f"fp{n}")
        store.append(TraceEvent(run_id=run, thread_id=thread, time=time.time(), kind="run_start",
                                question=f"where are the tanks {n}?", provenance=prov))
        store.append(TraceEvent(run_id=run, thread_id=thread, time=time.time(), kind="tool", tool="search_patches",
                                arguments={"phrases": ["tanks"]}, result="3 regions"))
        answer = AnswerRecord(text=f"tanks at E00000{n}", cited=[f"E00000{n}"], confidence=0.7, supported=True)
        store.append(TraceEvent(run_id=run, thread_id=thread, time=time.time(), kind="run_end", result="ok",
                                answer=answer))
    return store


def _rewrite(db: Path, thread: str, keep: int | None = None, edit: dict | None = None) -> None:
    """What an attacker with write access does: drop the triggers, edit or truncate, recompute the chain
    and the head so that the chain is consistent again."""
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER rsrag_trace_events_no_update")
    con.execute("DROP TRIGGER rsrag_trace_events_no_delete")
    rows = con.execute("SELECT seq, chain_index, payload FROM rsrag_trace_events WHERE thread_id = ? "
                       "ORDER BY chain_index", (thread,)).fetchall()
    if keep is not None:
        con.execute("DELETE FROM rsrag_trace_events WHERE thread_id = ? AND chain_index >= ?", (thread, keep))
        rows = rows[:keep]
    prev = ""
    for seq, index, payload in rows:
        event = TraceEvent.model_validate_json(payload)
        if edit and index == 0:
            event = event.model_copy(update=edit)
        event = event.model_copy(update={"prev_hash": prev})
        text = event.canonical()
        digest = hashlib.sha256(text.encode()).hexdigest()
        con.execute("UPDATE rsrag_trace_events SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    (text, prev, digest, seq))
        prev = digest
    con.execute("UPDATE rsrag_trace_heads SET count = ?, head_hash = ? WHERE thread_id = ?", (len(rows), prev, thread))
    if edit and "question" in edit:
        con.execute("UPDATE rsrag_trace_runs SET question = ? WHERE thread_id = ? AND question LIKE '%0?'",
                    (edit["question"], thread))
    con.commit()
    con.close()


def test_a_consistent_rewrite_passes_alone_but_not_against_an_anchor(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    head = _record(db).head("t1")
    assert head.events == 6
    _rewrite(db, "t1", edit={"question": "where are the secret bunkers 0?"})
    store = TraceStore(db)
    alone = store.verify("t1")
    assert alone.ok and "not anchored" in alone.proves()  # what verify alone cannot see, and says so
    anchored = store.verify("t1", anchor=head)
    assert not anchored.ok and "is not in the stored chain" in anchored.problems[0]
    assert not store.verify("t1", anchor=parse_head(head.hash, "t1")).ok  # the hash alone also anchors


def test_a_deleted_tail_with_a_rewritten_head_is_caught_by_the_anchor(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    head = _record(db).head("t1")
    _rewrite(db, "t1", keep=3)
    con = sqlite3.connect(db)
    con.execute("DELETE FROM rsrag_trace_runs WHERE run_id LIKE 'run0001%'")
    con.commit()
    store = TraceStore(db)
    assert store.verify("t1").ok
    report = store.verify("t1", anchor=head)
    assert not report.ok and "has only 3 events" in report.problems[0]


def test_an_hmac_key_catches_a_rewrite_without_any_anchor(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    store = _record(db, key=KEY)
    good = store.verify("t1")
    assert good.ok and good.signed and "HMAC signature holds" in good.proves()
    _rewrite(db, "t1", keep=3)
    report = TraceStore(db, hmac_key=KEY).verify("t1")
    assert not report.ok and any("signature does not match" in p for p in report.problems)
    assert not TraceStore(db, hmac_key=b"another key").verify("t1").ok


def test_an_edited_question_or_answer_in_the_runs_table_is_named(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    _record(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE rsrag_trace_runs SET question = 'something else' WHERE run_id LIKE 'run0000%'")
    con.execute("UPDATE rsrag_trace_runs SET answer = 'no tanks' WHERE run_id LIKE 'run0001%'")
    con.commit()
    problems = TraceStore(db).verify("t1").problems
    assert any("runs row run00000" in p and "question differs" in p for p in problems)
    assert any("runs row run00010" in p and "answer differs" in p for p in problems)


def test_later_events_are_reported_as_not_covered(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    store = _record(db, runs=1)
    head = store.head("t1")
    _record(db, runs=1).close()  # another question on the same thread after the head was taken
    report = TraceStore(db).verify("t1", anchor=head)
    assert report.ok and report.anchored_at == 2 and "3 later event(s) not covered" in report.proves()


def test_every_export_carries_the_head_and_anchors_the_chain(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    store = _record(db, key=KEY)
    events, head = store.events("t1"), store.head("t1")
    assert head.signature
    files = {"jsonl": export_jsonl(events, head=head), "geojson": json.dumps(export_geojson(events, head=head)),
             "html": render_html(events, head=head)}
    for fmt, text in files.items():
        path = tmp_path / f"t1.{fmt}"
        path.write_text(text)
        anchor, exported = read_export_anchor(path)
        assert anchor == head, fmt
        assert len(exported) == (6 if fmt == "jsonl" else 0)
        assert TraceStore(db, hmac_key=KEY).verify("t1", anchor=anchor, exported=exported).ok
    last = json.loads(files["jsonl"].splitlines()[-1])
    assert last["record"] == "chain_head" and last["events"] == 6 and last["hash"] == head.hash
    _rewrite(db, "t1", edit={"question": "edited 0?"})
    anchor, exported = read_export_anchor(tmp_path / "t1.jsonl")
    report = TraceStore(db).verify("t1", anchor=anchor, exported=exported)
    assert any("event #0 differs from the export" in p for p in report.problems)
    forged = ChainHead(thread_id="t1", events=anchor.events, hash=anchor.hash, signature="0" * 64)
    assert any("anchor's signature" in p for p in TraceStore(db, hmac_key=KEY).verify("t1", anchor=forged).problems)


def test_bad_anchors_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="is not a chain head"):
        parse_head("abc", "t1")
    (tmp_path / "x.jsonl").write_text('{"index": 0, "hash": "x"}\n')
    with pytest.raises(TraceError, match="carries no chain head"):
        read_export_anchor(tmp_path / "x.jsonl")
    with pytest.raises(TraceError, match="cannot be read"):
        read_export_anchor(tmp_path / "missing.jsonl")


def test_the_cli_exports_and_verifies_against_the_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import main

    db = tmp_path / "s.sqlite"
    _record(db).close()
    out = tmp_path / "t1.jsonl"
    assert main(["trace", "export", "t1", "-o", str(out), "--db", str(db)]) == 0
    assert main(["trace", "verify", "t1", "--db", str(db)]) == 0
    said = capsys.readouterr().out
    assert "not anchored" in said and "chain head" in said
    head = TraceStore(db).head("t1").line()
    assert main(["trace", "verify", "t1", "--head", head, "--db", str(db)]) == 0
    assert "match the head recorded elsewhere" in capsys.readouterr().out
    _rewrite(db, "t1", keep=3)
    assert main(["trace", "verify", "t1", "--export", str(out), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "is tampered" in err and "Traceback" not in err
    assert main(["trace", "verify", "t1", "--head", "nope", "--db", str(db)]) == 2
    assert "is not a chain head" in capsys.readouterr().err


def test_a_reader_opens_while_a_writer_holds_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rsrag.agent.trace.store as store_module

    db = tmp_path / "s.sqlite"
    _record(db).close()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # e.g. a server appending a step
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    try:
        started = time.monotonic()
        reader = TraceStore(db)  # `rsrag trace verify` meanwhile: no write lock needed for a set-up file
        assert reader.verify("t1").ok and time.monotonic() - started < 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
