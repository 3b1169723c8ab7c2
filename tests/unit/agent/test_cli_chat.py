"""`rsrag chat`: streamed steps, crops, /evidence, /zoom N through the agent, /trace, /new, Ctrl-C, threads."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from rich.console import Console

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.interfaces.cli.chat_session import ChatSession
from tests.rasters import write_raster
from tests.scripted import ScriptedChatModel, call, last_evidence
from tests.configured import settings_for

TINY = "rsrag-tiny-test:random"


@pytest.fixture
def scene_path(tmp_path: Path) -> Path:
    data = np.random.default_rng(5).integers(0, 255, (3, 192, 256), dtype=np.uint8)
    return write_raster(tmp_path / "scene.tif", data)


def make_analyst(tmp_path: Path, model: ScriptedChatModel) -> Analyst:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    return Analyst(settings_for(tmp_path), model=model)


def drive(analyst: Analyst, scene: Path, script: str, thread: str | None = "t1") -> tuple[str, ChatSession]:
    buffer = io.StringIO()
    session = ChatSession(analyst, scene, thread, Console(file=buffer, width=200, color_system=None))
    session.run(io.StringIO(textwrap.dedent(script)))
    return buffer.getvalue(), session


def zoom_target(messages: list[BaseMessage]) -> str:
    """The evidence id the chat's /zoom instruction names (what a VLM would read from the question)."""
    question = [m for m in messages if m.type == "human"][-1].text
    return question.split("evidence ")[1].split()[0]


def test_chat_streams_steps_and_handles_commands(tmp_path: Path, scene_path: Path) -> None:
    model = ScriptedChatModel(steps=[
        call("search_patches", phrases=["red roofs"], top_k=3),
        lambda msgs: call("zoom", evidence_id=last_evidence(msgs, "search_patches")[0]),
        call("zoom", bbox=[200, 150, 250, 190]),  # a second place, elsewhere
        lambda msgs: call("answer", text=f"Roofs at {last_evidence(msgs, 'zoom')[0]}.",
                          evidence_ids=last_evidence(msgs, "search_patches")[:1] + last_evidence(msgs, "zoom")),
        lambda msgs: call("zoom", evidence_id=zoom_target(msgs), max_side=32),
        lambda msgs: call("answer", text=f"Closer: {last_evidence(msgs, 'zoom')[0]}.", evidence_ids=last_evidence(msgs, "zoom")),
    ])
    with make_analyst(tmp_path, model) as analyst:
        out, session = drive(analyst, scene_path, """\
            where are the red roofs?
            /evidence
            /zoom 9
            /zoom 2
            /trace
            /frobnicate
            /help
            /new
            /quit
            this line is never read
        """)
        ledger = analyst.evidence("t1")
    # streamed steps: the tool calls in compact form, then the tool results, with the crop's path
    assert "call search_patches(phrases=['red roofs'], top_k=3)" in out
    assert "tools search_patches: " in out
    crops = [line.split("crop saved: ")[1].strip() for line in out.splitlines() if "crop saved: " in line]
    assert len(crops) == 3 and all(Path(c).is_file() for c in crops)
    assert "Roofs at E" in out and "confidence" in out
    # /evidence lists the thread's places: the zoom on a search result is the same place, one row with both ids
    places = len({e.bbox and tuple(e.bbox) for e in ledger.values()})
    assert f"evidence of thread t1: {places} places, {len(ledger)} records" in out and places < len(ledger)
    table = out.split("evidence of thread t1")[1].split("you> /zoom 9")[0]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == places
    for ev in ledger.values():
        assert sum(", ".join(map(str, ev.bbox)) in row for row in rows) == 1  # each box on exactly one row
    # /zoom 9 is out of range; /zoom 2 asks the agent to zoom on the last answer's 2nd place (the box zoomed on)
    assert "usage: /zoom N, with N from 1 to 2" in out
    second = next(e for e in ledger.values() if e.bbox == [200, 150, 250, 190])
    assert f"Zoom on evidence {second.id}" in out and f"call zoom(evidence_id='{second.id}', max_side=32)" in out
    assert "Closer: E" in out
    # /trace prints the thread's steps; unknown commands and /help answer without leaving
    assert "trace of thread t1" in out or "thread t1: " in out
    assert "unknown command /frobnicate" in out and "/zoom N" in out
    assert "new thread" in out and session.thread != "t1"
    assert "this line is never read" not in out and out.rstrip().endswith(f"bye (thread {session.thread})")
    assert model.steps == []


def test_ctrl_c_stops_the_question_not_the_session(tmp_path: Path, scene_path: Path) -> None:
    def interrupt(_: list[BaseMessage]) -> AIMessage:
        raise KeyboardInterrupt

    model = ScriptedChatModel(steps=[
        call("search_patches", phrases=["pond"], top_k=2),
        interrupt,
        call("search_patches", phrases=["pond"], top_k=2),
        lambda msgs: call("answer", text=f"Pond at {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
    ])
    with make_analyst(tmp_path, model) as analyst:
        out, _ = drive(analyst, scene_path, "is there a pond?\nand now?\n")
        history = analyst.history("t1")
    assert "stopped" in out and "Pond at E" in out and out.rstrip().endswith("bye (thread t1)")
    # every tool call in the thread has its result, so the history stays valid for any chat model
    calls = {c["id"] for m in history if isinstance(m, AIMessage) for c in m.tool_calls}
    assert calls == {m.tool_call_id for m in history if isinstance(m, ToolMessage)}


def test_ctrl_c_between_tool_calls_closes_the_dangling_calls(tmp_path: Path, scene_path: Path) -> None:
    with make_analyst(tmp_path, ScriptedChatModel(steps=[call("zoom", bbox=[0, 0, 64, 64])])) as analyst:
        session = ChatSession(analyst, scene_path, "t2", Console(file=io.StringIO()))
        stream = analyst.stream(scene_path, "look at the corner", thread_id="t2")
        assert next(stream).node == "prepare" and next(stream).node == "model"
        stream.close()  # the question stops after the model asked for a tool and before the tool ran
        session._close_dangling_calls()
        last = analyst.history("t2")[-1]
    assert isinstance(last, ToolMessage) and last.status == "error" and "Ctrl-C" in last.text


def test_thread_is_resumed(tmp_path: Path, scene_path: Path) -> None:
    model = ScriptedChatModel(steps=[
        call("search_patches", phrases=["fields"], top_k=2),
        lambda msgs: call("answer", text=f"Fields at {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
    ])
    with make_analyst(tmp_path, model) as analyst:
        drive(analyst, scene_path, "where are the fields?\n", thread="keep")
    with make_analyst(tmp_path, ScriptedChatModel(steps=[])) as analyst:
        out, session = drive(analyst, scene_path, "/evidence\n", thread="keep")
    assert "continuing thread keep: 1 earlier question(s), 2 evidence record(s)" in out
    assert "last answer: Fields at E" in out and session.last_answer is not None


def test_chat_over_piped_stdin_with_the_rule_policy(tmp_path: Path, scene_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from tests.tiny_encoder import register_tiny_model_config
        register_tiny_model_config()
        from rsrag.agent.interfaces.cli import main
        sys.exit(main(["--encoder", {TINY!r}, "chat", {str(scene_path)!r}, "--tiling", "grid:64", "--thread", "piped"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], input="where are the fields?\n/zoom 1\n/evidence\n",
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "call search_patches(phrases=['fields'])" in out and "Retrieval-only" in out
    assert out.count("crop saved: ") >= 2 and "zoomed on e" in out.lower()
    # the /zoom answer shows the confidence of the evidence it cites, beside the policy's own
    zoomed = out.split("you> /zoom 1")[1].split("you> /evidence")[0]
    assert "cited evidence confidence" in zoomed and "answer confidence" in zoomed
    assert "evidence of thread piped" in out and out.rstrip().endswith("bye (thread piped)")


def test_chat_bad_image_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "rsrag.agent.interfaces.cli", "chat", str(tmp_path / "none.tif")], input="hi\n",
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path))
    assert proc.returncode == 2 and "none.tif: no such file" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_chat_needs_an_image_or_a_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import main

    assert main(["chat"]) == 2
    err = capsys.readouterr().err
    assert "give an image (rsrag chat IMAGE) or a catalog (rsrag chat --catalog NAME)" in err and "Traceback" not in err
    assert main(["chat", "--catalog", "nosuch", "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "catalog 'nosuch' has no scenes" in err and "Traceback" not in err


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "RSRAG_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
