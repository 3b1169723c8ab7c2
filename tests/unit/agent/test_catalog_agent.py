"""The analyst across a catalog of scenes, with the rule policy and the bundled encoder on real chips.

Storage tanks are planted in scene ``b`` only (see :mod:`tests.catalog_scenes`): a question across the
catalog must name ``b``, cite sites on the planted cells of ``b``, and open ``b`` when it zooms.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.results import ToolResult
from tests.catalog_scenes import CATALOG, PLANTED, TILING, Archive, build_archive
from tests.configured import settings_for


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "aid-rsicd").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return build_archive(tmp_path_factory.mktemp("archive"), SHARED_DATA)


def _analyst(archive: Archive, folder: Path, **extra: object) -> Analyst:
    return Analyst(settings_for(folder, **{"encoder.spec": None, "store.path": archive.store, "store.tiling": TILING,
                                          "vlm.spec": "rule", **extra}))


def _results(analyst: Analyst, thread: str, tool: str) -> list[ToolResult]:
    return [ToolResult.of(m) for m in analyst.history(thread) if m.type == "tool" and m.name == tool]


def _on_planted(bbox: list[int], scene: str) -> bool:
    return any(bbox[0] <= x < bbox[2] and bbox[1] <= y < bbox[3] for x, y in PLANTED[scene])


def test_cross_scene_question_names_the_one_scene_with_the_target(archive: Archive, tmp_path: Path) -> None:
    with _analyst(archive, tmp_path) as analyst:
        answer = analyst.ask(None, "which scenes show storage tanks?", thread_id="t1", catalog=CATALOG)
        assert answer.supported and answer.finding == "found", answer.text
        assert "scene b" in answer.text and "scene a (" not in answer.text
        sites = [e for e in answer.evidence if e.path in ("fast", "slow")]
        assert sites and {e.scene_id for e in sites} == {"b"}
        assert {e.scene_source for e in sites} == {archive.sources["b"]}
        assert all(_on_planted(e.bbox or [], "b") for e in sites)  # every cited site lies on a planted cell of b
        searched = _results(analyst, "t1", "search_catalog")[0]
        assert [s["id"] for s in searched.extras["scenes"] if s["found"]] == ["b"]
        assert sorted(s["id"] for s in searched.extras["scenes"]) == ["a", "b", "c"]

        # the zoom on the best site opened scene b: its crop names b, and the thread now has b open
        crops = [e for e in answer.evidence if e.path == "zoom"]
        assert crops and crops[0].scene_id == "b" and crops[0].scene_source == archive.sources["b"]
        state = analyst.graph.get_state(analyst._config("t1")).values
        assert state["scene"] == archive.sources["b"] and state["catalog"] == CATALOG

        # the answer's JSON and GeoJSON name the scene of every piece of evidence (source and fingerprint)
        doc = answer.to_json()
        fingerprint = sites[0].fingerprint
        assert doc["scenes"] == [{"source": archive.sources["b"], "fingerprint": fingerprint, "id": "b"}]
        assert all(e["scene_source"] == archive.sources["b"] and e["scene_fingerprint"] == fingerprint
                   for e in doc["evidence"])
        props = [f["properties"] for f in doc["geojson"]["features"]]
        assert props and {p["scene_id"] for p in props} == {"b"} and {p["scene"] for p in props} == {fingerprint}


def test_find_scenes_by_time_and_box_narrows_the_search(archive: Archive, tmp_path: Path) -> None:
    from rsrag.tools.catalog import Catalog
    from rsrag.tools.store import open_store

    with _analyst(archive, tmp_path) as analyst:
        later = analyst.ask(None, "which scenes acquired between 2024-04-01 and 2024-12-31 show storage tanks?",
                            thread_id="t2", catalog=CATALOG)
        found = _results(analyst, "t2", "find_scenes")[0]
        assert [s["id"] for s in found.extras["scenes"]] == ["b", "c"] and all(s["indexed"] for s in found.extras["scenes"])
        assert sorted(s["id"] for s in _results(analyst, "t2", "search_catalog")[0].extras["scenes"]) == ["b", "c"]
        assert later.finding == "found" and "scene b" in later.text

        # a box around scene a only: tanks are not there
        west, south, east, north = Catalog(open_store(archive.store), name=CATALOG).get("a").bbox or (0, 0, 0, 0)
        box = f"[{west + 0.001:.5f}, {south + 0.001:.5f}, {east - 0.001:.5f}, {north - 0.001:.5f}]"
        inside = analyst.ask(None, f"which scenes in {box} show storage tanks?", thread_id="t3", catalog=CATALOG)
        assert [s["id"] for s in _results(analyst, "t3", "find_scenes")[0].extras["scenes"]] == ["a"]
        assert inside.finding == "not_found" and "scene b" not in inside.text, inside.text

        nothing = analyst.ask(None, "which scenes acquired in 2023 show storage tanks?", thread_id="t4", catalog=CATALOG)
        assert "No scene of catalog" in nothing.text and not _results(analyst, "t4", "search_catalog")


def test_zoom_on_evidence_of_another_scene_opens_that_scene(archive: Archive, tmp_path: Path) -> None:
    with _analyst(archive, tmp_path) as analyst:
        first = analyst.ask(None, "which scenes show storage tanks?", thread_id="t5", catalog=CATALOG)
        site = next(e for e in first.evidence if e.path in ("fast", "slow"))
        # a question on scene a in the same thread: then a zoom on the site of b opens b again
        analyst.ask(archive.sources["a"], "where are the fields?", thread_id="t5", catalog=CATALOG)
        assert analyst.graph.get_state(analyst._config("t5")).values["scene"] == archive.sources["a"]
        zoomed = analyst.ask(archive.sources["a"], f"zoom on evidence {site.id}", thread_id="t5", catalog=CATALOG)
        crop = next(e for e in zoomed.evidence if e.path == "zoom")
        assert crop.scene_source == archive.sources["b"] and crop.scene_id == "b"
        assert crop.region is not None and crop.region.scene == site.fingerprint and crop.bbox == site.bbox
        assert analyst.graph.get_state(analyst._config("t5")).values["scene"] == archive.sources["b"]


def test_trace_names_every_scene_used(archive: Archive, tmp_path: Path) -> None:
    with _analyst(archive, tmp_path, **{"trace.enabled": True}) as analyst:
        analyst.ask(None, "which scenes show storage tanks?", thread_id="t6", catalog=CATALOG)
        runs = analyst.tracer.store.runs(thread="t6")
        events = analyst.tracer.store.events("t6", run_id=runs[-1].run_id)
        start, end = events[0], events[-1]
        assert start.provenance is not None and start.provenance.catalog == CATALOG and start.provenance.scene_path == ""
        assert end.kind == "run_end" and end.scenes is not None
        assert {s["id"] for s in end.scenes} == {"a", "b", "c"}  # the search saw all three; the answer cites b
        assert {s["source"] for s in end.scenes} == set(archive.sources.values())
        records = [r for e in events if e.tool == "search_catalog" for r in e.evidence]
        assert records and all(r.scene_source == archive.sources[r.scene_id or ""] for r in records)
        assert analyst.tracer.store.verify("t6").ok  # the events with their scenes hash into the chain
        from rsrag.agent.trace.export import export_geojson

        features = export_geojson(analyst.tracer.store.events("t6"))["features"]
        assert features and all(f["properties"]["scene_source"] == archive.sources[f["properties"]["scene_id"]]
                                for f in features)


def test_ask_catalog_cli_json(archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rsrag.agent.interfaces.cli import app, main

    out = CliRunner().invoke(app, ["ask", "--catalog", CATALOG, "which scenes show storage tanks?", "--json",
                                   "--store", str(archive.store), "--vlm", "rule"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["finding"] == "found" and [s["id"] for s in doc["scenes"]] == ["b"]
    assert doc["scenes"][0]["source"] == archive.sources["b"]
    table = CliRunner().invoke(app, ["ask", "--catalog", CATALOG, "which scenes show storage tanks?", "--quiet",
                                     "--store", str(archive.store)], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if "ids" in line and "path" in line)
    assert "scene" in header and any(line.split("│")[3].strip() == "b" for line in table.stdout.splitlines()
                                     if line.startswith("│ 1 "))

    assert main(["ask", "--catalog", "nosuch", "which scenes show storage tanks?", "--store", str(archive.store)]) == 2
    err = capsys.readouterr().err
    assert "catalog 'nosuch' has no scenes" in err and "Traceback" not in err


def test_mcp_ask_across_a_catalog(archive: Archive, tmp_path: Path) -> None:
    import anyio
    from mcp import Client

    from rsrag.agent.interfaces.mcp import build_mcp_server

    with _analyst(archive, tmp_path) as analyst:
        async def main():  # noqa: ANN202
            async with Client(build_mcp_server(analyst, image_roots=[archive.folder])) as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                asked = await client.call_tool("ask", {"question": "which scenes show storage tanks?", "catalog": CATALOG})
                neither = await client.call_tool("ask", {"question": "which scenes show storage tanks?"})
            async with Client(build_mcp_server(analyst, image_roots=[tmp_path])) as client:
                denied = await client.call_tool("ask", {"question": "which scenes show storage tanks?", "catalog": CATALOG})
            return tools, asked, neither, denied

        tools, asked, neither, denied = anyio.run(main)
    assert "catalog" in tools["ask"].input_schema["properties"] and "image" not in tools["ask"].input_schema.get("required", [])
    reply = asked.structured_content
    assert not asked.is_error and reply["finding"] == "found" and [s["id"] for s in reply["scenes"]] == ["b"]
    assert all(e["scene_source"] == archive.sources["b"] for e in reply["evidence"])
    assert neither.is_error and "an image" in neither.content[0].text
    assert denied.is_error and "3 scene(s) this server may not open" in denied.content[0].text


def test_api_streams_a_catalog_question_and_refuses_an_empty_catalog(archive: Archive, tmp_path: Path) -> None:
    from rsrag.tools.errors import QueryError

    with _analyst(archive, tmp_path) as analyst:
        steps = list(analyst.stream(None, "where are the storage tanks?", thread_id="t7", catalog=CATALOG))
        assert any("search_catalog" in s.text for s in steps)
        answer = steps[-1].update["answer"]
        assert answer.finding == "found" and {e.scene_id for e in answer.evidence} == {"b"}
        with pytest.raises(QueryError, match="catalog 'empty' has no scenes"):
            analyst.ask(None, "which scenes show storage tanks?", catalog="empty")
        with pytest.raises(QueryError, match="an image .* or a catalog"):
            analyst.ask(None, "which scenes show storage tanks?")


def test_web_serves_the_catalog_and_asks_across_it(archive: Archive, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from rsrag.agent.interfaces.web import create_app

    with _analyst(archive, tmp_path) as analyst:
        client = TestClient(create_app(analyst, [], upload_dir=tmp_path / "uploads", catalog=CATALOG))
        listed = client.get("/api/catalog").json()
        images = {im["id"]: im for im in client.get("/api/images").json()["images"]}
        assert listed["name"] == CATALOG and [s["id"] for s in listed["scenes"]] == ["a", "b", "c"]
        assert all(s["image"] in images and s["footprint"]["type"] == "Polygon" for s in listed["scenes"])
        response = client.post("/api/ask", json={"image": None, "question": "which scenes show storage tanks?",
                                                 "catalog": True, "thread": "w1"})
        lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        answer = next(e["answer"] for e in lines if e["type"] == "answer")
        assert answer["finding"] == "found" and [s["id"] for s in answer["scenes"]] == ["b"]
        ledger = client.get("/api/threads/w1/evidence").json()["evidence"]
        regions = [e for e in ledger if e["kind"] == "region"]
        assert regions and all(e["scene_source"] == archive.sources[e["scene_id"]] for e in regions)
        assert "b" in {e["scene_id"] for e in regions}
        assert client.post("/api/ask", json={"image": None, "question": "x?"}).status_code == 400

        plain = TestClient(create_app(analyst, [archive.sources["a"]], upload_dir=tmp_path / "uploads2"))
        assert plain.get("/api/catalog").json() == {"name": None, "scenes": []}
        refused = plain.post("/api/ask", json={"image": None, "question": "which scenes?", "catalog": True})
        assert refused.status_code == 400 and "serves no catalog" in refused.json()["error"]


def test_find_scenes_tool_by_property_and_point(archive: Archive, tmp_path: Path) -> None:
    from langgraph.prebuilt import ToolRuntime

    from rsrag.agent.toolkit import find_scenes
    from rsrag.tools.errors import QueryError

    with _analyst(archive, tmp_path) as analyst:
        def call(**args: object) -> ToolResult:
            runtime = ToolRuntime(state={"catalog": CATALOG, "evidence": {}, "messages": []}, context=analyst.context,
                                  config=analyst.resources.config({"configurable": {"thread_id": "f"}}),
                                  stream_writer=lambda _: None, tool_call_id="f1", store=None)
            return ToolResult.of(find_scenes.func(runtime=runtime, **args).update["messages"][0])  # type: ignore[misc, union-attr]

        assert [s["id"] for s in call(where={"platform": "test-sat"}).extras["scenes"]] == ["a", "b", "c"]
        none = call(where={"platform": "other-sat"})
        assert none.status == "empty" and "0 of 3 scenes" in analyst_text(none)
        west, south, east, north = next(iter([s for s in call().extras["scenes"] if s["id"] == "c"]))["bbox"]
        near = call(point=[(west + east) / 2, (south + north) / 2], radius_km=2.0)
        assert [s["id"] for s in near.extras["scenes"]] == ["c"]  # the others are ~10 and ~20 km away
        with pytest.raises(QueryError, match="bbox must be"):
            call(lonlat_bbox=[10.0, 0.0, 5.0, 1.0])


def analyst_text(result: ToolResult) -> str:
    from rsrag.agent.results import render

    return render(result)


def test_events_written_before_scene_fields_keep_their_hashes() -> None:
    from rsrag.agent.trace.events import EvidenceRecord, TraceEvent

    old = {"run_id": "r", "thread_id": "t", "time": 1.0, "kind": "tool", "tool": "search_patches",
           "evidence": [{"id": "E000001", "kind": "region", "path": "fast", "bbox": [0, 0, 8, 8], "scene": "fp"}]}
    event = TraceEvent.model_validate(old)
    assert "scene_source" not in event.canonical() and '"scenes"' not in event.canonical()
    newer = event.model_copy(update={"evidence": [EvidenceRecord(**old["evidence"][0], scene_source="/x/a.tif")]})
    assert newer.compute_hash() != event.compute_hash() and '"scene_source":"/x/a.tif"' in newer.canonical()


def test_chat_across_a_catalog(archive: Archive, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from rsrag.agent.interfaces.cli.chat_session import ChatSession

    with _analyst(archive, tmp_path) as analyst:
        buffer = io.StringIO()
        session = ChatSession(analyst, None, "chat1", Console(file=buffer, width=200, color_system=None), catalog=CATALOG)
        session.run(io.StringIO("which scenes show storage tanks?\n/evidence\n"))
        out = buffer.getvalue()
        assert f"catalog {CATALOG} (3 scenes)" in out and "call search_catalog(" in out
        answer = session.last_answer
        assert answer is not None and answer.finding == "found" and "scene b" in answer.text
        assert {e.scene_id for e in answer.evidence if e.path in ("fast", "slow")} == {"b"}

