"""Settings: defaults < TOML file < RSRAG_* environment < explicit options; errors name the key and its source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsrag.agent.interfaces.cli import main
from pydantic import ValidationError

from rsrag.agent.settings import Settings, load_settings
from rsrag.tools.errors import ConfigError
from tests.rasters import write_raster

TINY = "rsrag-tiny-test:random"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    return write(tmp_path / "rsrag.toml", '[encoder]\nspec = "ViT-B-32:random"\nbatch_size = 16\n'
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
    assert (s.encoder.spec, s.encoder.batch_size, s.retrieval.top_k) == ("ViT-B-32:random", 16, 7)
    monkeypatch.setenv("RSRAG_ENCODER__SPEC", "RN50:random")
    monkeypatch.setenv("RSRAG_RETRIEVAL__TOP_K", "9")
    s = load_settings(settings_file)
    # env wins over the file key by key; the file's other keys of the same section stay
    assert (s.encoder.spec, s.encoder.batch_size, s.retrieval.top_k, s.retrieval.fast_threshold) == ("RN50:random", 16, 9, 0.4)
    s = load_settings(settings_file, {"encoder.spec": "rsrag-lit:random", "retrieval.top_k": 3, "vlm.spec": None})
    assert (s.encoder.spec, s.retrieval.top_k, s.vlm.spec) == ("rsrag-lit:random", 3, "rule")


def test_settings_file_from_env_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings_file: Path) -> None:
    monkeypatch.setenv("RSRAG_HOME", str(tmp_path / "home"))
    assert load_settings().encoder.spec is None
    (tmp_path / "home").mkdir()
    write(tmp_path / "home" / "settings.toml", '[encoder]\nspec = "ViT-B-16:random"\n')
    assert load_settings().encoder.spec == "ViT-B-16:random"
    monkeypatch.setenv("RSRAG_SETTINGS", str(settings_file))
    assert load_settings().encoder.spec == "ViT-B-32:random"


@pytest.mark.parametrize(("text", "env", "override", "expected"), [
    ("[retrieval]\nfast_threshold = 1.5\n", {}, {}, "'retrieval.fast_threshold' (from settings file"),
    ("", {"RSRAG_RETRIEVAL__TOP_K": "0"}, {}, "'retrieval.top_k' (from environment variable RSRAG_RETRIEVAL__TOP_K)"),
    ("", {}, {"vlm.spec": "gpt-4o"}, "'vlm.spec' (from an explicit option): unknown VLM spec 'gpt-4o'"),
    ("[store]\ntiling = \"hexagons\"\n", {}, {}, "'store.tiling' (from settings file"),
    ("[encoder]\nspecc = \"x\"\n", {}, {}, "unknown setting 'encoder.specc' (in settings file"),
    ("[knowledge]\nweaviate_url = \"localhost:8080\"\n", {}, {}, "'knowledge.weaviate_url'"),
    ("[budgets\nmax_steps = 3\n", {}, {}, "is not valid TOML"),
    ("", {"RSRAG_ENCODER": "abc"}, {}, 'field "encoder"'),
    ("", {}, {"encoder.spec": "remoteclp:ViT-B-32"}, "'encoder.spec' (from an explicit option): unknown encoder spec"),
    ("[encoder]\nspec = \"georsclip:ViT-Q-99\"\n", {}, {}, "unknown georsclip architecture 'ViT-Q-99'"),
    ("[encoder]\ndevice = \"gpu\"\n", {}, {}, "'encoder.device' (from settings file"),
    ("[trace]\nredact = \"prompts,secrets\"\n", {}, {}, "'trace.redact' (from settings file"),
    ("", {"RSRAG_TRACE__OTEL": "jaeger"}, {}, "'trace.otel' (from environment variable RSRAG_TRACE__OTEL)"),
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
        ws = analyst.workspace
        assert ws.tiling == "grid:64" and Path(ws.store_path) == tmp_path.absolute() / "store"
        assert ws.knowledge_name == "kb2"
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
    monkeypatch.setenv("RSRAG_ENCODER__SPEC", "RN50:random")
    assert main(["--settings", str(settings_file), "--vlm", "rule", "settings", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings_file"] == str(settings_file)
    flat = out["settings"]
    assert flat["vlm.spec"] == "rule"  # the explicit option, though the environment says otherwise
    assert flat["encoder.spec"] == "RN50:random" and flat["encoder.batch_size"] == 16 and flat["retrieval.top_k"] == 7


def test_cli_bad_setting_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_raster(tmp_path / "s.tif", np.zeros((1, 32, 32), dtype=np.uint8))
    assert main(["--vlm", "gpt-4o", "ask", str(image), "what?"]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("configuration error: invalid setting 'vlm.spec'") and "openai:MODEL[@BASE_URL]" in out
    assert len(out.splitlines()) == 1 and "Traceback" not in out
    bad = write(tmp_path / "bad.toml", "[retrieval]\ntop_k = -1\n")
    assert main(["--settings", str(bad), "search", str(image), "roofs"]) == 2
    assert "'retrieval.top_k'" in capsys.readouterr().err


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


@pytest.mark.parametrize(("name", "hint"), [
    ("RSRAG_TRACE_ENABLED", "did you mean RSRAG_TRACE__ENABLED?"),
    ("RSRAG_RETRIEVAL__TOPK", "did you mean RSRAG_RETRIEVAL__TOP_K?"),
    ("RSRAG_NOTHING_LIKE_IT", "settings are RSRAG_<SECTION>__<KEY>"),
])
def test_unknown_rsrag_variable_is_refused(monkeypatch: pytest.MonkeyPatch, name: str, hint: str) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"unknown environment variable {name}") and hint in message and "\n" not in message


def test_known_variables_that_are_not_settings_pass(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSRAG_WEAVIATE_URL", "http://localhost:1")
    monkeypatch.setenv("RSRAG_TRACE__SHA256", "true")
    monkeypatch.setenv("RSRAG_BUDGETS", '{"max_steps": 4}')
    s = load_settings()
    assert s.trace.sha256 is True and s.budgets.max_steps == 4


def test_trace_is_a_section_shown_by_rsrag_settings(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSRAG_TRACE__REDACT", "answers")
    assert main(["settings", "--json"]) == 0
    flat = json.loads(capsys.readouterr().out)["settings"]
    assert flat["trace.redact"] == "answers" and flat["trace.enabled"] is True and "trace.otel" in flat
    assert main(["settings"]) == 0
    assert "RSRAG_TRACE__REDACT" in capsys.readouterr().out


def test_settings_are_immutable_and_replace_validates() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.retrieval.top_k = 3  # type: ignore[misc]  # the point: assignment is refused
    changed = s.replace({"retrieval.top_k": 3, "trace.enabled": False})
    assert (changed.retrieval.top_k, changed.trace.enabled, s.retrieval.top_k) == (3, False, 5)
    with pytest.raises(ConfigError, match="'retrieval.top_k'"):
        s.replace({"retrieval.top_k": 0})


def test_misspelt_encoder_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_raster(tmp_path / "s.tif", np.zeros((1, 32, 32), dtype=np.uint8))
    store = tmp_path / "store"
    assert main(["--encoder", "remoteclp:ViT-B-32", "index", str(image), "--store", str(store)]) == 2
    captured = capsys.readouterr()
    out = (captured.out + captured.err).strip()
    assert "invalid setting 'encoder.spec'" in out and "remoteclp" in out and len(out.splitlines()) == 1
    assert not store.exists()  # nothing was opened or written


def test_defaults_are_declared_once() -> None:
    """The graph's context, the workspace and the CLI take their values from the settings: none of their
    modules declares a default of its own (a copy would drift, as cli/search.py's top-k of 20 did)."""
    import inspect

    from rsrag.agent import context, workspace
    from rsrag.agent.interfaces import api
    from rsrag.agent.interfaces.cli import ask, index, search, serve

    for module in (context, workspace, api, ask, index, search, serve):
        source = inspect.getsource(module)
        for literal in ("DEFAULT_TILING", "DEFAULT_TOP_K", "DEFAULT_THRESHOLD", "top_k: int = 5", "fast_threshold: float = 0.5",
                        "max_steps: int = 10", 'tiling: str = "'):
            assert literal not in source, (module.__name__, literal)
