"""Run traces: events written as the run goes (and kept after a crash), provenance, queries, integrity, CLI."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.context import Budgets
from rsrag.agent.settings import load_settings
from rsrag.agent.trace import TraceSettings, TraceStore, Tracer
from rsrag.tools.raster import open_scene
from tests.rasters import write_raster
from tests.scripted import ScriptedChatModel, call, last_evidence
from tests.configured import settings_for

TINY = "rsrag-tiny-test:random"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def scene_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    return write_raster(tmp_path / "scene.tif", rng.integers(0, 255, (3, 256, 320), dtype=np.uint8))


def traced_analyst(tmp_path: Path, model: object, trace: TraceSettings | bool | None = None,
                   budgets: Budgets | None = None) -> Analyst:
    """An analyst with the tiny random encoder, everything under ``tmp_path``."""
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    return Analyst(settings_for(tmp_path, budgets=budgets, trace=trace), model=model)


def search_zoom_answer() -> ScriptedChatModel:
    """Search, a bad zoom, an unknown tool, a zoom on the last place found, and an answer citing the zoom."""
    return ScriptedChatModel(steps=[
        call("search_patches", phrases=["red roofs"], top_k=3),
        call("zoom", bbox=[0, 0, 10, 10_000]),
        call("teleport", where="mars"),
        lambda msgs: call("zoom", evidence_id=last_evidence(msgs, "search_patches")[-1]),
        lambda msgs: call("answer", text=f"The red roofs are at {last_evidence(msgs, 'zoom')[0]}. They look dense.",
                          evidence_ids=last_evidence(msgs, "zoom"), confidence=0.8),
    ])


def record(tmp_path: Path, scene: Path, thread: str = "t1", trace: TraceSettings | None = None) -> Path:
    """Run :func:`search_zoom_answer` on ``thread``; returns the sessions file holding the trace."""
    with traced_analyst(tmp_path, search_zoom_answer(), trace) as analyst:
        analyst.ask(scene, "where are the red roofs?", thread_id=thread)
    return tmp_path / "sessions.sqlite"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from rsrag.agent.interfaces.cli import main

    code = main(args)
    captured = capsys.readouterr()  # results on stdout, errors on stderr
    return code, captured.out + captured.err


def test_every_step_is_recorded_with_evidence_models_and_checkpoints(tmp_path: Path, scene_path: Path) -> None:
    with traced_analyst(tmp_path, search_zoom_answer()) as analyst:
        answer = analyst.ask(scene_path, "where are the red roofs?", thread_id="t1")
        history = {s.config["configurable"]["checkpoint_id"]: s.metadata["step"]
                   for s in analyst.graph.get_state_history({"configurable": {"thread_id": "t1"}})}
        events = analyst.tracer.store.events("t1")
    kinds = [e.kind for e in events]
    assert kinds == ["run_start", "node", "model", "tool", "model", "tool", "model", "tool", "model", "tool",
                     "model", "tool", "answer", "run_end"]
    tools = [e for e in events if e.kind == "tool"]
    assert [t.tool for t in tools] == ["search_patches", "zoom", "teleport", "zoom", "answer"]
    search, bad_zoom, unknown, zoom, answer_call = tools
    assert search.arguments == {"phrases": ["red roofs"], "top_k": 3} and search.evidence  # every place found
    assert all(e.bbox and e.score is not None and e.index_version is not None for e in search.evidence)
    assert bad_zoom.status == "error" and bad_zoom.error.startswith("WindowError") and "outside the image" in bad_zoom.error
    assert unknown.status == "error" and "not a valid tool" in unknown.error and unknown.arguments == {"where": "mars"}
    assert zoom.evidence[0].path == "zoom" and Path(zoom.evidence[0].crop).is_file()
    assert zoom.arguments == {"evidence_id": search.evidence[-1].id}
    assert answer_call.cited == answer.cited == [zoom.evidence[0].id]
    models = [e for e in events if e.kind == "model"]
    assert all(m.model == "ScriptedChatModel" and m.prompt_version == "agent_system.v1" for m in models)
    assert all(m.latency_ms is not None and len(m.prompt_digest or "") == 64 for m in models)
    assert models[0].output["data"]["tool_calls"][0]["name"] == "search_patches"
    assert all(t.latency_ms is not None for t in (search, bad_zoom, zoom, answer_call)) and unknown.latency_ms is None
    final = events[-1]
    assert final.result == "ok" and final.answer.cited == answer.cited and final.answer.text == answer.text
    # every step links to the checkpoint LangGraph wrote after it
    steps = {e.step for e in events if e.step is not None}
    assert steps <= {int(s) for s in final.checkpoints}
    assert all(history[cid] == int(step) for step, cid in final.checkpoints.items())
    assert [e.index for e in events] == list(range(len(events)))
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:]))


def test_provenance_is_recorded_once_per_run(tmp_path: Path, scene_path: Path) -> None:
    from rsrag.tools.knowledge import KnowledgeEntry

    with traced_analyst(tmp_path, search_zoom_answer(), TraceSettings(sha256=True)) as analyst:
        analyst.workspace.knowledge.add([KnowledgeEntry(
            id="k1", name="Tank farm", category="industrial", description="Storage tanks by the harbour.")])
        analyst.ask(scene_path, "where are the red roofs?", thread_id="t1")
    store = TraceStore(tmp_path / "sessions.sqlite")
    starts = [e for e in store.events("t1") if e.provenance is not None]
    assert len(starts) == 1 and starts[0].kind == "run_start"
    prov = starts[0].provenance
    with open_scene(scene_path) as scene:
        assert prov.scene_fingerprint == scene.fingerprint and prov.scene_size == [320, 256]
    assert prov.scene_sha256 == hashlib.sha256(scene_path.read_bytes()).hexdigest()
    assert prov.encoder_spec == TINY and prov.encoder_id.startswith(TINY) and "#" in prov.encoder_id
    assert isinstance(prov.index_version, int) and prov.index_table.startswith("patches_") and prov.index_key
    assert prov.prompts["agent_system"] == "agent_system.v1" and prov.package_version
    # every setting is recorded (secrets masked), by section, with the chat model backend's name
    assert prov.settings["store"]["tiling"] == "grid:64" and prov.settings["budgets"]["max_steps"] == 10
    assert prov.settings["encoder"]["spec"] == TINY and prov.settings["backend"]
    assert prov.knowledge_table and isinstance(prov.knowledge_version, int) and prov.notes == []
    store.close()
    # without the setting, no full-file hash is computed
    record(tmp_path, scene_path, thread="t2")
    assert TraceStore(tmp_path / "sessions.sqlite").events("t2")[0].provenance.scene_sha256 is None


def test_runs_are_queryable_by_thread_scene_and_time(tmp_path: Path, scene_path: Path) -> None:
    before = time.time()
    record(tmp_path, scene_path, thread="a")
    record(tmp_path, scene_path, thread="b")
    store = TraceStore(tmp_path / "sessions.sqlite")
    assert [r.thread_id for r in store.runs()] == ["a", "b"]
    assert [r.thread_id for r in store.runs(thread="b")] == ["b"]
    fingerprint = store.runs()[0].scene_fingerprint
    assert len(store.runs(scene=fingerprint)) == 2 and len(store.runs(scene="scene.tif")) == 2
    assert store.runs(scene="other.tif") == []
    assert len(store.runs(since=before)) == 2 and store.runs(until=before) == []
    assert all(r.status == "ok" and r.n_events == 14 for r in store.runs())


def test_a_crash_mid_run_keeps_the_steps_so_far(tmp_path: Path, scene_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from tests.unit.agent.test_trace import traced_analyst
        from tests.scripted import ScriptedChatModel, call

        def crash(messages):
            os._exit(7)  # the process dies: no cleanup, no run_end

        model = ScriptedChatModel(steps=[call("search_patches", phrases=["fields"], top_k=2), crash])
        analyst = traced_analyst(Path({str(tmp_path)!r}), model)
        analyst.ask({str(scene_path)!r}, "where are the fields?", thread_id="crashed")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 7, proc.stderr[-2000:]
    store = TraceStore(tmp_path / "sessions.sqlite")
    events = store.events("crashed")
    assert [e.kind for e in events] == ["run_start", "node", "model", "tool"]
    assert events[-1].tool == "search_patches" and len(events[-1].evidence) == 2
    assert store.runs(thread="crashed")[0].status == "running"  # never finished
    assert store.verify("crashed").ok


def test_an_error_in_a_step_is_recorded_and_the_run_closed(tmp_path: Path, scene_path: Path) -> None:
    def fail(messages: list) -> None:
        raise RuntimeError("model server went away")

    model = ScriptedChatModel(steps=[call("search_patches", phrases=["fields"]), fail])
    with traced_analyst(tmp_path, model) as analyst, pytest.raises(RuntimeError, match="went away"):
        analyst.ask(scene_path, "where are the fields?", thread_id="err")
    events = TraceStore(tmp_path / "sessions.sqlite").events("err")
    assert [e.kind for e in events][-2:] == ["error", "run_end"]
    assert events[-2].node == "model" and "model server went away" in events[-2].error
    assert events[-1].result == "error" and "RuntimeError" in events[-1].error


def test_streaming_is_traced_and_tracing_can_be_off(tmp_path: Path, scene_path: Path) -> None:
    with traced_analyst(tmp_path, search_zoom_answer()) as analyst:
        steps = list(analyst.stream(scene_path, "where are the red roofs?", thread_id="s"))
    assert steps[-1].update.get("answer") is not None
    events = TraceStore(tmp_path / "sessions.sqlite").events("s")
    assert [e.kind for e in events][-2:] == ["answer", "run_end"] and events[-1].result == "ok"
    off = tmp_path / "off"
    with traced_analyst(off, search_zoom_answer(), trace=False) as analyst:
        analyst.ask(scene_path, "where are the red roofs?", thread_id="quiet")
    assert TraceStore(off / "sessions.sqlite").runs() == []


def test_events_are_append_only_and_a_tampered_event_is_named(tmp_path: Path, scene_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = record(tmp_path, scene_path)
    store = TraceStore(db)
    assert store.verify("t1").ok
    search = next(e for e in store.events("t1") if e.tool == "search_patches")
    con = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE rsrag_trace_events SET kind = 'node' WHERE seq = ?", (search.seq,))
    # a tamperer who drops the guard and moves a piece of evidence is still caught, by name
    con.execute("DROP TRIGGER rsrag_trace_events_no_update")
    old_box = json.dumps(search.evidence[0].bbox, separators=(",", ":"))
    payload = con.execute("SELECT payload FROM rsrag_trace_events WHERE seq = ?", (search.seq,)).fetchone()[0]
    assert old_box in payload
    con.execute("UPDATE rsrag_trace_events SET payload = ? WHERE seq = ?", (payload.replace(old_box, "[0,0,1,1]", 1), search.seq))
    con.commit()
    report = store.verify("t1")
    assert len(report.problems) == 1
    assert f"event #{search.index} (tool search_patches step {search.step}" in report.problems[0]
    assert "does not match its hash" in report.problems[0]
    code, out = run_cli(["trace", "verify", "t1", "--db", str(db)], capsys)
    assert code == 2 and f"event #{search.index} (tool search_patches" in out and "tampered" in out
    # re-hashing the edited row moves the failure to the link from the next event, which names the edited one
    fixed = hashlib.sha256(payload.replace(old_box, "[0,0,1,1]", 1).encode()).hexdigest()
    con.execute("DROP TRIGGER rsrag_trace_events_no_update")  # opening the store (the CLI did) restored the guard
    con.execute("UPDATE rsrag_trace_events SET hash = ? WHERE seq = ?", (fixed, search.seq))
    con.commit()
    problem = store.verify("t1").problems[0]
    assert f"event #{search.index + 1}" in problem and f"event #{search.index} (tool search_patches" in problem
    # removing the last event is caught by the thread head
    con.execute("DROP TRIGGER rsrag_trace_events_no_delete")
    con.execute("DELETE FROM rsrag_trace_events WHERE seq = (SELECT max(seq) FROM rsrag_trace_events)")
    con.commit()
    assert any("were removed" in p for p in store.verify("t1").problems)


def test_cli_list_and_show(tmp_path: Path, scene_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = record(tmp_path, scene_path, thread="cli-thread")
    code, out = run_cli(["trace", "list", "--db", str(db)], capsys)
    assert code == 0 and "cli-thread" in out and "roofs?" in out and " ok " in out
    code, out = run_cli(["trace", "list", "--db", str(db), "--scene", "nowhere.tif"], capsys)
    assert code == 0 and "no traced runs match" in out
    code, out = run_cli(["trace", "show", "cli-thread", "--db", str(db)], capsys)
    assert code == 0
    for text in ("question: where are the red roofs?", "search_patches(", "teleport", "outside the image",
                 "answer (confidence 0.80", "run ok"):
        assert text in out
    code, out = run_cli(["trace", "show", "no-such-thread", "--db", str(db)], capsys)
    assert code == 2 and "no trace for thread 'no-such-thread'" in out and "cli-thread" in out
    code, out = run_cli(["trace", "list", "--db", str(db), "--since", "yesterday"], capsys)
    assert code == 2 and "is not an ISO date" in out


def test_opentelemetry_spans_follow_genai_conventions(tmp_path: Path, scene_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with traced_analyst(tmp_path, search_zoom_answer()) as analyst:
        assert analyst.tracer.provider is None  # no exporter configured: no spans
        analyst.tracer = Tracer(analyst.sessions_path, TraceSettings(), graph=analyst.graph, tracer_provider=provider)
        analyst.ask(scene_path, "where are the red roofs?", thread_id="otel")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["invoke_agent rsrag-analyst"]
    assert root.attributes["gen_ai.conversation.id"] == "otel"
    chat = spans["chat ScriptedChatModel"]
    assert chat.attributes["gen_ai.operation.name"] == "chat" and chat.parent.span_id == root.context.span_id
    tool = spans["execute_tool search_patches"]
    (search,) = [e for e in TraceStore(tmp_path / "sessions.sqlite").events("otel") if e.tool == "search_patches"]
    assert tool.attributes["gen_ai.tool.name"] == "search_patches"
    assert list(tool.attributes["rsrag.evidence.ids"]) == [e.id for e in search.evidence] and search.evidence
    assert spans["execute_tool teleport"].status.status_code.name == "ERROR"


def test_otel_exporter_comes_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from rsrag.tools.errors import ConfigError

    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert isinstance(Tracer(tmp_path / "t.sqlite", TraceSettings(otel="console")).provider, TracerProvider)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")  # the standard variable, read when trace.otel is empty
    with pytest.raises(ConfigError, match="unknown OpenTelemetry exporter 'carrier-pigeon'"):
        _ = Tracer(tmp_path / "t.sqlite", TraceSettings()).provider
    monkeypatch.setenv("RSRAG_TRACE__OTEL", "carrier-pigeon")  # rsrag's own setting is checked when settings load
    with pytest.raises(ConfigError, match="'trace.otel' \\(from environment variable RSRAG_TRACE__OTEL\\)"):
        load_settings()


def test_rsrag_ask_leaves_a_trace_in_the_default_sessions_file(tmp_path: Path, scene_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    code, out = run_cli(["ask", str(scene_path), "where are the fields?", "--json", "--encoder", TINY,
                         "--tiling", "grid:64", "--store", str(tmp_path / "store")], capsys)
    assert code == 0
    thread = json.loads(out)["thread_id"]
    code, out = run_cli(["trace", "show", thread], capsys)  # default database: $RSRAG_HOME/sessions.sqlite
    assert code == 0 and "question: where are the fields?" in out and "rule (rule" in out and "run ok" in out
