"""Replay: the recorded model outputs drive the graph again; a changed image or index shows as divergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsrag.agent.trace import TraceStore
from rsrag.agent.trace.replay import replay_thread
from rsrag.tools.store import as_patch_store
from tests.rasters import write_raster
from tests.scripted import ScriptedChatModel, call, last_evidence
from tests.unit.agent.test_trace import record, run_cli, scene_path, traced_analyst  # noqa: F401 (fixture)


def test_unchanged_inputs_replay_without_divergence(tmp_path: Path, scene_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = record(tmp_path, scene_path)
    # a follow-up question in the same thread refers to earlier evidence; the replay keeps the thread
    follow_up = ScriptedChatModel(steps=[
        lambda msgs: call("search_similar", evidence_id=last_evidence(msgs, "zoom")[0], top_k=2),
        lambda msgs: call("answer", text="Similar places.", evidence_ids=last_evidence(msgs, "search_similar")),
    ])
    with traced_analyst(tmp_path, follow_up) as analyst:
        analyst.ask(scene_path, "anything like it?", thread_id="t1")
    report = replay_thread(TraceStore(db), "t1")
    assert report.ok, [d.message for d in report.divergences]
    assert report.runs == 2 and report.tool_calls == 7 and report.changes == []
    code, out = run_cli(["trace", "replay", "t1", "--db", str(db)], capsys)
    assert code == 0 and "no divergence: 2 run(s), 7 tool call(s) replayed" in out


def test_a_changed_image_is_reported(tmp_path: Path, scene_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = record(tmp_path, scene_path)
    rng = np.random.default_rng(99)
    write_raster(scene_path, rng.integers(0, 255, (3, 256, 320), dtype=np.uint8))  # same path, new pixels
    report = replay_thread(TraceStore(db), "t1")
    assert not report.ok
    kinds = {(d.kind, d.message.split(" ")[0]) for d in report.divergences}
    assert ("evidence", "search_patches") in kinds  # new scene, new evidence ids
    assert ("status", "zoom") in kinds  # the recorded zoom names an evidence id the replay never found
    assert any(c.startswith("run 1: scene_fingerprint:") for c in report.changes)
    code, out = run_cli(["trace", "replay", "t1", "--db", str(db)], capsys)
    assert code == 2 and "divergence run 1 evidence: search_patches call" in out and "diverged from its trace" in out


def test_a_changed_index_is_reported(tmp_path: Path, scene_path: Path) -> None:
    db = record(tmp_path, scene_path)
    prov = TraceStore(db).events("t1")[0].provenance
    patches = as_patch_store(tmp_path / "store")
    info = patches.info(prov.index_key)
    table = patches.patch_table(info)
    rows = next(iter(table.scan(where={"index_key": info.key})))
    rows["vector"] = np.roll(np.asarray(rows["vector"]), 3, axis=0)  # vectors moved to other patches
    table.upsert(rows)
    report = replay_thread(TraceStore(db), "t1")
    assert not report.ok
    assert {d.kind for d in report.divergences} & {"evidence", "score"}
    assert any(d.message.startswith("search_patches call") for d in report.divergences)
    assert any(c.startswith("run 1: index_version:") for c in report.changes)
    assert not any("scene_fingerprint" in c for c in report.changes)


def test_a_run_that_needs_more_model_steps_than_recorded_is_reported(tmp_path: Path, scene_path: Path) -> None:
    model = ScriptedChatModel(steps=[
        call("search_patches", phrases=["pond"]),
        call("answer", text="A pond.", evidence_ids=["Edeadbe"]),  # rejected: the model is asked again
        lambda msgs: call("answer", text="The pond.", evidence_ids=last_evidence(msgs, "search_patches")[:1]),
    ])
    with traced_analyst(tmp_path, model) as analyst:
        analyst.ask(scene_path, "is there a pond?", thread_id="p")
    store = TraceStore(tmp_path / "sessions.sqlite")
    assert replay_thread(store, "p").ok
    # drop the last recorded model output from what the replay sees: the graph asks for one step more
    events = store.events("p")
    last_model = [e for e in events if e.kind == "model"][-1]
    store.events = lambda thread, run_id=None: [e for e in events if e.seq != last_model.seq]  # type: ignore[method-assign]
    report = replay_thread(store, "p")
    assert any(d.kind == "model" and "only 2 model step(s)" in d.message for d in report.divergences)
