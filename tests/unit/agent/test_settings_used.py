"""Every setting does something: for each settings key, set it and observe its effect on the code path it
configures (the analyst, the workspace, the CLI, the MCP server, the trace). A key added to the schema
without a check here fails :func:`test_every_setting_has_a_check`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, ToolMessage

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.results import ToolResult
from rsrag.agent.settings import Settings, setting_keys
from tests.configured import TINY, settings_for
from tests.rasters import write_raster
from tests.scripted import ScriptedChatModel, call, last_evidence

Check = Callable[[Path, Path], None]
CHECKS: dict[str, Check] = {}


def check(*keys: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        for key in keys:
            CHECKS[key] = fn
        return fn
    return register


def search_zoom_answer(top_k: int = 2) -> ScriptedChatModel:
    return ScriptedChatModel(steps=[
        call("search_patches", phrases=["roofs"], top_k=top_k),
        lambda msgs: call("zoom", evidence_id=last_evidence(msgs)[0]),
        lambda msgs: call("answer", text=f"Roofs at {last_evidence(msgs)[0]}.", evidence_ids=last_evidence(msgs)[:1]),
    ])


def run(settings: Settings, scene: Path, model: Any = None, thread: str = "t") -> tuple[Analyst, Any, list[ToolMessage]]:
    """Ask one question; returns the (closed) analyst, the answer and the tool messages of the thread."""
    with Analyst(settings, model=model if model is not None else search_zoom_answer()) as analyst:
        answer = analyst.ask(scene, "where are the roofs?", thread_id=thread)
        tools = [m for m in analyst.history(thread) if isinstance(m, ToolMessage)]
    return analyst, answer, tools


@check("home")
def _home(tmp: Path, scene: Path) -> None:
    settings = settings_for(tmp, home=tmp / "h", **{"paths.sessions": None, "paths.crops": None, "store.path": None})
    run(settings, scene)
    assert (tmp / "h" / "sessions.sqlite").is_file() and (tmp / "h" / "store").is_dir() and any((tmp / "h" / "crops").rglob("*.png"))


@check("encoder.spec")
def _encoder_spec(tmp: Path, scene: Path) -> None:
    with Analyst(settings_for(tmp, encoder__spec=TINY)) as analyst:
        info = analyst.index(scene)
        assert info.encoder.startswith(TINY) and analyst.workspace.encoder.load().dim == 32


@check("encoder.batch_size")
def _encoder_batch_size(tmp: Path, scene: Path) -> None:
    with Analyst(settings_for(tmp, encoder__batch_size=3)) as analyst:
        info = analyst.index(scene)
        assert analyst.workspace.encoder.load().batch_size == 3 and info.n_patches > 0


@check("encoder.device")
def _encoder_device(tmp: Path, scene: Path) -> None:
    import torch

    with Analyst(settings_for(tmp, encoder__device="cuda")) as analyst:
        if torch.cuda.is_available():
            assert analyst.workspace.encoder.load().device.type == "cuda"
        else:  # the device reached the model: moving it there fails on a machine without CUDA
            with pytest.raises((AssertionError, RuntimeError), match="(?i)cuda|nvidia"):
                analyst.workspace.encoder.load()


@check("encoder.precision")
def _encoder_precision(tmp: Path, scene: Path) -> None:
    for precision in ("float32", "bfloat16"):
        with Analyst(settings_for(tmp, encoder__precision=precision, **{"store.path": tmp / precision})) as analyst:
            info = analyst.index(scene)
            assert analyst.workspace.encoder.load().precision == precision and info.n_patches > 0


@check("store.path")
def _store_path(tmp: Path, scene: Path) -> None:
    run(settings_for(tmp, store__path=tmp / "elsewhere"), scene)
    assert (tmp / "elsewhere").is_dir() and any((tmp / "elsewhere").iterdir())


@check("store.tiling")
def _store_tiling(tmp: Path, scene: Path) -> None:
    with Analyst(settings_for(tmp, store__tiling="grid:32")) as analyst:
        info = analyst.index(scene)
    assert info.tiling.startswith("grid:32") and info.n_patches == 16


@check("vlm.spec")
def _vlm_spec(tmp: Path, scene: Path) -> None:
    from rsrag.agent.models.policy import RulePolicy

    with Analyst(settings_for(tmp, vlm__spec="openai:tiny-model@http://127.0.0.1:9/v1")) as analyst:
        model = analyst.resources.chat_model()
        assert getattr(model, "model_name", None) == "tiny-model" and "127.0.0.1:9" in str(model.openai_api_base)
    with Analyst(settings_for(tmp, vlm__spec="rule")) as analyst:
        assert isinstance(analyst.resources.chat_model(), RulePolicy)
        assert analyst.ask(scene, "where are the roofs?").backend == "rule"


def searching_forever() -> ScriptedChatModel:
    return ScriptedChatModel(steps=[call("search_patches", phrases=["roofs"]) for _ in range(20)])


@check("budgets.max_steps")
def _max_steps(tmp: Path, scene: Path) -> None:
    _, answer, tools = run(settings_for(tmp, budgets__max_steps=2), scene, searching_forever())
    assert "2 of 2 steps used" in (answer.missing or answer.text) and len(tools) == 2


@check("budgets.max_seconds")
def _max_seconds(tmp: Path, scene: Path) -> None:
    _, answer, tools = run(settings_for(tmp, budgets__max_seconds=0.001), scene, searching_forever())
    assert "s used" in (answer.missing or answer.text) and len(tools) <= 1


@check("budgets.max_zoom_pixels")
def _max_zoom_pixels(tmp: Path, scene: Path) -> None:
    _, _, tools = run(settings_for(tmp, budgets__max_zoom_pixels=10), scene)
    zoom = next(t for t in tools if t.name == "zoom")
    assert zoom.status == "error" and "budget" in zoom.text.lower()


@check("budgets.max_zoom_side")
def _max_zoom_side(tmp: Path, scene: Path) -> None:
    from PIL import Image

    _, _, tools = run(settings_for(tmp, budgets__max_zoom_side=20), scene)
    crop = ToolResult.of(next(t for t in tools if t.name == "zoom")).crop
    with Image.open(crop or "") as image:
        assert max(image.size) == 20


@check("retrieval.top_k")
def _top_k(tmp: Path, scene: Path) -> None:
    def similar() -> ScriptedChatModel:  # regions like a corner window, as many as top_k says
        return ScriptedChatModel(steps=[call("search_similar", bbox=[0, 0, 32, 32])] + [AIMessage(content="stop")] * 3)

    for k in (1, 3):
        _, _, tools = run(settings_for(tmp / str(k), retrieval__top_k=k, store__tiling="grid:32"), scene, similar())
        assert len(ToolResult.of(tools[0]).evidence) == k, k


@check("retrieval.fast_threshold")
def _fast_threshold(tmp: Path, scene: Path) -> None:
    _, _, tools = run(settings_for(tmp, retrieval__fast_threshold=0.93), scene)
    assert ToolResult.of(tools[0]).threshold == pytest.approx(0.93)


@check("retrieval.refine", "retrieval.concept_match")
def _refine(tmp: Path, scene: Path) -> None:
    # what they do is tested in tests/unit/tools/test_refine.py and test_concepts.py; here: they reach the cascade
    import rsrag.agent.workspace as workspace

    seen: list[tuple[int, float]] = []
    real = workspace.cascade

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs["refine"], kwargs["concept_match"]))
        return real(*args, **kwargs)

    workspace.cascade = spy  # type: ignore[assignment]
    try:
        for n, match in ((0, 1.1), (7, 0.8)):
            run(settings_for(tmp / str(n), retrieval__refine=n, retrieval__concept_match=match), scene)
    finally:
        workspace.cascade = real  # type: ignore[assignment]
    assert seen and set(seen) == {(0, 1.1), (7, 0.8)}


@check("pyramid.beam", "pyramid.expand", "pyramid.sample", "pyramid.background_fill")
def _pyramid(tmp: Path, scene: Path) -> None:
    settings = settings_for(tmp, store__tiling="pyramid", pyramid__beam=3, pyramid__expand=5, pyramid__sample=9,
                            pyramid__background_fill="always")
    with Analyst(settings) as analyst:
        ws = analyst.workspace
        index = ws.index(ws.scene(scene))
        assert (index.beam, index.expand, ws.pyramid(ws.scene(scene)).sample, ws.background_fill) == (3, 5, 9, True)


@check("pyramid.complete_below")
def _complete_below(tmp: Path, scene: Path) -> None:
    seen = []
    for limit in (0, 100_000):  # never, and any scene
        settings = settings_for(tmp / f"c{limit}", store__tiling="pyramid:16:top=16", pyramid__beam=2, pyramid__expand=2,
                                pyramid__complete_below=limit)
        with Analyst(settings) as analyst:
            ws = analyst.workspace
            found = ws.retrieve(ws.scene(scene), ["roofs"], top_k=2, threshold=0.5, slow="never")
            seen.append((found.completed_windows, found.searched_share))
    assert seen[0][0] == 0 and seen[0][1] < 1 and seen[1][0] > 0 and seen[1][1] == 1.0


@check("pyramid.settle_below")
def _settle_below(tmp: Path, scene: Path) -> None:
    from rsrag.tools.calibration import clear_presence_cache
    from tests.presence_doubles import save_undecided_calibration

    completed = []
    for limit in (0, 100_000):
        settings = settings_for(tmp / str(limit), store__tiling="pyramid:16:top=16", pyramid__beam=2, pyramid__expand=2,
                                pyramid__settle_below=limit, pyramid__complete_below=0)
        with Analyst(settings) as analyst:
            ws = analyst.workspace
            save_undecided_calibration(ws.encoder)
            found = ws.retrieve(ws.scene(scene), ["roofs"], top_k=2, threshold=0.5, slow="never")
            completed.append((found.completed_windows, found.searched_share))
    clear_presence_cache()
    assert completed[0][0] == 0 and completed[0][1] < 1 and completed[1][0] > 0 and completed[1][1] == 1.0


@check("knowledge.name")
def _knowledge_name(tmp: Path, scene: Path) -> None:
    with Analyst(settings_for(tmp, knowledge__name="kb-two")) as analyst, Analyst(settings_for(tmp)) as default:
        two, one = analyst.workspace.knowledge, default.workspace.knowledge
        assert two.entry_schema.name != one.entry_schema.name and "kb_two" in two.entry_schema.name


@check("knowledge.weaviate_url", "knowledge.weaviate_api_key")
def _weaviate(tmp: Path, scene: Path) -> None:
    pytest.importorskip("weaviate")
    from rsrag.agent.interfaces.mcp import SceneTools
    from rsrag.tools.store.weaviate import WeaviateStore

    settings = settings_for(tmp, knowledge__weaviate_url="http://127.0.0.1:9", knowledge__weaviate_api_key="k-123")
    with Analyst(settings) as analyst:
        kb = analyst.workspace.knowledge  # the agent's lookups and slow path (no connection is made yet)
        assert isinstance(kb.store, WeaviateStore)
        assert kb.store.url == "http://127.0.0.1:9" and kb.store.api_key == "k-123"
        assert SceneTools(analyst).knowledge_base() is kb  # the MCP server reads the same one
    with Analyst(settings_for(tmp)) as analyst:
        assert not isinstance(analyst.workspace.knowledge.store, WeaviateStore)


@check("paths.sessions")
def _sessions(tmp: Path, scene: Path) -> None:
    run(settings_for(tmp, paths__sessions=tmp / "other.sqlite"), scene)
    assert (tmp / "other.sqlite").is_file() and not (tmp / "sessions.sqlite").exists()


@check("paths.crops")
def _crops(tmp: Path, scene: Path) -> None:
    _, _, tools = run(settings_for(tmp, paths__crops=tmp / "my-crops"), scene)
    crop = ToolResult.of(next(t for t in tools if t.name == "zoom")).crop
    assert crop and Path(crop).is_relative_to(tmp / "my-crops") and Path(crop).is_file()


def trace_events(settings: Settings, thread: str = "t") -> list[Any]:
    from rsrag.agent.trace import TraceStore
    from rsrag.tools.errors import TraceNotFoundError

    path = settings.trace_path
    try:
        return TraceStore(path).events(thread) if path.is_file() else []
    except TraceNotFoundError:
        return []


@check("trace.enabled")
def _trace_enabled(tmp: Path, scene: Path) -> None:
    on, off = settings_for(tmp / "on", trace__enabled=True), settings_for(tmp / "off", trace__enabled=False)
    run(on, scene)
    run(off, scene, search_zoom_answer())
    assert trace_events(on) and not trace_events(off)


@check("trace.sha256")
def _trace_sha256(tmp: Path, scene: Path) -> None:
    import hashlib

    settings = settings_for(tmp, trace__sha256=True)
    run(settings, scene)
    start = next(e for e in trace_events(settings) if e.kind == "run_start")
    assert start.provenance.scene_sha256 == hashlib.sha256(scene.read_bytes()).hexdigest()


@check("trace.redact")
def _trace_redact(tmp: Path, scene: Path) -> None:
    from rsrag.agent.interfaces.cli import main

    settings_file = tmp / "s.toml"
    settings_file.write_text(f'[paths]\nsessions = "{tmp / "sessions.sqlite"}"\n[trace]\nredact = "prompts"\n')
    run(settings_for(tmp), scene)
    out = tmp / "export.jsonl"
    assert main(["--settings", str(settings_file), "trace", "export", "t", "-o", str(out)]) == 0
    text = out.read_text()
    assert "where are the roofs?" not in text and "[redacted]" in text


@check("trace.otel")
def _trace_otel(tmp: Path, scene: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider

    with Analyst(settings_for(tmp, trace__otel="console")) as analyst:
        assert isinstance(analyst.tracer.provider, TracerProvider)
    with Analyst(settings_for(tmp / "none", trace__otel="")) as analyst:
        assert analyst.tracer.provider is None


@check("trace.path")
def _trace_path(tmp: Path, scene: Path) -> None:
    settings = settings_for(tmp, trace__path=tmp / "traces.sqlite")
    run(settings, scene)
    assert (tmp / "traces.sqlite").is_file() and trace_events(settings)


@check("trace.hmac_key")
def _trace_hmac(tmp: Path, scene: Path) -> None:
    from rsrag.agent.trace import TraceStore

    settings = settings_for(tmp, trace__hmac_key="s3cret")
    run(settings, scene)
    assert TraceStore(settings.trace_path).verify("t").ok
    assert not TraceStore(settings.trace_path, hmac_key=b"another").verify("t").ok


def _big_png(path: Path, flip: bool = False) -> Path:
    """A PNG just over the scene cache's size threshold (so opening it converts it into the cache)."""
    from tests.rasters import gradient

    data = gradient(3, 2100, 2100)
    return write_raster(path, data[:, ::-1].copy() if flip else data, driver="PNG", crs=None)


@check("cache.path")
def _cache_path(tmp: Path, scene: Path) -> None:
    png = _big_png(tmp / "big.png")
    with Analyst(settings_for(tmp, cache__path=tmp / "scene-cache")) as analyst:
        opened = analyst.workspace.scene(png)
        assert opened.info.cache is not None and Path(opened.info.cache).is_relative_to(tmp / "scene-cache")
    assert len(list((tmp / "scene-cache" / "entries").iterdir())) == 1


@check("cache.max_gb")
def _cache_max_gb(tmp: Path, scene: Path) -> None:
    first, second = _big_png(tmp / "a.png"), _big_png(tmp / "b.png", flip=True)
    settings = settings_for(tmp, cache__path=tmp / "c", cache__max_gb=1e-6)  # smaller than one entry
    for png in (first, second):
        with Analyst(settings) as analyst:
            analyst.workspace.scene(png)
    assert [e.source for e in settings.scene_cache().entries()] == [str(second)]  # the older one was evicted


def test_every_setting_has_a_check() -> None:
    missing = [k for k in setting_keys() if k not in CHECKS]
    stale = [k for k in CHECKS if k not in setting_keys()]
    assert not missing, f"settings without a check that they are used: {missing}"
    assert not stale, f"checks of settings that no longer exist: {stale}"


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    return write_raster(folder / "s.tif", np.random.default_rng(5).integers(0, 255, (3, 128, 128), dtype=np.uint8))


@pytest.mark.parametrize("key", setting_keys())
def test_setting_is_used(key: str, tmp_path: Path, scene: Path) -> None:
    if key not in CHECKS:
        pytest.fail(f"no check for setting {key!r}: add one to CHECKS")
    CHECKS[key](tmp_path, scene)


def test_settings_json_context_reaches_the_graph(tmp_path: Path, scene: Path) -> None:
    """A LangGraph server passes the context as JSON; it is read as settings (over file and environment)."""
    from rsrag.agent.context import AgentContext

    ctx = AgentContext({"retrieval": {"top_k": 2}, "store": {"tiling": "grid:32"}})  # type: ignore[arg-type]  # JSON form
    assert (ctx.top_k, ctx.settings.store.tiling) == (2, "grid:32")
    assert json.loads(ctx.settings.model_dump_json())["retrieval"]["top_k"] == 2
