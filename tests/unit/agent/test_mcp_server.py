"""The MCP server in-process with the SDK's client: tools, image content, evidence ids, errors, ask, knowledge."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client
from PIL import Image

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.interfaces.mcp import build_mcp_server
from rsrag.agent.settings import Settings, load_settings
from tests.rasters import write_raster

TINY = "rsrag-tiny-test:random"


@pytest.fixture
def scene_path(tmp_path: Path) -> Path:
    data = np.random.default_rng(7).integers(0, 255, (3, 192, 256), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    return write_raster(tmp_path / "images" / "scene.tif", data)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    return load_settings(overrides={"home": tmp_path / "home", "encoder.spec": TINY, "store.tiling": "grid:64"})


@pytest.fixture
def analyst(settings: Settings) -> Iterator[Analyst]:
    with settings.analyst() as a:
        yield a


def png_size(content: object, mime: str = "image/png") -> tuple[int, int]:
    assert getattr(content, "type", None) == "image" and getattr(content, "mime_type", None) == mime
    with Image.open(io.BytesIO(base64.b64decode(content.data))) as im:  # type: ignore[attr-defined]
        return im.size


def run(coro_fn, *args):  # noqa: ANN001, ANN202
    return anyio.run(coro_fn, *args)


def test_tools_listed_with_schemas(analyst: Analyst, settings: Settings) -> None:
    async def main() -> dict[str, dict]:
        async with Client(build_mcp_server(analyst, settings)) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    tools = run(main)
    assert set(tools) == {"scene_info", "search_patches", "zoom", "lookup_knowledge", "search_catalog", "ask"}
    assert tools["search_patches"]["required"] == ["image", "phrases"]
    assert {"evidence_id", "bbox", "map_bbox", "lonlat_bbox", "max_side"} <= set(tools["zoom"]["properties"])

    async def without_knowledge() -> list[str]:
        async with Client(build_mcp_server(analyst, settings, knowledge=False)) as client:
            return [t.name for t in (await client.list_tools()).tools]

    assert "lookup_knowledge" not in run(without_knowledge)


def test_scene_search_zoom_round_trip(analyst: Analyst, settings: Settings, scene_path: Path) -> None:
    image = str(scene_path)

    async def main() -> dict:
        async with Client(build_mcp_server(analyst, settings)) as client:
            info = await client.call_tool("scene_info", {"image": image})
            found = await client.call_tool("search_patches", {"image": image, "phrases": ["red roofs"], "top_k": 3})
            first = found.structured_content["regions"][0]
            by_id = await client.call_tool("zoom", {"image": image, "evidence_id": first["id"], "max_side": 32})
            by_box = await client.call_tool("zoom", {"image": image, "bbox": [0, 0, 128, 64]})
            return {"info": info, "found": found, "first": first, "by_id": by_id, "by_box": by_box}

    r = run(main)
    assert not r["info"].is_error and "256 x 192 px" in r["info"].content[0].text and "EPSG:32633" in r["info"].content[0].text
    assert png_size(r["info"].content[1], "image/jpeg") == (256, 192)  # the overview, never upscaled
    regions = r["found"].structured_content["regions"]
    assert len(regions) == 3 and all(len(g["bbox"]) == 4 and g["map_box"]["crs"] == "EPSG:32633" for g in regions)
    assert "phrases: red roofs" in r["found"].structured_content["summary"]
    assert all(isinstance(g["confident"], bool) and 0 <= g["confidence"] <= 1 for g in regions)
    x0, y0, x1, y1 = r["first"]["bbox"]
    assert r["by_id"].content[0].text.startswith("E") and f"bbox=[{x0}, {y0}, {x1}, {y1}]" in r["by_id"].content[0].text
    assert max(png_size(r["by_id"].content[1])) == 32  # the grid cell, scaled to max_side
    assert png_size(r["by_box"].content[1]) == (128, 64)  # native resolution


@pytest.mark.parametrize(("args", "message"), [
    ({"bbox": [0, 0, 9999, 10]}, "lies outside the image, which is 256 x 192 px"),
    ({"evidence_id": "Edeadbe"}, "unknown region evidence id 'Edeadbe'"),
    ({}, "give exactly one of evidence_id, bbox"),
])
def test_zoom_errors_are_tool_errors(analyst: Analyst, settings: Settings, scene_path: Path, args: dict,
                                     message: str) -> None:
    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings)) as client:
            return await client.call_tool("zoom", {"image": str(scene_path), **args})

    result = run(main)
    assert result.is_error and message in result.content[0].text and "Traceback" not in result.content[0].text


def test_image_roots_and_missing_files(analyst: Analyst, settings: Settings, scene_path: Path, tmp_path: Path) -> None:
    outside = write_raster(tmp_path / "elsewhere.tif", np.zeros((1, 16, 16), dtype=np.uint8))

    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings, image_roots=[scene_path.parent])) as client:
            inside = await client.call_tool("scene_info", {"image": str(scene_path)})
            denied = await client.call_tool("scene_info", {"image": str(outside)})
            sneaky = await client.call_tool("ask", {"image": f"{scene_path.parent}/../elsewhere.tif", "question": "x?"})
            missing = await client.call_tool("zoom", {"image": str(scene_path.parent / "none.tif"), "bbox": [0, 0, 1, 1]})
            return inside, denied, sneaky, missing

    inside, denied, sneaky, missing = run(main)
    assert not inside.is_error
    assert denied.is_error and "outside the image folders" in denied.content[0].text
    assert sneaky.is_error and "outside the image folders" in sneaky.content[0].text
    assert missing.is_error and "none.tif: no such file" in missing.content[0].text


def test_ask_runs_the_agent_and_continues_the_thread(analyst: Analyst, settings: Settings, scene_path: Path) -> None:
    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings)) as client:
            first = await client.call_tool("ask", {"image": str(scene_path), "question": "where are the fields?"})
            thread = first.structured_content["thread_id"]
            second = await client.call_tool("ask", {"image": str(scene_path), "question": "and the roads?",
                                                    "thread_id": thread})
            return first.structured_content, second.structured_content

    first, second = run(main)
    assert "Retrieval-only" in first["answer"] and first["evidence"] and first["cited"]
    assert all(len(e["bbox"]) == 4 for e in first["evidence"]) and first["geojson"]["type"] == "FeatureCollection"
    assert second["thread_id"] == first["thread_id"]
    questions = [m.text for m in analyst.history(first["thread_id"]) if m.type == "human" and not m.additional_kwargs]
    assert questions == ["where are the fields?", "and the roads?"]


def test_lookup_knowledge(analyst: Analyst, settings: Settings, tmp_path: Path, scene_path: Path) -> None:
    from rsrag.tools.knowledge import KnowledgeBase, ingest_file

    rows = [{"id": "fort", "name": "Red fort", "category": "fort", "description": "sandstone walls"},
            {"id": "port", "name": "Harbour", "category": "port", "description": "container ships and cranes"}]
    (tmp_path / "kb.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    kb = KnowledgeBase(settings.store_path, analyst.workspace.encoder, name=settings.knowledge.name)
    assert ingest_file(kb, tmp_path / "kb.jsonl").written.added == 2

    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings)) as client:
            hit = await client.call_tool("lookup_knowledge", {"query": "container ships", "category": "port"})
            in_scene = await client.call_tool("lookup_knowledge", {"query": "container ships", "image": str(scene_path),
                                                                   "category": "port"})
            empty = await client.call_tool("lookup_knowledge", {"query": "   "})
            return hit, in_scene, empty

    hit, in_scene, empty = run(main)
    entries = hit.structured_content["entries"]
    assert [e["id"] for e in entries] == ["port"] and entries[0]["name"] == "Harbour"
    # with an image: the agent's tool (entries as citable evidence, and the slow path's report)
    report = in_scene.structured_content["report"]
    assert report.startswith("1 knowledge entries for 'container ships'") and "slow path: no visual concept library" in report
    assert [(e["kind"], e["knowledge_id"]) for e in in_scene.structured_content["entries"]] == [("knowledge", "port")]
    assert empty.is_error and "give a text or an image" in empty.content[0].text


def test_replies_are_compact_json(analyst: Analyst, settings: Settings, scene_path: Path) -> None:
    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings)) as client:
            found = await client.call_tool("search_patches", {"image": str(scene_path), "phrases": ["roofs"], "top_k": 5})
            asked = await client.call_tool("ask", {"image": str(scene_path), "question": "where are the roofs?"})
            return found, asked

    replies = run(main)
    for reply in replies:
        assert not reply.is_error and len(reply.content) == 1
        text = reply.content[0].text
        assert "\n" not in text and json.loads(text) == reply.structured_content  # one line: the structured reply
        assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)  # no padding anywhere
        decimals = [len(f.split(".")[1]) for f in __import__("re").findall(r"-?\d+\.\d+", text)]
        assert decimals and max(decimals) <= 6
    found, asked = (r.structured_content for r in replies)
    regions = found["regions"]
    assert 1 <= len(regions) <= 5 and all("provenance" not in g for g in regions) and found["provenance"]["encoder"]
    # what a calling model pays for up to five regions, and for a whole cited answer
    assert len(replies[0].content[0].text) < 700 * len(regions) + 600, replies[0].content[0].text
    assert len(replies[1].content[0].text) < 8000, replies[1].content[0].text
    assert all(0 <= g["confidence"] <= 1 for g in regions)
    assert asked["evidence"] and all("bbox" in e for e in asked["evidence"])


def test_overview_is_a_jpeg_sized_for_a_model(analyst: Analyst, settings: Settings, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    big = write_raster(tmp_path / "big.tif", rng.integers(0, 255, (3, 1800, 2400), dtype=np.uint8))

    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings)) as client:
            default = await client.call_tool("scene_info", {"image": str(big)})
            small = await client.call_tool("scene_info", {"image": str(big), "max_side": 256})
            return default, small

    default, small = run(main)
    w, h = png_size(default.content[1], "image/jpeg")
    assert max(w, h) <= 1024 and abs(w / h - 2400 / 1800) < 0.01
    assert png_size(small.content[1], "image/jpeg") == (256, 192)
    assert len(base64.b64decode(default.content[1].data)) < 400_000  # random noise: the worst case for JPEG
    assert "2400 x 1800 px" in default.content[0].text


def test_empty_knowledge_says_how_to_fill_it(analyst: Analyst, settings: Settings, scene_path: Path) -> None:
    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings)) as client:
            alone = await client.call_tool("lookup_knowledge", {"query": "harbour"})
            in_scene = await client.call_tool("lookup_knowledge", {"query": "harbour", "image": str(scene_path)})
            nothing = await client.call_tool("search_patches", {"image": str(scene_path), "phrases": ["harbour"],
                                                                "top_k": 2})
            return alone.structured_content, in_scene.structured_content, nothing.structured_content

    alone, in_scene, nothing = run(main)
    assert alone["mode"] == "empty" and alone["entries"] == [] and "rsrag kb concepts" in alone["hint"]
    assert "rsrag kb add" in alone["hint"]
    assert "rsrag kb concepts" in in_scene["hint"]
    if not any(g["confident"] for g in nothing["regions"]):  # random encoder: nothing is confident, usually
        assert "try other phrases" in nothing["hint"]


def test_every_parameter_documents_its_units(analyst: Analyst, settings: Settings) -> None:
    async def main():  # noqa: ANN202
        async with Client(build_mcp_server(analyst, settings)) as client:
            return {t.name: t for t in (await client.list_tools()).tools}

    tools = run(main)
    units = ("pixels", "degrees", "CRS units", "a count", "path", "0-1")
    for name, tool in tools.items():
        for param, schema in tool.input_schema["properties"].items():
            assert schema.get("description"), f"{name}.{param} has no description"
            if param in ("bbox", "map_bbox", "lonlat_bbox", "max_side", "top_k", "k", "image"):
                assert any(u in schema["description"] for u in units), f"{name}.{param}: {schema['description']}"
        assert "pixels" in tool.description or name == "lookup_knowledge" and "0-1" in tool.description, name


def test_search_catalog_only_sees_allowed_scenes(analyst: Analyst, settings: Settings, scene_path: Path,
                                                 tmp_path: Path) -> None:
    from rsrag.tools.catalog import Catalog
    from rsrag.tools.indexing import index_scene

    outside = write_raster(tmp_path / "outside.tif", np.random.default_rng(8).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    unindexed = write_raster(scene_path.parent / "later.tif", np.random.default_rng(9).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    workspace = analyst.workspace
    catalog = Catalog(workspace.patches.store, name="archive")
    catalog.add([str(scene_path), str(outside), str(unindexed)])
    for path in (scene_path, outside):
        index_scene(str(path), workspace.encoder, "grid:64", workspace.patches)

    async def main() -> dict:
        server = build_mcp_server(analyst, settings, image_roots=[scene_path.parent])
        async with Client(server) as client:
            reply = await client.call_tool("search_catalog", {"phrases": ["red roofs"], "catalog": "archive", "top_k": 2})
            return reply.structured_content

    reply = run(main)
    assert [s["image"] for s in reply["scenes"]] == [str(scene_path.resolve())]  # the outside scene is never named
    assert reply["skipped"] == ["later"] and "rsrag index --catalog archive" in reply["hint"]
    assert all(len(s["sites"]) <= 2 and len(s["sites"][0]["bbox"]) == 4 for s in reply["scenes"])
