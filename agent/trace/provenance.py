"""Provenance of a run: which image, encoder, index, knowledge base, prompts, settings and versions."""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Any

from rsrag.agent.context import AgentContext, Resources
from rsrag.agent.trace.events import Provenance
from rsrag.tools.errors import RsragError

#: Prompt templates the analyst graph uses (name -> loader name); their versions are recorded.
GRAPH_PROMPTS = ("agent_system", "answer_feedback")
#: Libraries whose versions shape results.
LIBRARIES = ("langgraph", "langchain-core", "open_clip_torch", "torch", "lancedb", "rasterio")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_settings(context: AgentContext, resources: Resources) -> dict[str, Any]:
    """The settings of a run that a replay needs (JSON values only): every setting, secrets masked, and the
    chat model backend's name."""
    settings = context.settings.model_dump(mode="json")
    return {**settings, "backend": resources.backend}


def collect_provenance(context: AgentContext, resources: Resources, scene_path: str | None, sha256: bool = False,
                       catalog: str | None = None) -> Provenance:
    """Provenance of a run on ``scene_path`` (``None``: a run across ``catalog`` with no scene open; its scenes
    are named by its evidence and listed on its ``run_end`` event).

    Resolves the encoder and the scene's patch index through the workspace (the run's first search would
    do the same; both are cached). Failures to resolve one part are recorded as notes, never raised, so a
    trace is written even when, say, the index cannot be built.

    Args:
        context: the run's context (its settings).
        resources: the run's resources (the workspace).
        scene_path: the scene's path.
        sha256: also hash the whole file (slow for large images).
    """
    from rsrag.prompts import load_prompt
    from rsrag.tools.fastpath import PROMPT_VERSION

    ws = resources.workspace
    if scene_path is None:
        across = Provenance(scene_path="", scene_fingerprint="", catalog=catalog, encoder_spec=ws.encoder_spec,
                            tiling=ws.tiling, settings=run_settings(context, resources), package_version=_version("rsrag"),
                            versions={"python": sys.version.split()[0], **{lib: _version(lib) for lib in LIBRARIES}},
                            prompts={name: load_prompt(name).version for name in (*GRAPH_PROMPTS, "agent_catalog")},
                            notes=[f"a run across catalog {catalog!r}: each evidence names its scene"])
        across.prompts["fastpath_templates"] = PROMPT_VERSION
        return across
    scene = ws.scene(scene_path)
    prov = Provenance(catalog=catalog,
        scene_path=str(scene.path), scene_fingerprint=scene.fingerprint, scene_size=[scene.width, scene.height],
        scene_crs=scene.crs, scene_sha256=scene.sha256() if sha256 else None, encoder_spec=ws.encoder_spec,
        tiling=ws.tiling, settings=run_settings(context, resources), package_version=_version("rsrag"),
        versions={"python": sys.version.split()[0], **{lib: _version(lib) for lib in LIBRARIES}},
    )
    prov.prompts = {name: load_prompt(name).version for name in GRAPH_PROMPTS}
    prov.prompts["fastpath_templates"] = PROMPT_VERSION
    try:
        prov.encoder_id = ws.encoder.id
        info = ws.index(scene)
        prov.index_key, prov.tiling = info.key, info.tiling
        # the patch table's version, read from the store folder where it can be (no database opened)
        prov.index_table, prov.index_version = ws.patches.table_version(info.encoder, info.dim)
    except RsragError as exc:
        prov.notes.append(f"encoder/index not resolved: {exc}")
    try:
        knowledge = getattr(ws, "knowledge", None)  # the workspace's knowledge base (opened lazily)
    except RsragError as exc:
        knowledge = None
        prov.notes.append(f"knowledge base not opened: {exc}")
    if knowledge is not None and callable(getattr(knowledge, "stats", None)):
        try:
            stats = knowledge.stats()
            prov.knowledge_table, prov.knowledge_version = stats.get("table"), stats.get("version")
            if prov.knowledge_version is None:
                prov.notes.append(f"knowledge base {stats.get('name')!r} is empty")
        except RsragError as exc:
            prov.notes.append(f"knowledge base not resolved: {exc}")
    elif not prov.notes or "knowledge" not in prov.notes[-1]:
        prov.notes.append("no knowledge base configured in the workspace")
    return prov
