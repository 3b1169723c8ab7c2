"""The analyst's tools: LangChain tools that wrap :mod:`rsrag.tools` for the graph.

Each tool builds one typed :class:`~rsrag.agent.results.ToolResult` and returns a LangGraph ``Command``
that appends a :class:`ToolMessage` (content: the compact text :func:`~rsrag.agent.results.render` makes
for the model; ``artifact``: the result itself) and adds the result's evidence records to the ledger. Bad arguments and unreadable inputs raise :class:`~rsrag.tools.errors.RsragError` subclasses, which the
graph's tool node (:func:`analyst_tool_node`) turns into an error message the model can act on (the text of
:func:`tool_error_message`) carrying a typed error result (the error's kind and its one-line reason).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolNode, ToolRuntime
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from PIL import Image
from pydantic import ValidationError

from rsrag.agent.answering import cited_ids, judge
from rsrag.agent.context import AgentContext, Resources, resources_for
from rsrag.agent.evidence import Evidence, evidence_from_hit, evidence_from_site
from rsrag.agent.evidence import evidence_id as make_evidence_id
from rsrag.agent.results import ToolResult, render
from rsrag.tools.calibration import Finding
from rsrag.tools.catalog import Catalog, CatalogScene
from rsrag.tools.errors import BudgetExceededError, QueryError, RsragError, StoreError, WindowError, error_kind, model_message, one_line
from rsrag.tools.georef import crs_units
from rsrag.tools.hit import Hit
from rsrag.tools.raster import Scene
from rsrag.tools.region import MapBox, PixelBox
from rsrag.tools.sources import source_key

if TYPE_CHECKING:
    from rsrag.agent.workspace import Workspace

THUMBNAIL_SIDE = 768
SNIPPET_CHARS = 400

Runtime = ToolRuntime[AgentContext, dict[str, Any]]
"""What LangGraph injects into every tool: the graph state, the run's :class:`AgentContext`, the call id."""


def _context(runtime: Runtime) -> AgentContext:
    return runtime.context  # type: ignore[no-any-return]


def _resources(runtime: Runtime) -> Resources:
    """The run's live resources (injected in its config, else the process-wide ones for its settings)."""
    return resources_for(_context(runtime), runtime.config)


def _workspace(runtime: Runtime) -> Workspace:
    return _resources(runtime).workspace


def _source(runtime: Runtime) -> str | None:
    """The path or URL of the scene the thread has open (``None``: a thread on a catalog, no scene chosen yet)."""
    return runtime.state.get("scene") or None


def _scene(runtime: Runtime) -> Scene:
    source = _source(runtime)
    if source is None:
        where = f" of catalog {runtime.state['catalog']!r}" if runtime.state.get("catalog") else ""
        raise QueryError(f"no scene is open: search the scenes{where} with find_scenes or search_catalog, then open "
                         "one with scene_info(scene=ID) or zoom on evidence of that scene")
    return _workspace(runtime).scene(source)


def _catalog(runtime: Runtime) -> Catalog:
    """The thread's catalog of scenes (in the workspace's store)."""
    name = runtime.state.get("catalog")
    if not name:
        raise QueryError("this thread has no catalog of scenes: ask with a catalog (e.g. `rsrag ask --catalog NAME`) "
                         "to search across scenes")
    return Catalog(_workspace(runtime).patches.store, name=str(name))


def _reply(runtime: Runtime, result: ToolResult, scene: str | None = None) -> Command:
    """The tool's message (text rendered from ``result``, which rides along as the artifact) and its evidence;
    ``scene``: the scene the thread switches to (a catalog scene opened, a zoom on evidence of another scene)."""
    message = ToolMessage(
        content=render(result), name=result.tool, tool_call_id=runtime.tool_call_id or "", artifact=result,
        status="error" if result.status == "error" else "success",
    )
    update: dict[str, Any] = {"messages": [message], "evidence": {e.id: e for e in result.evidence}}
    if result.zoomed_pixels:
        update["zoomed_pixels"] = result.zoomed_pixels
    if scene is not None and scene != _source(runtime):
        update["scene"] = scene
    return Command(update=update)


def resolve_box(
    scene: Scene,
    ledger: dict[str, Evidence],
    evidence_id: str | None,
    bbox: list[float] | None,
    map_bbox: list[float] | None,
    lonlat_bbox: list[float] | None,
) -> PixelBox:
    """The pixel box a tool call designates, by exactly one of: an evidence id, pixels, map or lon/lat."""
    given = [n for n, v in (("evidence_id", evidence_id), ("bbox", bbox), ("map_bbox", map_bbox), ("lonlat_bbox", lonlat_bbox)) if v]
    if len(given) != 1:
        raise WindowError(f"give exactly one of evidence_id, bbox, map_bbox, lonlat_bbox (got {given or 'none'})")
    if evidence_id:
        ev = ledger.get(evidence_id.strip())
        if ev is None or ev.region is None:
            known = ", ".join(k for k, e in ledger.items() if e.region is not None) or "none yet"
            raise WindowError(f"unknown region evidence id {evidence_id!r}; known region ids: {known}")
        return ev.region.box
    values = bbox or map_bbox or lonlat_bbox
    if values is None or len(values) != 4:
        raise WindowError(f"{given[0]} needs four numbers [x0, y0, x1, y1] / [left, bottom, right, top], got {values}")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise WindowError(f"{given[0]} needs four finite numbers, got {values}")
    if bbox:
        return scene.check_box(PixelBox(x0=int(bbox[0]), y0=int(bbox[1]), x1=int(round(bbox[2])), y1=int(round(bbox[3]))))
    if map_bbox:
        if scene.crs is None:
            raise WindowError(f"{scene.path.name} has no CRS; use bbox in pixels")
        return scene.box_from_map(MapBox(crs=scene.crs, left=map_bbox[0], bottom=map_bbox[1], right=map_bbox[2], top=map_bbox[3]))
    return scene.box_from_lonlat(*lonlat_bbox)  # type: ignore[misc]


@tool(parse_docstring=True)
def scene_info(runtime: Runtime, scene: str | None = None) -> Command:
    """Describe the scene: size, bands, CRS, ground sample distance, footprint, and show an overview image.
    With a catalog, ``scene`` opens one of its scenes (by id): the other tools then work on it.

    Args:
        scene: id of a catalog scene to open (from find_scenes or search_catalog); default: the open scene.
    """
    ctx = _context(runtime)
    source = _catalog(runtime).get(scene.strip()).source if scene and scene.strip() else None
    opened = _workspace(runtime).scene(source) if source is not None else _scene(runtime)
    source = source or _source(runtime)
    info = opened.info
    out = opened.full_box.fit_within(THUMBNAIL_SIDE)
    ev_id = make_evidence_id(opened.fingerprint, "scene")
    crop = _crop_path(ctx, runtime, ev_id)
    Image.fromarray(opened.read_display(opened.full_box, out_size=out)).save(crop)
    ev = Evidence(id=ev_id, kind="scene", path="scene", region=opened.region(opened.full_box), crop=str(crop),
                  tool="scene_info", tool_call_id=runtime.tool_call_id or "", scene_source=source,
                  scene_id=_catalog_id(runtime, opened.fingerprint), provenance={"fingerprint": opened.fingerprint})
    facts = {"name": opened.path.name, "width": opened.width, "height": opened.height, "bands": opened.count,
             "dtype": info.dtypes[0], "nodata": info.nodata, "mask": info.mask, "overview_size": [out[1], out[0]],
             "crs": str(info.crs) if opened.georeferenced and info.gsd else None,
             "gsd": list(info.gsd) if opened.georeferenced and info.gsd else None,
             "gsd_units": crs_units(info.crs) if opened.georeferenced and info.gsd and info.crs else None,
             "scene": ev.scene_id}
    return _reply(runtime, ToolResult(tool="scene_info", views=[ev], crop=str(crop), extras=facts), scene=source)


def _catalog_id(runtime: Runtime, fingerprint: str) -> str | None:
    """The catalog's id of the scene with ``fingerprint``, when the thread has a catalog that holds it."""
    if not runtime.state.get("catalog"):
        return None
    return next((s.id for s in _catalog(runtime).scenes() if s.fingerprint == fingerprint), None)


def _evidence_scene(runtime: Runtime, ledger: dict[str, Evidence], evidence_id: str | None) -> str | None:
    """The source of the scene evidence ``evidence_id`` lies in, when that is not the open scene (a zoom on it
    opens it); ``None`` when it is the open scene or no id is given.

    Raises:
        WindowError: the evidence is in another scene whose source it does not record.
    """
    ev = ledger.get(evidence_id.strip()) if evidence_id else None
    if ev is None or ev.region is None:
        return None
    current = _source(runtime)
    if ev.scene_source is not None:
        if current is not None and source_key(ev.scene_source) == source_key(current):
            return None
        if current is not None and _workspace(runtime).scene(current).fingerprint == ev.fingerprint:
            return None
        return ev.scene_source
    if current is None:
        raise WindowError(f"evidence {ev.id} does not say which scene it is in and no scene is open")
    return None


def _catalog_scenes(catalog: Catalog, refs: list[str]) -> list[CatalogScene]:
    """The catalog's scenes named by id, source or fingerprint (one read of the catalog for all of them).

    Raises:
        QueryError: a reference names no scene of the catalog.
    """
    known: dict[str, CatalogScene] = {}
    for scene in catalog.scenes():
        for key in (scene.fingerprint, scene.source, scene.id):
            known[key] = scene
    out: list[CatalogScene] = []
    for ref in refs:
        scene = known.get(ref.strip()) or catalog.get(ref.strip())  # get() raises, naming the catalog's scenes
        if scene not in out:
            out.append(scene)
    return out


def _scene_facts(scene: CatalogScene, indexed: bool | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {"id": scene.id, "source": scene.source, "fingerprint": scene.fingerprint,
                             "size": [scene.width, scene.height], "bbox": list(scene.bbox) if scene.bbox else None,
                             "datetime": scene.datetime, "gsd": scene.gsd}
    if indexed is not None:
        facts["indexed"] = indexed
    return facts


@tool(parse_docstring=True)
def find_scenes(
    runtime: Runtime,
    lonlat_bbox: list[float] | None = None,
    point: list[float] | None = None,
    radius_km: float = 0.0,
    start: str | None = None,
    end: str | None = None,
    where: dict[str, Any] | None = None,
) -> Command:
    """Find the scenes of the catalog by place, time or property (every scene when no condition is given).

    Args:
        lonlat_bbox: [west, south, east, north] in degrees: scenes whose footprint intersects it.
        point: [lon, lat] in degrees: scenes within radius_km of it (0: scenes that contain it), nearest first.
        radius_km: search radius around point, in kilometres.
        start: earliest acquisition time (ISO 8601, e.g. "2024-01-01").
        end: latest acquisition time (ISO 8601).
        where: property -> value the scene must have (e.g. {"platform": "sentinel-2"}, {"crs": "EPSG:32631"}).
    """
    from rsrag.tools.catalog_search import scene_indexes

    catalog, ws = _catalog(runtime), _workspace(runtime)
    scenes = catalog.find(bbox=lonlat_bbox, point=point, radius_km=radius_km, start=start, end=end, where=where)
    indexed = scene_indexes(ws.patches, ws.encoder.id) if scenes else {}
    listed = [_scene_facts(s, s.fingerprint in indexed) for s in scenes]
    filters = {k: v for k, v in {"lonlat_bbox": lonlat_bbox, "point": point, "radius_km": radius_km if point else None,
                                 "start": start, "end": end, "where": where}.items() if v}
    result = ToolResult(tool="find_scenes", status="ok" if scenes else "empty",
                        extras={"catalog": catalog.name, "scenes": listed, "filters": filters,
                                "total": len(catalog.scenes())})
    return _reply(runtime, result)


@tool(parse_docstring=True)
def search_catalog(
    phrases: list[str],
    runtime: Runtime,
    scenes: list[str] | None = None,
    top_k: int | None = None,
) -> Command:
    """Search every indexed scene of the catalog at once for short key phrases naming ONE kind of thing (the
    same cascade as search_patches, per scene). Scenes come back ranked, those where it was found first; every
    site names its scene. Zoom on a site's id to open its scene.

    Args:
        phrases: 1-4 short noun phrases naming one kind of thing (synonyms), e.g. ["storage tanks", "oil tanks"].
        scenes: ids of the scenes to search (e.g. from find_scenes); default: every scene of the catalog.
        top_k: sites shown per scene (default from settings); every site found is kept as evidence.
    """
    from rsrag.tools.catalog_search import search_catalog as run_search

    ctx, ws, catalog = _context(runtime), _workspace(runtime), _catalog(runtime)
    clean = [p.strip() for p in phrases if p and p.strip()]
    if not clean:
        raise QueryError("phrases is empty: pass 1-4 short phrases naming what to look for")
    pool = _catalog_scenes(catalog, scenes) if scenes else None
    k = top_k or ctx.top_k
    kb = ws.knowledge if ws.has_concepts() else None
    found = run_search(catalog, ws.patches, ws.encoder, phrases=clean[:4], scenes=pool, top_k=k,
                       threshold=ctx.fast_threshold, kb=kb, presence=ws.presence,
                       concept_match=ctx.settings.retrieval.concept_match)
    call_id = runtime.tool_call_id or ""
    sites: list[Evidence] = []
    candidates: list[Evidence] = []
    listed: list[dict[str, Any]] = []
    for part in found.scenes:
        src, sid = part.scene.source, part.scene.id
        if part.found:
            mine = [evidence_from_site(s, "search_catalog", call_id, src, sid) for s in part.result.all_sites]
            sites += mine
        else:
            mine = [evidence_from_site(s, "search_catalog", call_id, src, sid) for s in part.result.all_sites[:k]]
            candidates += mine[:1]
        listed.append({**_scene_facts(part.scene), "found": part.found, "finding": part.result.finding,
                       "best": round(part.best, 4), "ids": [e.id for e in mine], "n_sites": len(part.result.sites)})
    findings = {s.result.finding for s in found.scenes}
    finding: Finding | None
    if found.matching:
        finding = "found"
    elif not found.scenes or None in findings:
        finding = None
    else:
        finding = "not_found" if findings == {"not_found"} else "uncertain"
    result = ToolResult(
        tool="search_catalog", status="ok" if sites or candidates else "empty", sites=sites, candidates=candidates,
        threshold=found.threshold, path="fast+slow" if any(p.result.used_slow for p in found.scenes) else "fast",
        finding=finding, phrases=found.phrases, shown=k,
        extras={"catalog": catalog.name, "scenes": listed, "skipped": list(found.skipped),
                "searched": len(found.scenes), "ms": round(found.ms, 1)},
    )
    return _reply(runtime, result)


@tool(parse_docstring=True)
def search_patches(
    phrases: list[str],
    runtime: Runtime,
    top_k: int | None = None,
    offset: int = 0,
    exclude: list[str] | None = None,
) -> Command:
    """Find every place in the scene that matches short key phrases naming ONE kind of thing (the fast
    path; when nothing is confident, also the slow path through the knowledge base's visual concepts).
    Overlapping or touching windows are grouped into sites; the result says whether the thing was found.

    Args:
        phrases: 1-4 short noun phrases naming one kind of thing (synonyms), e.g. ["storage tanks", "oil tanks"].
        top_k: how many sites to show (default from settings); every site found is kept as evidence.
        offset: skip this many sites (to see more sites of the same phrases).
        exclude: evidence ids of sites already reported: places overlapping them are left out.
    """
    ctx, scene = _context(runtime), _scene(runtime)
    clean = [p.strip() for p in phrases if p and p.strip()]
    if not clean:
        raise QueryError("phrases is empty: pass 1-4 short phrases naming what to look for")
    if offset < 0:
        raise QueryError(f"offset must be 0 or more, got {offset}")
    k = top_k or ctx.top_k
    ledger: dict[str, Evidence] = runtime.state.get("evidence") or {}
    unknown = [i for i in exclude or [] if i not in ledger or ledger[i].region is None]
    if unknown:
        known = ", ".join(i for i, e in ledger.items() if e.region is not None) or "none yet"
        raise QueryError(f"exclude names unknown region evidence ids {', '.join(unknown)}; known region ids: {known}")
    boxes = [ledger[i].region.box for i in exclude or [] if ledger[i].region is not None]  # type: ignore[union-attr]
    found = _workspace(runtime).retrieve(scene, clean[:4], k, ctx.fast_threshold, exclude=boxes)
    call_id = runtime.tool_call_id or ""
    source, scene_id = _source(runtime), _catalog_id(runtime, scene.fingerprint)
    sites = [evidence_from_site(s, "search_patches", call_id, source, scene_id) for s in found.sites]
    candidates = [evidence_from_site(s, "search_patches", call_id, source, scene_id) for s in found.candidates]
    notes = [f"slow path: {found.slow.reason}"] if found.slow is not None and found.slow.reason else []
    if found.presence_note:
        notes.append(found.presence_note)
    result = ToolResult(
        tool="search_patches", status="ok" if sites or candidates else "empty", sites=sites, candidates=candidates,
        threshold=found.threshold, path=found.path, finding=found.finding, phrases=found.phrases, shown=k,
        offset=offset,
        message="; ".join(notes) or None,
        extras={"index_version": found.index_version, "reason": found.reason, "levels": found.levels,
                "searched_share": found.searched_share, "scene_size": [scene.width, scene.height],
                "excluded": list(exclude or []),
                **({"completed_windows": found.completed_windows} if found.completed_windows else {})},
    )
    return _reply(runtime, result)


@tool(parse_docstring=True)
def lookup_knowledge(query: str, runtime: Runtime, category: str | None = None, k: int | None = None) -> Command:
    """Search the knowledge base (landmarks, facilities, land-cover classes) and, through its visual concept
    library, the scene itself (the slow path: regions that look like the concept's example images).

    Args:
        query: what to look up, in words: a name, a class, a short description.
        category: only knowledge entries of this category.
        k: how many entries and regions to return.
    """
    ctx, scene = _context(runtime), _scene(runtime)
    if not query.strip():
        raise QueryError("query is empty: give a name, class or short description to look up")
    k = k or ctx.top_k
    call_id = runtime.tool_call_id or ""
    try:
        kb = _workspace(runtime).knowledge
        found = kb.search(query, k=k, kind="knowledge", category=category)
        slow = _workspace(runtime).slow_search(scene, [query], k, ctx.fast_threshold) if _workspace(runtime).has_concepts() else None
    except StoreError as exc:
        return _reply(runtime, ToolResult(tool="lookup_knowledge", status="error", error_kind="unavailable",
                                          message=f"knowledge base unavailable: {exc}", phrases=[query]))
    entries = [
        Evidence(id=make_evidence_id("knowledge", hit.entry.id), kind="knowledge", path="knowledge",
                 knowledge_id=hit.entry.id, title=hit.entry.name or hit.entry.id, score=round(hit.score, 4),
                 snippet=" ".join(hit.entry.search_text().split())[:SNIPPET_CHARS], query=query, tool="lookup_knowledge",
                 tool_call_id=call_id, provenance={"kb_table": found.table, "kb_version": found.version})
        for hit in found.hits
    ]
    regions = [evidence_from_hit(h, "lookup_knowledge", call_id, _source(runtime), _catalog_id(runtime, scene.fingerprint))
               for h in (slow.hits if slow else [])]
    result = ToolResult(
        tool="lookup_knowledge", status="ok" if entries or regions else "empty", entries=entries, hits=regions,
        threshold=slow.threshold if slow else None, path="slow" if slow else None, phrases=[query],
        extras={"slow_path": slow is not None, "slow_reason": slow.reason if slow else None,
                "kb_table": found.table, "kb_version": found.version},
    )
    return _reply(runtime, result)


@tool(parse_docstring=True)
def rerank(runtime: Runtime, evidence_ids: list[str] | None = None, method: str = "fuse", k: int | None = None) -> Command:
    """Re-rank the regions found so far for this question: fuse the lists of different searches (reciprocal
    rank fusion), merge overlapping regions across scales, and keep a spatially diverse top k (MMR).

    Args:
        evidence_ids: region evidence to re-rank (default: every region found for the current question).
        method: "fuse" (fusion + merge + diversity), "merge" (only merge overlaps) or "diverse" (only MMR).
        k: how many regions to keep.
    """
    from rsrag.tools.rerank import merge_spatial, mmr_hits, reciprocal_rank_fusion

    ctx = _context(runtime)
    ledger: dict[str, Evidence] = runtime.state.get("evidence") or {}
    chosen = [ledger[i] for i in evidence_ids or [] if i in ledger] if evidence_ids else _current_regions(runtime)
    chosen = [e for e in chosen if e.region is not None and e.path in ("fast", "slow", "similar")]
    if not chosen:
        raise QueryError("no retrieved regions to re-rank: search first, or pass evidence_ids of fast/slow/similar hits")
    if method not in ("fuse", "merge", "diverse"):
        raise QueryError(f"unknown method {method!r}; use 'fuse', 'merge' or 'diverse'")
    hits = [_as_hit(e) for e in chosen]
    k = k or ctx.top_k
    if method == "fuse":
        by_call: dict[str, list[Hit]] = {}
        for e, h in zip(chosen, hits):
            by_call.setdefault(e.tool_call_id, []).append(h)
        ranked = mmr_hits(merge_spatial(reciprocal_rank_fusion(list(by_call.values()))), k)
    elif method == "merge":
        ranked = merge_spatial(hits)[:k]
    else:
        ranked = mmr_hits(hits, k)
    ids = {(e.region.box.as_tuple(), e.path, e.query): e.id for e in chosen if e.region is not None}
    order = [ids[(h.region.box.as_tuple(), h.path, h.query)] for h in ranked]
    result = ToolResult(tool="rerank", hits=[ledger[i] for i in order], extras={"method": method, "ranked": order})
    return _reply(runtime, result)


def _current_regions(runtime: Runtime) -> list[Evidence]:
    start = int(runtime.state.get("question_start") or 0)
    calls = {c["id"] for m in runtime.state.get("messages", [])[start:] if m.type == "ai" for c in m.tool_calls}
    return [e for e in (runtime.state.get("evidence") or {}).values() if e.tool_call_id in calls]


def _as_hit(ev: Evidence) -> Hit:
    assert ev.region is not None
    return Hit(region=ev.region, score=ev.score or 0.0, confidence=ev.confidence or 0.0,
               path=ev.path, query=ev.query or "")  # type: ignore[arg-type]


@tool(parse_docstring=True)
def search_similar(
    runtime: Runtime,
    evidence_id: str | None = None,
    bbox: list[float] | None = None,
    top_k: int | None = None,
) -> Command:
    """Find other regions of the scene that look like a given region.

    Args:
        evidence_id: id of a region evidence to use as the example.
        bbox: or the example as [x0, y0, x1, y1] in full-resolution pixels.
        top_k: how many regions to return.
    """
    ctx, scene = _context(runtime), _scene(runtime)
    box = resolve_box(scene, runtime.state.get("evidence") or {}, evidence_id, bbox, None, None)
    hits = _workspace(runtime).search_similar(scene, box, top_k or ctx.top_k)
    source, scene_id = _source(runtime), _catalog_id(runtime, scene.fingerprint)
    evidence = [evidence_from_hit(h, "search_similar", runtime.tool_call_id or "", source, scene_id) for h in hits]
    result = ToolResult(tool="search_similar", status="ok" if evidence else "empty", hits=evidence, path="similar",
                        extras={"example": list(box.as_tuple())})
    return _reply(runtime, result)


@tool(parse_docstring=True)
def zoom(
    runtime: Runtime,
    evidence_id: str | None = None,
    bbox: list[float] | None = None,
    map_bbox: list[float] | None = None,
    lonlat_bbox: list[float] | None = None,
    max_side: int | None = None,
) -> Command:
    """Look at a region of the scene; the crop is shown to you as an image. Zooming on evidence of another
    scene (from search_catalog) opens that scene.

    Args:
        evidence_id: id of a region evidence to zoom on.
        bbox: or [x0, y0, x1, y1] in full-resolution pixels.
        map_bbox: or [left, bottom, right, top] in the scene's CRS.
        lonlat_bbox: or [west, south, east, north] in degrees.
        max_side: longest side of the crop in pixels (default from settings; smaller is cheaper).
    """
    ctx = _context(runtime)
    ledger = runtime.state.get("evidence") or {}
    source = _evidence_scene(runtime, ledger, evidence_id)
    scene = _workspace(runtime).scene(source) if source is not None else _scene(runtime)
    source = source or _source(runtime)
    box = resolve_box(scene, ledger, evidence_id, bbox, map_bbox, lonlat_bbox)
    used = int(runtime.state.get("zoomed_pixels") or 0)
    budget = ctx.budgets.max_zoom_pixels
    if used + box.area > budget:
        raise BudgetExceededError(
            f"zooming on {box.width} x {box.height} px would exceed the zoom budget ({used:,} of {budget:,} px used); "
            "zoom on a smaller box or answer with the evidence you have"
        )
    side = max(16, min(max_side or ctx.budgets.max_zoom_side, ctx.budgets.max_zoom_side))
    out = box.fit_within(side)
    origin = ledger.get(evidence_id.strip()) if evidence_id else None
    ev_id = make_evidence_id(scene.fingerprint, box.as_tuple(), "zoom")
    crop = _crop_path(ctx, runtime, ev_id)
    Image.fromarray(scene.read_display(box, out_size=out)).save(crop)
    ev = Evidence(
        id=ev_id, kind="region", path="zoom", region=scene.region(box), crop=str(crop),
        confidence=origin.confidence if origin else None, query=origin.query if origin else None,
        why=f"zoom on {origin.id}" if origin else None, tool="zoom", tool_call_id=runtime.tool_call_id or "",
        scene_source=source, scene_id=origin.scene_id if origin else _catalog_id(runtime, scene.fingerprint),
    )
    result = ToolResult(tool="zoom", views=[ev], crop=str(crop), zoomed_pixels=box.area,
                        extras={"out_size": [out[1], out[0]], "source": origin.id if origin else None,
                                "scene": ev.scene_name})
    return _reply(runtime, result, scene=source)


@tool(parse_docstring=True)
def answer(text: str, evidence_ids: list[str], runtime: Runtime, confidence: float = 0.5,
           finding: Finding | None = None) -> Command:
    """Give the final answer. Cite the ids of the evidence that supports it.

    Args:
        text: the answer for the analyst; refer to places by their evidence ids. If what was asked is not in
            the scene, say so first.
        evidence_ids: ids of the evidence the answer relies on (from tool results).
        confidence: your confidence in the answer, from 0 to 1.
        finding: "found", "not_found" or "uncertain": whether what was asked is in the scene (default: what
            this question's searches concluded).
    """
    verdict = judge(runtime.state, text, cited_ids(text, evidence_ids), confidence, _resources(runtime).backend,
                    finding=finding)
    attempts = int(runtime.state.get("answer_attempts") or 0)
    if verdict.answer is None:
        from rsrag.prompts import load_prompt

        known = ", ".join(runtime.state.get("evidence") or {}) or "none"
        feedback = load_prompt("answer_feedback").format(reason=verdict.reason, known_ids=known)
        rejected = ToolResult(tool="answer", status="error", error_kind="unsupported", message=feedback)
        message = ToolMessage(content=render(rejected), name="answer", tool_call_id=runtime.tool_call_id or "",
                              status="error", artifact=rejected)
        return Command(update={"messages": [message], "answer_attempts": attempts + 1})
    recorded = ToolResult(tool="answer", cited=list(verdict.answer.cited))
    message = ToolMessage(content=render(recorded), name="answer", tool_call_id=runtime.tool_call_id or "",
                          artifact=recorded)
    return Command(update={"messages": [message], "answer": verdict.answer})


def _crop_path(ctx: AgentContext, runtime: Runtime, ev_id: str) -> Path:
    thread = str((runtime.config.get("configurable") or {}).get("thread_id") or "default")
    folder = Path(ctx.crop_dir) / "".join(c if c.isalnum() or c in "-_" else "_" for c in thread)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{ev_id}.png"


def tool_error_message(error: Exception) -> str:
    """What the model sees when a tool call fails: the reason, and whether other arguments can fix it (from
    the error's kind: only an ``argument`` error asks for a corrected call; see :mod:`rsrag.tools.errors`)."""
    return model_message(error)


_HANDLED_ERRORS = (RsragError, ValidationError)
"""What a tool call may fail with and still be answered; any other exception is a bug and propagates."""

# ToolNode picks the exception types it turns into messages from the handler's annotation object (not a
# string): the same set.
tool_error_message.__annotations__ = {"error": Union[_HANDLED_ERRORS], "return": str}  # noqa: UP007


def _error_reply(request: ToolCallRequest, exc: Exception) -> ToolMessage:
    """The failed call's message: the model reads :func:`tool_error_message`'s text; the typed result (the
    error's kind and its one-line reason, without the hint for the model) rides along for everything else
    (the rule policy's answer, the CLI's exit status, MCP, the trace)."""
    name = str(request.tool_call.get("name") or "tool")
    result = ToolResult(tool=name, status="error", error_kind=error_kind(exc).value, message=one_line(exc))
    return ToolMessage(content=tool_error_message(exc), name=name, tool_call_id=str(request.tool_call.get("id") or ""),
                       status="error", artifact=result)


def typed_tool_errors(request: ToolCallRequest, execute: Callable[[ToolCallRequest], Any]) -> Any:
    """``ToolNode(wrap_tool_call=...)``: a tool call that fails with an rsrag error (or bad arguments) becomes an
    error message carrying a typed :class:`ToolResult` (use with ``handle_tool_errors=False``)."""
    try:
        return execute(request)
    except _HANDLED_ERRORS as exc:
        return _error_reply(request, exc)


async def atyped_tool_errors(request: ToolCallRequest, execute: Callable[[ToolCallRequest], Awaitable[Any]]) -> Any:
    """The asynchronous form of :func:`typed_tool_errors` (``ToolNode(awrap_tool_call=...)``)."""
    try:
        return await execute(request)
    except _HANDLED_ERRORS as exc:
        return _error_reply(request, exc)


def analyst_tool_node() -> ToolNode:
    """The tool node of the analyst graph: :func:`analyst_tools`, whose failures become typed error results."""
    return ToolNode(analyst_tools(), handle_tool_errors=False, wrap_tool_call=typed_tool_errors,
                    awrap_tool_call=atyped_tool_errors)


def analyst_tools() -> list[BaseTool]:
    """The tools of the analyst graph, in the order the system prompt lists them."""
    return [scene_info, find_scenes, search_catalog, search_patches, lookup_knowledge, search_similar, rerank, zoom,
            answer]
