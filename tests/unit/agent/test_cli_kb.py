"""`rsrag kb add / concepts / search / stats` end to end with a stand-in encoder; errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from rsrag.agent.interfaces.cli import index as index_cli
from rsrag.agent.interfaces.cli import main
from tests.index_doubles import TinyEncoder


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_cli, "load_cli_encoder", lambda settings: TinyEncoder())


def test_kb_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.new("RGB", (16, 16), (220, 30, 30)).save(tmp_path / "red.png")
    rows = [{"id": "a", "name": "Red fort", "category": "fort", "images": ["red.png"], "lon": 77.2, "lat": 28.6},
            {"id": "b", "name": "Harbour", "category": "port", "description": "container ships and cranes"},
            {"id": "a", "name": "duplicate"}]
    (tmp_path / "kb.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    store = ["--store", str(tmp_path / "s")]
    assert main(["kb", "add", str(tmp_path / "kb.jsonl"), *store, "--json"]) == 2  # imported, but not clean
    out = json.loads(capsys.readouterr().out)
    assert out["written"]["added"] == 2 and len(out["issues"]) == 1 and "kb.jsonl:3" in out["issues"][0]
    assert main(["kb", "add", str(tmp_path / "kb.jsonl"), *store]) == 2
    captured = capsys.readouterr()
    assert "0 added" in captured.out and "2 unchanged" in captured.out and "duplicate id" in captured.err
    assert captured.err.strip().splitlines()[-1].startswith("error: kb.jsonl: 1 of 3 records skipped")
    assert main(["kb", "search", "container ships", "--alpha", "0", *store, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["hits"][0]["id"] == "b" and res["mode"] == "text"
    assert main(["kb", "search", "", "--image", str(tmp_path / "red.png"), "--category", "fort", *store, "--json"]) == 0
    assert [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]] == ["a"]
    assert main(["kb", "search", "fort", "--bbox", "70,20,80,30", *store]) == 0
    assert "Red fort" in capsys.readouterr().out
    assert main(["kb", "stats", *store, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 2 and stats["images"] == 1 and stats["located"] == 1


def test_kb_concepts_and_errors(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", str(tmp_path / "s")]
    assert main(["kb", "concepts", str(shared_data / "aid-rsicd"), "--per-class", "2", *store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 30
    assert main(["kb", "stats", *store, "--json"]) == 0  # the library lands in the KB the agent reads
    assert json.loads(capsys.readouterr().out)["by_kind"] == {"concept": 30}
    assert main(["kb", "add", str(tmp_path / "missing.jsonl"), *store]) == 2
    assert "knowledge file not found" in capsys.readouterr().err
    assert main(["kb", "search", "x", "--bbox", "1,2,3", *store]) == 2
    assert "--bbox" in capsys.readouterr().err
    assert main(["kb", "search", "", "--image", str(tmp_path / "nope.png"), *store]) == 2
    assert "image not found" in capsys.readouterr().err


def test_kb_commands_use_the_configured_weaviate_server(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``knowledge.weaviate_url`` set, `rsrag kb` reads and writes that server, not the embedded store:
    a closed port on loopback is one error line naming it (exit 2), and nothing lands in the local store."""
    pytest.importorskip("weaviate")
    (tmp_path / "kb.jsonl").write_text(json.dumps({"id": "b", "name": "Harbour", "description": "cranes"}) + "\n")
    monkeypatch.setenv("RSRAG_KNOWLEDGE__WEAVIATE_URL", "http://127.0.0.1:9")
    store = ["--store", str(tmp_path / "s")]
    assert main(["kb", "add", str(tmp_path / "kb.jsonl"), *store]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's line
    assert "Weaviate at http://127.0.0.1:9" in err and "Start the server or fix the URL" in err and "Traceback" not in err
    assert main(["kb", "stats", *store, "--json"]) == 2
    assert "Weaviate at http://127.0.0.1:9" in capsys.readouterr().err
    monkeypatch.delenv("RSRAG_KNOWLEDGE__WEAVIATE_URL")
    assert main(["kb", "stats", *store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0
