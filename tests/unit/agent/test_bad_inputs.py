"""A corpus of bad inputs: files, command-line arguments, settings, knowledge records, HTTP bodies and MCP
arguments. Each case asserts exit status 2 (or a 4xx status, or an MCP tool error), one line naming the
thing at fault, no traceback, and that the store and the sessions file still work afterwards.

Everything runs in-process against one prepared home (an indexed scene with the tiny encoder, a thread with
an answer); ``tests/integration/test_bad_inputs_process.py`` runs a sample as real processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from rsrag.agent.interfaces.cli import main
from tests.rasters import write_raster

TINY = "rsrag-tiny-test:random"
SQUARE = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]


@dataclass
class Home:
    """The prepared home every case runs against."""

    root: Path
    cfg: Path
    scene: Path
    store: Path
    sessions: Path
    files: Path

    def cli(self, *args: str) -> list[str]:
        return ["--settings", str(self.cfg), *args]


def _write_bad_files(folder: Path) -> None:
    folder.mkdir()
    (folder / "empty.tif").write_bytes(b"")
    (folder / "text.tif").write_text("this is not an image\n")
    (folder / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    good = write_raster(folder / "whole.tif", np.random.default_rng(1).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    data = good.read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 3])
    (folder / "loop-a.tif").symlink_to(folder / "loop-b.tif")
    (folder / "loop-b.tif").symlink_to(folder / "loop-a.tif")
    (folder / "dangling.tif").symlink_to(folder / "gone.tif")
    os.mkfifo(folder / "stream.tif")  # a file that cannot be read like one (it would block forever)
    write_raster(folder / "one-pixel.tif", np.zeros((3, 1, 1), dtype=np.uint8))
    write_raster(folder / "small.tif", np.random.default_rng(2).integers(0, 255, (3, 256, 256), dtype=np.uint8))
    (folder / "missing-source.vrt").write_text(
        '<VRTDataset rasterXSize="128" rasterYSize="128"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{folder / "nowhere.tif"}</SourceFilename></SimpleSource>'
        "</VRTRasterBand></VRTDataset>")
    (folder / "broken.toml").write_text("[retrieval\ntop_k = 3\n")
    (folder / "unknown-key.toml").write_text("[retrieval]\ntop_kk = 3\n")
    (folder / "negative.toml").write_text("[retrieval]\ntop_k = -1\n")
    (folder / "threshold.toml").write_text("[retrieval]\nfast_threshold = 2.0\n")
    (folder / "tiling.toml").write_text('[store]\ntiling = "hexagons"\n')
    (folder / "a-folder.toml").mkdir()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    root = tmp_path_factory.mktemp("bad-inputs")
    cfg = root / "settings.toml"
    cfg.write_text(f'home = "{root}"\n[encoder]\nspec = "{TINY}"\n[store]\npath = "{root / "store"}"\n'
                   f'tiling = "grid:64"\n[paths]\nsessions = "{root / "sessions.sqlite"}"\ncrops = "{root / "crops"}"\n')
    scene = write_raster(root / "scene.tif", np.random.default_rng(0).integers(0, 255, (3, 192, 192), dtype=np.uint8))
    prepared = Home(root, cfg, scene, root / "store", root / "sessions.sqlite", root / "files")
    _write_bad_files(prepared.files)
    assert main(prepared.cli("index", str(scene), "--json")) == 0
    assert main(prepared.cli("ask", str(scene), "where are the roofs?", "--thread", "good", "--json", "--quiet")) == 0
    yield prepared


def _checkpoints(home: Home) -> int:
    with sqlite3.connect(home.sessions) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(con.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 'good'").fetchone()[0])


@pytest.fixture
def intact(home: Home) -> Iterator[None]:
    """The store and the sessions file are unchanged by the bad input (and still readable)."""
    before = (_checkpoints(home), sorted(p.name for p in home.store.iterdir()))
    yield
    assert (_checkpoints(home), sorted(p.name for p in home.store.iterdir())) == before


def _one_line(err: str, out: str, expected: str, last: bool = False) -> str:
    assert "Traceback" not in out + err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "nothing on standard error"
    if not last:
        assert len(lines) == 1, lines
    line = lines[-1]
    assert expected.lower() in line.lower(), line
    assert line not in out  # errors never go to standard output
    return line


# --- files and command-line arguments ---------------------------------------------------------------------

F = "{files}"
CLI_CASES: list[tuple[str, list[str], str]] = [
    # files
    ("missing file", ["describe", f"{F}/nope.tif"], "nope.tif: no such file"),
    ("directory", ["describe", F], "is a directory"),
    ("empty file", ["describe", f"{F}/empty.tif"], "empty (0 bytes)"),
    ("text named .tif", ["describe", f"{F}/text.tif"], "text.tif"),
    ("noise named .png", ["describe", f"{F}/noise.png"], "noise.png"),
    ("truncated tiff", ["search", f"{F}/truncated.tif", "roofs"], "truncated.tif"),
    ("symlink loop", ["describe", f"{F}/loop-a.tif"], "loops back on itself"),
    ("dangling symlink", ["describe", f"{F}/dangling.tif"], "which does not exist"),
    ("a FIFO, not a file", ["describe", f"{F}/stream.tif"], "stream.tif"),
    ("vrt over a missing file", ["search", f"{F}/missing-source.vrt", "roofs"], "missing-source.vrt: the VRT refers to"),
    ("truncated tiff asked", ["ask", f"{F}/truncated.tif", "where are the roofs?", "--quiet"], "truncated.tif"),
    ("vrt over a missing file asked", ["ask", f"{F}/missing-source.vrt", "where are the roofs?", "--quiet"],
     "missing-source.vrt: the VRT refers to"),
    ("1 px image asked", ["ask", f"{F}/one-pixel.tif", "where are the roofs?", "--quiet"], "cannot be indexed"),
    ("256 px with vit:448 asked", ["ask", f"{F}/small.tif", "roofs?", "--tiling", "vit:448", "--quiet"],
     "smaller than one patch"),
    ("256 px with vit:448 indexed", ["index", f"{F}/small.tif", "--tiling", "vit:448"], "smaller than one patch"),
    ("1 px image indexed", ["index", f"{F}/one-pixel.tif"], "the image (1 x 1 px) is smaller than one patch"),
    ("thumbnail into a missing folder", ["describe", "{scene}", "--thumbnail", f"{F}/no/such/dir/t.png"],
     "no such file or directory"),
    ("trace export into a missing folder", ["trace", "export", "good", "-o", f"{F}/no/dir/t.jsonl"],
     "no such file or directory"),
    # usage
    ("no command", [], "Missing command"),
    ("unknown command", ["frobnicate"], "No such command"),
    ("unknown option", ["index", "{scene}", "--bogus"], "No such option: --bogus"),
    ("missing argument", ["search", "{scene}"], "Missing argument"),
    ("top-k zero", ["search", "{scene}", "water", "--top-k", "0"], "--top-k"),
    ("top-k not a number", ["search", "{scene}", "water", "--top-k", "many"], "--top-k"),
    ("threshold above 1", ["search", "{scene}", "water", "--threshold", "1.5"], "--threshold"),
    ("bands not numbers", ["describe", "{scene}", "--bands", "abc"], "--bands"),
    ("band out of range", ["describe", "{scene}", "--bands", "9,8,7"], "band"),
    ("port zero", ["serve", "{scene}", "--port", "0"], "--port"),
    ("port too high", ["serve", "{scene}", "--port", "70000"], "--port"),
    ("mcp folder missing", ["mcp", "--images", "/nonexistent"], "/nonexistent is not a folder"),
    ("empty question", ["ask", "{scene}", "   ", "--quiet"], "question"),
    ("empty phrase", ["search", "{scene}", "  "], "is empty"),
    ("max-steps zero", ["ask", "{scene}", "roofs?", "--max-steps", "0"], "--max-steps"),
    ("bad tiling", ["index", "{scene}", "--tiling", "hexagons"], "hexagons"),
    ("tiling overlap too big", ["index", "{scene}", "--tiling", "grid:64:overlap=2"], "overlap"),
    ("tiling size zero", ["index", "{scene}", "--tiling", "grid:0"], "grid:0"),
    ("unknown encoder", ["search", "{scene}", "roofs", "--encoder", "no-such-model:nothing"], "no-such-model"),
    ("unknown vlm", ["ask", "{scene}", "roofs?", "--vlm", "gpt-4o"], "vlm.spec"),
    ("vlm server down", ["ask", "{scene}", "roofs?", "--vlm", "openai:m@http://127.0.0.1:9/v1", "--quiet"],
     "cannot be reached"),
    ("unknown thread", ["trace", "show", "no-such-thread"], "no trace for thread 'no-such-thread'"),
    ("unknown export format", ["trace", "export", "good", "-f", "pdf"], "unknown format 'pdf'"),
    ("bad --since", ["trace", "list", "--since", "yesterday"], "is not an ISO date"),
    ("bad --head", ["trace", "verify", "good", "--head", "nope"], "is not a chain head"),
    ("export without a head", ["trace", "verify", "good", "--export", "{scene}"], "cannot be read"),
    ("kb bbox of three numbers", ["kb", "search", "x", "--bbox", "1,2,3"], "--bbox"),
    ("kb add missing file", ["kb", "add", f"{F}/none.jsonl"], "knowledge file not found"),
    ("kb add a folder", ["kb", "add", F], "is a folder"),
    ("kb add unknown type", ["kb", "add", "{scene}"], "unknown knowledge file type"),
]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_arguments_and_files(home: Home, intact: None, capsys: pytest.CaptureFixture[str], argv: list[str],
                                 expected: str) -> None:
    args = [a.format(files=home.files, scene=home.scene) for a in argv]
    code = main(home.cli(*args))
    captured = capsys.readouterr()
    assert code == 2, (captured.out[-300:], captured.err[-300:])
    _one_line(captured.err, captured.out, expected)


def test_an_unreadable_image_asked_is_said_plainly_and_exits_2(home: Home, intact: None,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(home.cli("ask", str(home.files / "truncated.tif"), "where are the roofs?", "--json"))
    captured = capsys.readouterr()
    assert code == 2
    report = json.loads(captured.out)
    assert report["cited"] == [] and report["finding"] is None
    assert len(report["input_errors"]) == 1 and "truncated.tif" in report["input_errors"][0]
    # what GDAL found wrong, not rasterio's "See previous exception" (there is no previous exception to see)
    assert "previous exception" not in report["input_errors"][0] and "failed" in report["input_errors"][0]
    # the analyst reads what could not be read, not the hints meant for the model
    assert report["answer"].startswith("Could not search for roofs: ")
    assert "Use other tools" not in report["answer"] and "Error (input)" not in report["answer"]
    assert "Retrieval-only" not in report["answer"]  # nothing was retrieved
    assert ".." not in report["answer"]
    assert captured.err.strip() == f"error: {report['input_errors'][0]}"


# --- settings ---------------------------------------------------------------------------------------------

SETTINGS_CASES: list[tuple[str, str | None, dict[str, str], str]] = [
    ("settings file missing", f"{F}/none.toml", {}, "does not exist"),
    ("settings file not TOML", f"{F}/broken.toml", {}, "is not valid TOML"),
    ("settings file is a folder", f"{F}/a-folder.toml", {}, "cannot be read"),
    ("unknown key in file", f"{F}/unknown-key.toml", {}, "top_kk"),
    ("negative top_k in file", f"{F}/negative.toml", {}, "retrieval.top_k"),
    ("threshold above 1 in file", f"{F}/threshold.toml", {}, "retrieval.fast_threshold"),
    ("bad tiling in file", f"{F}/tiling.toml", {}, "store.tiling"),
    ("trace enabled maybe (old name)", None, {"RSRAG_TRACE_ENABLED": "maybe"}, "RSRAG_TRACE_ENABLED"),
    ("trace enabled maybe", None, {"RSRAG_TRACE__ENABLED": "maybe"}, "trace.enabled"),
    ("top_k not a number", None, {"RSRAG_RETRIEVAL__TOP_K": "abc"}, "retrieval.top_k"),
    ("max_steps zero", None, {"RSRAG_BUDGETS__MAX_STEPS": "0"}, "budgets.max_steps"),
    ("device unknown", None, {"RSRAG_ENCODER__DEVICE": "quantum"}, "quantum"),
    ("vlm spec unknown", None, {"RSRAG_VLM__SPEC": "gpt"}, "vlm.spec"),
    ("unknown RSRAG variable", None, {"RSRAG_TOPK": "3"}, "RSRAG_TOPK"),
    ("section as plain text", None, {"RSRAG_RETRIEVAL": "abc"}, "retrieval"),
    ("redaction unknown", None, {"RSRAG_TRACE__REDACT": "secrets"}, "secrets"),
]


@pytest.mark.parametrize(("file", "env", "expected"), [c[1:] for c in SETTINGS_CASES], ids=[c[0] for c in SETTINGS_CASES])
def test_settings(home: Home, intact: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                  file: str | None, env: dict[str, str], expected: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = file.format(files=home.files) if file else str(home.cfg)
    code = main(["--settings", settings, "search", str(home.scene), "roofs", "--json"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    line = _one_line(captured.err, captured.out, expected)
    assert line.startswith(("configuration error:", "error:"))


# --- knowledge records --------------------------------------------------------------------------------------

GOOD = {"id": "good-1", "name": "Harbour", "description": "cranes and container ships"}
KB_CASES: list[tuple[str, str, str, str]] = [
    ("list id", "kb.jsonl", json.dumps({"id": ["a", "b"], "name": "x"}), "field 'id'"),
    ("number id", "kb.jsonl", json.dumps({"id": 17, "name": "x"}), "field 'id'"),
    ("object name", "kb.jsonl", json.dumps({"id": "a", "name": {"en": "Tower"}}), "field 'name'"),
    ("list category", "kb.jsonl", json.dumps({"id": "a", "name": "x", "category": ["a"]}), "field 'category'"),
    ("missing id", "kb.jsonl", json.dumps({"name": "no id"}), "missing id"),
    ("duplicate id", "kb.jsonl", json.dumps(GOOD), "duplicate id"),
    ("invalid JSON", "kb.jsonl", "{not json", "not valid JSON"),
    ("latitude out of range", "kb.jsonl", json.dumps({"id": "a", "name": "x", "lat": 95, "lon": 0}), "latitude 95"),
    ("missing image", "kb.jsonl", json.dumps({"id": "a", "name": "x", "images": ["gone.png"]}), "image file not found"),
    ("unknown kind", "kb.jsonl", json.dumps({"id": "a", "name": "x", "kind": "landmark"}), "field 'kind'"),
    ("unclosed ring", "kb.jsonl", json.dumps({"id": "a", "name": "x", "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}), "is not closed"),
    ("self-intersection", "kb.jsonl", json.dumps({"id": "a", "name": "x", "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}), "Self-intersection"),
    ("unknown geometry type", "kb.jsonl", json.dumps({"id": "a", "name": "x", "geometry": {
        "type": "Circle", "coordinates": [0, 0]}}), "unknown geometry type"),
    ("unterminated CSV quote", "kb.csv", 'a,"Alpha,swallows the rest', "malformed CSV"),
    ("CSV extra values", "kb.csv", "a,x,y,z,w", "more values than header columns"),
    ("CSV bad coordinates", "kb.csv", "a,x,not-a-number", "are not numbers"),
]


@pytest.mark.parametrize(("name", "line", "expected"), [c[1:] for c in KB_CASES], ids=[c[0] for c in KB_CASES])
def test_knowledge_records(home: Home, intact: None, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                           name: str, line: str, expected: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text(f"id,name,lon\n{GOOD['id']},{GOOD['name']},\n{line}\n")
    else:
        path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    code = main(home.cli("kb", "add", str(path), "--store", str(tmp_path / "kb-store")))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    last = _one_line(captured.err, captured.out, "1 of 2 records skipped", last=True)
    skipped = [s for s in captured.err.splitlines() if s.startswith("skipped")]
    assert len(skipped) == 1 and f"{path}:{2 if name.endswith('.jsonl') else 3}" in skipped[0], skipped
    assert expected.lower() in skipped[0].lower(), skipped[0]
    assert "1 added" in captured.out and last


# --- HTTP bodies ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(home: Home) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from rsrag.agent.interfaces.web import create_app
    from rsrag.agent.settings import load_settings

    with load_settings(home.cfg).analyst() as analyst:
        client = TestClient(create_app(analyst, [home.scene], upload_dir=home.root / "uploads",
                                       max_upload_bytes=64 * 1024))
        client.image_id = client.get("/api/images").json()["images"][0]["id"]  # type: ignore[attr-defined]
        yield client


def _ask(body: Any) -> Callable[[Any], Any]:
    return lambda c: c.post("/api/ask", content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                            headers={"content-type": "application/json"})


HTTP_CASES: list[tuple[str, Callable[[Any], Any], int, str]] = [
    ("not JSON", _ask(b"{question"), 400, "not valid JSON"),
    ("JSON array", _ask([1, 2]), 400, "must be a JSON object"),
    ("no question", lambda c: _ask({"image": c.image_id})(c), 400, "question must be a non-empty string"),
    ("empty question", lambda c: _ask({"image": c.image_id, "question": "  "})(c), 400, "question"),
    ("question not text", lambda c: _ask({"image": c.image_id, "question": 42})(c), 400, "question"),
    ("question too long", lambda c: _ask({"image": c.image_id, "question": "x" * 4001})(c), 400, "the limit is 4000"),
    ("no image", _ask({"question": "roofs?"}), 400, "image must be the id"),
    ("unknown image", _ask({"image": "deadbeef", "question": "roofs?"}), 404, "no image with id"),
    ("bad thread", lambda c: _ask({"image": c.image_id, "question": "roofs?", "thread": "../etc"})(c), 400, "thread"),
    ("thread too long", lambda c: _ask({"image": c.image_id, "question": "q?", "thread": "t" * 65})(c), 400, "thread"),
    ("body too large", _ask(b" " * (70 * 1024)), 413, "at most"),
    ("tile outside", lambda c: c.get(f"/api/images/{c.image_id}/tiles/30/0_0.jpg"), 404, "outside the pyramid"),
    ("tile of unknown image", lambda c: c.get("/api/images/nope/tiles/0/0_0.jpg"), 404, "no image with id"),
    ("unknown image info", lambda c: c.get("/api/images/nope"), 404, "no image with id"),
    ("crop of unknown evidence", lambda c: c.get("/api/threads/good/evidence/E000000/crop"), 404, "no evidence"),
    ("crop bad thread", lambda c: c.get("/api/threads/bad%20thread/evidence/E1/crop"), 400, "thread"),
    ("upload bad suffix", lambda c: c.post("/api/images?name=evil.exe", content=b"MZ"), 415, "evil.exe"),
    ("upload empty", lambda c: c.post("/api/images?name=a.tif", content=b""), 415, "empty"),
    ("upload too large", lambda c: c.post("/api/images?name=a.tif", content=b"II*\x00" + b"\0" * 70_000), 413, "too large"),
    ("upload a VRT as .tif", lambda c: c.post("/api/images?name=v.tif", content=b"<VRTDataset></VRTDataset>"), 415, "VRT"),
    ("upload text as .png", lambda c: c.post("/api/images?name=t.png", content=b"hello"), 415, "t.png"),
]


@pytest.mark.parametrize(("request_", "status", "expected"), [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES])
def test_http_bodies(home: Home, web: Any, intact: None, request_: Callable[[Any], Any], status: int,
                     expected: str) -> None:
    response = request_(web)
    assert response.status_code == status, response.text
    body = response.json()
    message = body["error"]
    assert "\n" not in message and expected.lower() in message.lower() and "Traceback" not in response.text
    assert str(home.root / "uploads") not in message and body["kind"] in ("argument", "input")


# --- MCP arguments ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mcp_server(home: Home) -> Iterator[Any]:
    from rsrag.agent.interfaces.mcp import build_mcp_server
    from rsrag.agent.settings import load_settings

    with load_settings(home.cfg).analyst() as analyst:
        yield build_mcp_server(analyst, image_roots=[home.root], knowledge=True)


MCP_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("top_k zero", "search_patches", {"phrases": ["roofs"], "top_k": 0}, "top_k must be"),
    ("top_k negative", "search_patches", {"phrases": ["roofs"], "top_k": -5}, "got -5"),
    ("top_k huge", "search_patches", {"phrases": ["roofs"], "top_k": 100_000}, "got 100000"),
    ("fifty phrases", "search_patches", {"phrases": [f"p{n}" for n in range(50)]}, "at most 4 phrases"),
    ("no phrases", "search_patches", {"phrases": []}, "1 to 4"),
    ("blank phrase", "search_patches", {"phrases": [" "]}, "non-empty"),
    ("phrase too long", "search_patches", {"phrases": ["x" * 600]}, "at most 500"),
    ("bbox of three", "zoom", {"bbox": [0, 0, 10]}, "four finite numbers"),
    ("bbox outside", "zoom", {"bbox": [5000, 5000, 6000, 6000]}, "outside"),
    ("two boxes", "zoom", {"bbox": [0, 0, 10, 10], "lonlat_bbox": [0, 0, 1, 1]}, "exactly one"),
    ("no box", "zoom", {}, "exactly one"),
    ("unknown evidence", "zoom", {"evidence_id": "E999999"}, "unknown region evidence id"),
    ("max_side tiny", "zoom", {"bbox": [0, 0, 10, 10], "max_side": 3}, "max_side"),
    ("image outside the folders", "scene_info", {"image": "/etc/hostname"}, "outside the image folders"),
    ("image missing", "scene_info", {"image": "{root}/none.tif"}, "no such file"),
    ("image is a folder", "scene_info", {"image": "{root}"}, "is a directory"),
    ("image /vsicurl", "scene_info", {"image": "/vsicurl/https://example.org/a.tif"}, "not allowed here"),
    ("image URL", "scene_info", {"image": "https://example.org/a.tif"}, "not allowed here"),
    ("image connection string", "scene_info", {"image": "HDF5:x.h5://data"}, "connection string"),
    ("empty question", "ask", {"question": "  "}, "question must be"),
    ("truncated image asked", "ask", {"question": "where are the roofs?", "image": "{root}/files/truncated.tif"},
     "truncated.tif: could not read"),
    ("bad thread id", "ask", {"question": "roofs?", "thread_id": "x" * 80}, "thread_id"),
    ("k zero", "lookup_knowledge", {"query": "ships", "k": 0}, "k must be"),
]


@pytest.mark.parametrize(("tool", "args", "expected"), [c[1:] for c in MCP_CASES], ids=[c[0] for c in MCP_CASES])
def test_mcp_arguments(home: Home, mcp_server: Any, intact: None, tool: str, args: dict[str, Any],
                       expected: str) -> None:
    from mcp import Client

    args = {k: v.format(root=home.root) if isinstance(v, str) else v for k, v in args.items()}
    if tool != "lookup_knowledge":
        args.setdefault("image", str(home.scene))

    async def call() -> Any:
        async with Client(mcp_server) as client:
            return await client.call_tool(tool, args)

    result = anyio.run(call)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert result.is_error and expected.lower() in text.lower() and "Traceback" not in text, text
    assert "\n" not in text.strip()


# --- afterwards -----------------------------------------------------------------------------------------------


def test_the_store_and_sessions_still_work_afterwards(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(home.cli("search", str(home.scene), "roofs", "--json", "--no-index")) == 0
    assert json.loads(capsys.readouterr().out)["hits"]
    assert main(home.cli("ask", str(home.scene), "and the trees?", "--thread", "good", "--json", "--quiet")) == 0
    assert json.loads(capsys.readouterr().out)["thread_id"] == "good"
    assert main(home.cli("trace", "verify", "good")) == 0
    capsys.readouterr()


def test_the_corpus_is_large_enough() -> None:
    assert len(CLI_CASES) + len(SETTINGS_CASES) + len(KB_CASES) + len(HTTP_CASES) + len(MCP_CASES) >= 80
