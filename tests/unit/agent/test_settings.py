"""Settings: defaults < TOML file < RSRAG_* environment < explicit options; errors name the key and its source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsrag.agent.interfaces.cli import main
from rsrag.agent.settings import Settings, load_settings
from rsrag.tools.errors import ConfigError
from tests.rasters import write_raster

TINY = "rsrag-tiny-test:random"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    return write(tmp_path / "rsrag.toml", '[encoder]\nspec = "from-file"\nbatch_size = 8\n'
                                          '[retrieval]\ntop_k = 7\nfast_threshold = 0.4\n[vlm]\nspec = "rule"\n')


def test_defaults_follow_rsrag_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSRAG_HOME", str(tmp_path / "home"))
    s = load_settings()
    assert s.vlm.spec == "rule" and s.encoder.spec is None and s.retrieval.top_k == 5
    assert s.store_path == (tmp_path / "home" / "store").absolute()
    assert s.sessions_path == tmp_path / "home" / "sessions.sqlite" and s.crops_dir == tmp_path / "home" / "crops"
    assert s.make_budgets().max_steps == 10


def test_precedence_file_env_explicit(monkeypatch: pytest.MonkeyPatch, settings_file: Path) -> None:
    s = load_settings(settings_file)
    assert (s.encoder.spec, s.encoder.batch_size, s.retrieval.top_k) == ("from-file", 8, 7)
    monkeypatch.setenv("RSRAG_ENCODER__SPEC", "from-env")
    monkeypatch.setenv("RSRAG_RETRIEVAL__TOP_K", "9")
    s = load_settings(settings_file)
    # env wins over the file key by key; the file's other keys of the same section stay
    assert (s.encoder.spec, s.encoder.batch_size, s.retrieval.top_k, s.retrieval.fast_threshold) == ("from-env", 8, 9, 0.4)
    s = load_settings(settings_file, {"encoder.spec": "explicit", "retrieval.top_k": 3, "vlm.spec": None})
    assert (s.encoder.spec, s.retrieval.top_k, s.vlm.spec) == ("explicit", 3, "rule")


def test_settings_file_from_env_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings_file: Path) -> None:
    monkeypatch.setenv("RSRAG_HOME", str(tmp_path / "home"))
    assert load_settings().encoder.spec is None
    (tmp_path / "home").mkdir()
    write(tmp_path / "home" / "settings.toml", '[encoder]\nspec = "home-file"\n')
    assert load_settings().encoder.spec == "home-file"
    monkeypatch.setenv("RSRAG_SETTINGS", str(settings_file))
    assert load_settings().encoder.spec == "from-file"


@pytest.mark.parametrize(("text", "env", "override", "expected"), [
    ("[retrieval]\nfast_threshold = 1.5\n", {}, {}, "'retrieval.fast_threshold' (from settings file"),
    ("", {"RSRAG_RETRIEVAL__TOP_K": "0"}, {}, "'retrieval.top_k' (from environment variable RSRAG_RETRIEVAL__TOP_K)"),
    ("", {}, {"vlm.spec": "gpt-4o"}, "'vlm.spec' (from an explicit option): unknown VLM spec 'gpt-4o'"),
    ("[store]\ntiling = \"hexagons\"\n", {}, {}, "'store.tiling' (from settings file"),
    ("[encoder]\nspecc = \"x\"\n", {}, {}, "unknown setting 'encoder.specc' (in settings file"),
    ("[knowledge]\nweaviate_url = \"localhost:8080\"\n", {}, {}, "'knowledge.weaviate_url'"),
    ("[budgets\nmax_steps = 3\n", {}, {}, "is not valid TOML"),
    ("", {"RSRAG_ENCODER": "abc"}, {}, 'field "encoder"'),
])
def test_invalid_values_name_the_key_and_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], override: dict[str, str],
    expected: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "s.toml", text), override)
    assert expected in str(info.value)


def test_missing_settings_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_analyst_from_settings(tmp_path: Path) -> None:
    s = load_settings(overrides={"home": tmp_path, "retrieval.top_k": 4, "budgets.max_steps": 3,
                                 "retrieval.fast_threshold": 0.3, "store.tiling": "grid:64", "knowledge.name": "kb2"})
    with s.analyst() as analyst:
        ctx = analyst.context
        assert (ctx.top_k, ctx.fast_threshold, ctx.budgets.max_steps, ctx.vlm) == (4, 0.3, 3, "rule")
        assert ctx.workspace.tiling == "grid:64" and Path(ctx.workspace.store_path) == tmp_path.absolute() / "store"
        assert ctx.workspace.knowledge_name == "kb2"
        assert analyst.sessions_path == tmp_path / "sessions.sqlite" and ctx.crop_dir == tmp_path / "crops"


def test_secret_is_not_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RSRAG_KNOWLEDGE__WEAVIATE_API_KEY", "s3cret-key")
    s = Settings()
    assert "s3cret-key" not in repr(s) and s.knowledge.weaviate_api_key is not None
    assert main(["settings", "--json"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-key" not in out and json.loads(out)["settings"]["knowledge.weaviate_api_key"] == "**********"


def test_cli_option_beats_env_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RSRAG_VLM__SPEC", "openai:env-model@http://localhost:9/v1")
    monkeypatch.setenv("RSRAG_ENCODER__SPEC", "from-env")
    assert main(["--settings", str(settings_file), "--vlm", "rule", "settings", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings_file"] == str(settings_file)
    flat = out["settings"]
    assert flat["vlm.spec"] == "rule"  # the explicit option, though the environment says otherwise
    assert flat["encoder.spec"] == "from-env" and flat["encoder.batch_size"] == 8 and flat["retrieval.top_k"] == 7


def test_cli_bad_setting_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_raster(tmp_path / "s.tif", np.zeros((1, 32, 32), dtype=np.uint8))
    assert main(["--vlm", "gpt-4o", "ask", str(image), "what?"]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error: invalid setting 'vlm.spec'") and "openai:MODEL[@BASE_URL]" in out
    assert len(out.splitlines()) == 1 and "Traceback" not in out
    bad = write(tmp_path / "bad.toml", "[retrieval]\ntop_k = -1\n")
    assert main(["--settings", str(bad), "search", str(image), "roofs"]) == 2
    assert "'retrieval.top_k'" in capsys.readouterr().out


def test_index_and_search_use_the_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    image = write_raster(tmp_path / "s.tif", np.random.default_rng(0).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    store = tmp_path / "file-store"
    config = write(tmp_path / "rsrag.toml", f'[encoder]\nspec = "{TINY}"\n[store]\npath = "{store}"\ntiling = "grid:64"\n')
    assert main(["--settings", str(config), "index", str(image), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["info"]["tiling"].startswith("grid:64") and report["info"]["n_patches"] == 4 and store.is_dir()
    assert main(["--settings", str(config), "search", str(image), "roofs", "--no-index", "--json", "--top-k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 2
    # a command option beats the file: a fresh store has no index, and --no-index refuses to build one
    assert main(["--settings", str(config), "search", str(image), "roofs", "--no-index", "--store",
                 str(tmp_path / "other")]) == 2
