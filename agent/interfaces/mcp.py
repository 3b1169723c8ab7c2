"""rsrag as an MCP server, so other agents can use its tools and ask it questions.

Tools: ``scene_info`` (size, CRS, footprint and an overview image), ``search_patches`` (fast path: phrases
-> regions with pixel and map boxes), ``zoom`` (a region at native resolution, returned as MCP image
content), ``lookup_knowledge`` (the knowledge base, when :mod:`rsrag.tools.knowledge` is installed) and
``ask`` (the whole analyst agent: a cited answer; ``thread_id`` continues a conversation).

The scene tools run the same code as the analyst graph's tools (:mod:`rsrag.agent.toolkit`). Evidence ids
returned by ``search_patches`` and ``zoom`` can be passed back to ``zoom`` (per scene, for the server's
lifetime). Errors come back as tool errors with one clear message.

Replies are sized for a calling model: JSON is compact (no indentation, floats rounded to what the numbers
mean: 4 decimals for scores and map coordinates, 6 for degrees) and provenance shared by every region is
given once; the scene overview is a JPEG whose longest side is ``max_side`` (default: the settings'
``budgets.max_zoom_side``, 1024 px); an empty result says what would fill it (e.g. ``rsrag kb concepts``).
Every parameter's schema says its units.

Example (in-process, as the tests do; ``rsrag mcp`` serves it over stdio or HTTP)::

    from mcp import Client
    server = build_mcp_server(load_settings().analyst())
    async with Client(server) as client:
        result = await client.call_tool("zoom", {"image": "scene.tif", "bbox": [0, 0, 512, 512]})
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from PIL import Image as PILImage
from pydantic import Field

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.evidence import Evidence
from rsrag.agent.results import ToolResult, headline
from rsrag.agent.settings import Settings
from rsrag.agent.toolkit import lookup_knowledge as lookup_knowledge_tool
from rsrag.agent.toolkit import scene_info as scene_info_tool
from rsrag.agent.toolkit import search_patches as search_patches_tool
from rsrag.agent.toolkit import zoom as zoom_tool
from rsrag.tools.errors import (
    KIND_POLICIES,
    AccessDeniedError,
    ErrorKind,
    QueryError,
    RsragError,
    WindowError,
    mcp_message,
)
from rsrag.tools.sandbox import Sandbox

MAX_PHRASES = 4
MAX_RESULTS = 100
MAX_TEXT_CHARS = 500
MAX_QUESTION_CHARS = 4000

INSTRUCTIONS = (
    "Tools over ultra-high-resolution remote-sensing images (GeoTIFF/COG/PNG paths on the server). Start with "
    "scene_info, find regions with search_patches, look at them with zoom (by evidence id or box), or let the "
    "`ask` tool run the full analyst agent, which answers with cited evidence."
)


def knowledge_available() -> bool:
    """Whether the knowledge base package (:mod:`rsrag.tools.knowledge`) is installed."""
    return importlib.util.find_spec("rsrag.tools.knowledge") is not None


class SceneTools:
    """The scene tools of one server: the analyst's context, and an evidence ledger per scene.

    Every image a client names goes through one :class:`~rsrag.tools.sandbox.Sandbox` (real path inside the
    allowed folders, format from content, every file a VRT references checked, URLs only by allowed prefix),
    and every argument is checked before a tool runs (:meth:`validate`): nothing is silently cut or clamped.

    Args:
        analyst: the configured analyst (its context supplies the workspace, budgets and crop folder).
        settings: the settings (knowledge base location); ``None``: the analyst's.
        image_roots: when given, only images inside these folders can be opened.
        url_prefixes: remote images allowed, by URL prefix (none by default).
    """

    def __init__(self, analyst: Analyst, settings: Settings | None = None,
                 image_roots: Sequence[str | os.PathLike[str]] | None = None,
                 url_prefixes: Sequence[str] = ()) -> None:
        self.analyst = analyst
        self.settings = settings if settings is not None else analyst.settings
        self.roots = [Path(r).expanduser().resolve() for r in image_roots or []]
        self.sandbox = Sandbox.of(image_roots, url_prefixes)
        self._ledgers: dict[str, dict[str, Evidence]] = {}
        self._lock = threading.Lock()
        self._kb: Any = None

    def scene_path(self, image: str) -> str:
        """What ``image`` may be opened as (:meth:`Sandbox.resolve`: its real path, or an allowed URL), opened once.

        Raises:
            AccessDeniedError: the sandbox refuses it (outside the folders, a VRT reaching out, a URL...).
        """
        if not isinstance(image, str):
            raise QueryError(f"image must be a path (a string), got {type(image).__name__}")
        path = self.sandbox.resolve(image)
        self.analyst.workspace.scene(path)
        return path

    def validate(self, **args: Any) -> None:
        """Check the arguments of a tool call before it runs; a bad one is an error naming it, never cut.

        Raises:
            QueryError / WindowError: an argument is out of range or of the wrong shape.
        """
        for name, value in args.items():
            if value is None:
                continue
            if name in ("top_k", "k", "max_side"):
                low, high = (16, 4096) if name == "max_side" else (1, MAX_RESULTS)
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise QueryError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
            elif name == "phrases":
                if not isinstance(value, list) or not value:
                    raise QueryError("phrases must be a list of 1 to 4 short noun phrases")
                if len(value) > MAX_PHRASES:
                    raise QueryError(f"phrases: at most {MAX_PHRASES} phrases per search, got {len(value)}; "
                                     "search again for the others")
                for phrase in value:
                    if not isinstance(phrase, str) or not phrase.strip() or len(phrase) > MAX_TEXT_CHARS:
                        raise QueryError(f"phrases: each must be a non-empty text of at most {MAX_TEXT_CHARS} "
                                         f"characters, got {str(phrase)[:40]!r}")
            elif name == "question":
                if not isinstance(value, str) or not value.strip() or len(value) > MAX_QUESTION_CHARS:
                    raise QueryError(f"question must be a non-empty text of at most {MAX_QUESTION_CHARS} characters")
            elif name == "query":  # an empty query is the knowledge base's to judge (it may search by image)
                if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
                    raise QueryError(f"query must be a text of at most {MAX_TEXT_CHARS} characters")
            elif name in ("bbox", "map_bbox", "lonlat_bbox"):
                import math

                if (not isinstance(value, list) or len(value) != 4 or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
                    raise WindowError(f"{name} must be four finite numbers, got {str(value)[:80]}")
            elif name in ("evidence_id", "category", "thread_id"):
                if not isinstance(value, str) or not value.strip() or len(value) > 64:
                    raise QueryError(f"{name} must be a non-empty text of at most 64 characters")

    def check_thread(self, thread_id: str | None) -> str | None:
        """``thread_id`` if it may be continued here: a new thread, or one whose every scene this server may open.

        Raises:
            AccessDeniedError: the thread holds questions about images outside this server's folders.
        """
        if thread_id is None:
            return None
        self.validate(thread_id=thread_id)
        analyst = self.analyst
        values = analyst.graph.get_state(analyst._config(thread_id)).values or {}
        scenes = {values["scene"]} if values.get("scene") else set()
        if analyst.tracer.settings.enabled:
            scenes |= {r.scene_path for r in analyst.tracer.store.runs(thread=thread_id) if r.scene_path}
        for scene in scenes:
            try:
                self.sandbox.check_inside(scene)
            except AccessDeniedError:
                raise AccessDeniedError(f"thread {thread_id!r} cannot be continued on this server (it holds "
                                        "questions about images outside its folders); start a new thread") from None
        return thread_id

    def check_catalog(self, name: str) -> None:
        """Check that every scene of catalog ``name`` may be opened here (a question across it can open any).

        Raises:
            QueryError: the name is not valid, or the catalog has no scenes.
            AccessDeniedError: some of its scenes are outside this server's folders or URL prefixes.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise QueryError("catalog must be a non-empty name of at most 64 characters")
        refused = 0
        for scene in self.analyst.catalog_scenes(name):
            try:
                self.sandbox.resolve(scene.source)
            except RsragError:
                refused += 1
        if refused:
            raise AccessDeniedError(f"catalog {name!r} holds {refused} scene(s) this server may not open, so a "
                                    "question across it cannot run here; ask about its scenes one by one, or "
                                    "serve their folders (--images)")

    def run(self, tool: BaseTool, image: str, **args: Any) -> tuple[str, ToolResult]:
        """Run one of the analyst's tools outside the graph: the text the model would read, and its typed result."""
        self.validate(**args)
        scene = self.scene_path(image)
        with self._lock:
            ledger = dict(self._ledgers.get(scene, {}))
        runtime = ToolRuntime(
            state={"scene": scene, "evidence": ledger, "zoomed_pixels": 0}, context=self.analyst.context,
            config=self.analyst.resources.config({"configurable": {"thread_id": "mcp"}}), stream_writer=lambda _: None,
            tool_call_id=f"mcp-{tool.name}", store=None,
        )
        command = tool.func(runtime=runtime, **{k: v for k, v in args.items() if v is not None})  # type: ignore[misc]
        assert isinstance(command, Command) and isinstance(command.update, dict)
        message = command.update["messages"][0]
        result = ToolResult.of(message)
        with self._lock:
            self._ledgers.setdefault(scene, {}).update({e.id: e for e in result.evidence})
        return message.text, result

    def knowledge_base(self) -> Any:
        """The knowledge base: the agent's own (on the Weaviate server its settings name, else in the embedded
        store), or, when this server's settings name another Weaviate server, the one there."""
        k = self.settings.knowledge
        if not k.weaviate_url or k == self.analyst.settings.knowledge:
            return self.analyst.workspace.knowledge
        if self._kb is None:
            from rsrag.tools.knowledge import KnowledgeBase

            self._kb = KnowledgeBase(self.settings.knowledge_store(), self.analyst.workspace.encoder, name=k.name)
        return self._kb


def _tool_error(exc: RsragError) -> ToolError:
    """The MCP tool error for an rsrag error: its kind and message (see :func:`rsrag.tools.errors.mcp_message`)."""
    return ToolError(mcp_message(exc))


# --- replies ---------------------------------------------------------------------------------------------

#: Keys whose numbers are degrees (6 decimals, ~0.1 m); every other float gets 4 decimals.
DEGREE_KEYS = frozenset({"lonlat", "lonlat_bounds", "lonlat_bbox", "coordinates", "bbox_lonlat"})
OVERVIEW_JPEG_QUALITY = 85
KB_EMPTY_HINT = ("the knowledge base has no entries: add them with `rsrag kb add FILE` (JSONL/CSV/GeoJSON), and "
                 "build the visual concept library the slow path searches with `rsrag kb concepts DATA` (a "
                 "class-labelled image folder or captions file)")
NO_CONCEPTS_HINT = ("the scene was not searched through knowledge: the concept library is empty; build it with "
                    "`rsrag kb concepts DATA` (a class-labelled image folder or captions file)")
NOTHING_CONFIDENT_HINT = ("no region reached the threshold: try other phrases (the name an aerial photo of the thing "
                          "would have, or synonyms), lookup_knowledge with the image for the slow path, or zoom on "
                          "the best candidates to look")


def rounded(value: Any, degrees: bool = False) -> Any:
    """``value`` with floats rounded to what they mean (6 decimals under :data:`DEGREE_KEYS`, else 4)."""
    if isinstance(value, float):
        return round(value, 6 if degrees else 4)
    if isinstance(value, dict):
        return {k: rounded(v, degrees or k in DEGREE_KEYS) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, degrees) for v in value]
    return value


def compact_json(data: Any) -> str:
    """One line of JSON, no indentation, no spaces after separators."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def hoist_provenance(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Records without their ``provenance`` when every record has the same one; that provenance (else ``None``)."""
    provenances = [r.get("provenance") for r in records]
    if len(records) < 2 or any(p is None for p in provenances) or any(p != provenances[0] for p in provenances):
        return records, None
    return [{k: v for k, v in r.items() if k != "provenance"} for r in records], provenances[0]


def json_reply(data: dict[str, Any]) -> CallToolResult:
    """A tool reply: the data as structured content and as one compact line of JSON text."""
    data = rounded(data)
    return CallToolResult(content=[TextContent(type="text", text=compact_json(data))], structured_content=data)


def overview_image(path: str | os.PathLike[str], max_side: int) -> Image:
    """The scene overview as a JPEG whose longest side is at most ``max_side`` pixels."""
    with PILImage.open(path) as im:
        rgb = im.convert("RGB")
    rgb.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=OVERVIEW_JPEG_QUALITY, optimize=True)
    return Image(data=out.getvalue(), format="jpeg")


ImagePath = Annotated[str, Field(description="path of the image file on the server (GeoTIFF, COG, VRT, JPEG, PNG)")]


def build_mcp_server(
    analyst: Analyst,
    settings: Settings | None = None,
    *,
    image_roots: Sequence[str | os.PathLike[str]] | None = None,
    knowledge: bool | None = None,
    url_prefixes: Sequence[str] = (),
) -> MCPServer:
    """An MCP server exposing rsrag's tools and the ``ask`` agent.

    Args:
        analyst: the analyst that runs the tools and answers ``ask`` (the caller closes it).
        settings: settings for the knowledge base; ``None``: the analyst's.
        image_roots: when given, only images inside these folders can be opened.
        knowledge: offer ``lookup_knowledge`` (``None``: when :mod:`rsrag.tools.knowledge` is installed).
        url_prefixes: remote images allowed, by URL prefix (none by default).
    """
    tools = SceneTools(analyst, settings, image_roots, url_prefixes)
    server: MCPServer = MCPServer("rsrag", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    def scene_info(
        image: ImagePath,
        max_side: Annotated[int | None, Field(ge=16, le=4096, description=(
            "longest side of the overview image, in pixels (default: the server's budgets.max_zoom_side, 1024)"))] = None,
    ) -> list[str | Image]:
        """Describe a scene: size in pixels, bands, CRS, ground sample distance (CRS units per pixel, metres for
        projected CRSs), lon/lat footprint (degrees), and an overview of the whole scene as a JPEG image."""
        try:
            text, result = tools.run(scene_info_tool, image)
        except RsragError as exc:
            raise _tool_error(exc) from None
        return [text, overview_image(result.crop, max_side or tools.settings.budgets.max_zoom_side)]

    @server.tool()
    def search_patches(
        image: ImagePath,
        phrases: Annotated[list[str], Field(description=(
            '1-4 short noun phrases naming one kind of thing to look for, e.g. ["storage tanks", "oil tanks"]'))],
        top_k: Annotated[int | None, Field(description="how many regions (sites) to return, a count (default: the server's retrieval.top_k)")] = None,
    ) -> CallToolResult:
        """Find the places in a scene that match short key phrases (fast path, then the slow path when nothing
        is confident). Each region: id (for zoom), bbox [x0, y0, x1, y1] in full-resolution pixels, map_box in
        the scene's CRS units, confidence in 0-1 (within-scene), presence in 0-1 (calibrated probability the
        thing is there, where known), confident (reaches threshold); finding: found / not_found / uncertain."""
        try:
            _, result = tools.run(search_patches_tool, image, phrases=phrases, top_k=top_k)
        except RsragError as exc:
            raise _tool_error(exc) from None
        found = {e.id for e in result.found}
        regions, provenance = hoist_provenance([{**e.to_json(), "confident": e.id in found}
                                                for e in result.visible])
        reply: dict[str, Any] = {"summary": headline(result), "finding": result.finding, "threshold": result.threshold,
                                 "path": result.path, "regions": regions}
        if provenance is not None:
            reply["provenance"] = provenance
        if not any(r["confident"] for r in regions):
            reply["hint"] = NOTHING_CONFIDENT_HINT
        return json_reply(reply)

    @server.tool()
    def zoom(
        image: ImagePath,
        evidence_id: Annotated[str | None, Field(description="id of a region from search_patches or zoom on this scene (E + 6 hex digits)")] = None,
        bbox: Annotated[list[float] | None, Field(description="or [x0, y0, x1, y1] in full-resolution pixels")] = None,
        map_bbox: Annotated[list[float] | None, Field(description="or [left, bottom, right, top] in the scene's CRS units (metres for projected CRSs)")] = None,
        lonlat_bbox: Annotated[list[float] | None, Field(description="or [west, south, east, north] in degrees (WGS 84)")] = None,
        max_side: Annotated[int | None, Field(description="longest side of the returned crop, in pixels (default: the server's budgets.max_zoom_side)")] = None,
    ) -> list[str | Image]:
        """Look at a region of a scene at native resolution; the crop comes back as an image (PNG), with its
        pixel box, lon/lat box (degrees) and how many scene pixels one crop pixel shows. Give exactly one of
        evidence_id, bbox, map_bbox, lonlat_bbox."""
        try:
            text, result = tools.run(zoom_tool, image, evidence_id=evidence_id, bbox=bbox, map_bbox=map_bbox,
                                     lonlat_bbox=lonlat_bbox, max_side=max_side)
        except RsragError as exc:
            raise _tool_error(exc) from None
        return [text, Image(path=result.crop)]

    if knowledge if knowledge is not None else knowledge_available():

        @server.tool()
        def lookup_knowledge(
            query: Annotated[str, Field(description="what to look up, in words: a name, a class, a short description")],
            image: Annotated[str | None, Field(description=(
                "optional path of an image file on the server, to also find the concept in it (the slow path)"))] = None,
            k: Annotated[int, Field(description="how many entries (and regions) to return, a count")] = 5,
            category: Annotated[str | None, Field(description="only knowledge entries of this category")] = None,
        ) -> CallToolResult:
            """Search the knowledge base (landmarks, facilities, land-cover classes, expert notes) by text; scores
            are similarities in 0-1. With an image, also search that scene through the visual concept library:
            the regions found (bbox in full-resolution pixels, confidence in 0-1) have evidence ids zoom accepts."""
            try:
                if image is not None:
                    text, result = tools.run(lookup_knowledge_tool, image, query=query, category=category, k=k)
                    if result.status == "error":
                        raise ToolError(result.message or "knowledge base unavailable")
                    reply: dict[str, Any] = {"report": text, "entries": [e.to_json() for e in result.evidence],
                                             "threshold": result.threshold}
                    if not result.extras.get("slow_path"):
                        reply["hint"] = NO_CONCEPTS_HINT if result.entries else KB_EMPTY_HINT
                    return json_reply(reply)
                tools.validate(query=query, k=k, category=category)
                found = tools.knowledge_base().search(query, k=k, kind="knowledge", category=category)
            except RsragError as exc:
                raise _tool_error(exc) from None
            entries = [{"id": h.id, "score": round(h.score, 4), **h.entry.model_dump(mode="json", exclude_none=True)}
                       for h in found.hits]
            out: dict[str, Any] = {"mode": found.mode, "table": found.table, "version": found.version, "entries": entries}
            if found.mode == "empty":
                out["hint"] = KB_EMPTY_HINT
            elif not entries:
                out["hint"] = "no entry matched: try other words, or no category filter"
            return json_reply(out)

    @server.tool()
    def search_catalog(
        phrases: Annotated[list[str], Field(description=(
            '1-4 short noun phrases naming one kind of thing to look for, e.g. ["airport", "runway"]'))],
        catalog: Annotated[str, Field(description="name of a scene catalog on the server (see `rsrag catalog list`)")] = "default",
        lonlat_bbox: Annotated[list[float] | None, Field(description="only scenes intersecting [west, south, east, north], in degrees")] = None,
        top_k: Annotated[int | None, Field(description="sites shown per scene, a count (default: the server's retrieval.top_k)")] = None,
    ) -> CallToolResult:
        """Search every indexed scene of a catalog at once. Scenes come back ranked by their best site, each
        with its image path (pass it as `image` to zoom or ask), fingerprint, finding (found / not_found /
        uncertain) and sites: bbox [x0, y0, x1, y1] in that scene's full-resolution pixels, confidence and
        presence in 0-1. Only scenes this server may open are searched; unindexed ones are listed as skipped."""
        from rsrag.tools.catalog import Catalog
        from rsrag.tools.catalog_search import search_catalog as run_search

        try:
            tools.validate(phrases=phrases, top_k=top_k, **({"lonlat_bbox": lonlat_bbox} if lonlat_bbox else {}))
            workspace = tools.analyst.workspace
            cat = Catalog(workspace.patches.store, name=catalog)
            allowed = []
            for scene in cat.find(bbox=lonlat_bbox):
                try:
                    tools.sandbox.resolve(scene.source)
                except RsragError:
                    continue  # outside this server's folders or URL prefixes: never searched nor named
                allowed.append(scene)
            k = top_k or tools.settings.retrieval.top_k
            found = run_search(cat, workspace.patches, workspace.encoder, phrases=phrases, scenes=allowed, top_k=k,
                               threshold=tools.settings.retrieval.fast_threshold, presence=workspace.presence,
                               concept_match=tools.settings.retrieval.concept_match)
        except RsragError as exc:
            raise _tool_error(exc) from None
        scenes = [{"image": s.scene.source, "id": s.scene.id, "fingerprint": s.scene.fingerprint, "found": s.found,
                   "finding": s.result.finding,
                   "sites": [{"bbox": list(site.region.box.as_tuple()), "confidence": rounded(site.confidence),
                              "presence": rounded(site.presence), "windows": len(site.members)}
                             for site in s.result.all_sites[:k]]}
                  for s in found.scenes]
        reply: dict[str, Any] = {"phrases": found.phrases, "threshold": found.threshold, "scenes": scenes}
        if found.skipped:
            reply["skipped"] = found.skipped
            reply["hint"] = f"skipped scenes have no index yet: `rsrag index --catalog {catalog}` fills them"
        if not allowed:
            reply["hint"] = f"catalog {catalog!r} has no scene this server may open (rsrag catalog add, --images)"
        return json_reply(reply)

    @server.tool()
    def ask(
        question: Annotated[str, Field(description='the question, e.g. "where are the storage tanks?"')],
        image: Annotated[str | None, Field(description=(
            "path of the image file on the server (GeoTIFF, COG, VRT, JPEG, PNG); optional with a catalog"))] = None,
        thread_id: Annotated[str | None, Field(description="a thread to continue (default: a new one)")] = None,
        catalog: Annotated[str | None, Field(description=(
            "ask across the scenes of this catalog on the server (see `rsrag catalog list`), e.g. "
            '"which scenes show storage tanks?"'))] = None,
    ) -> CallToolResult:
        """Ask the rsrag analyst agent a question about a scene, or across the scenes of a catalog; it searches,
        zooms and answers with cited evidence: finding (found / not_found / uncertain), each evidence's bbox
        [x0, y0, x1, y1] in full-resolution pixels of its scene (scene_source: the scene's path, scene_id: its
        catalog id), map_box in the scene's CRS units, confidence and presence in 0-1, the scenes cited, and
        the cited regions as GeoJSON (lon/lat degrees). Pass the returned thread_id to ask a follow-up."""
        try:
            tools.validate(question=question)
            if image is None and catalog is None:
                raise QueryError("give an image (a path on the server) or a catalog name to ask about")
            if catalog is not None:
                tools.check_catalog(catalog)
            path = tools.scene_path(image) if image is not None else None
            answer = tools.analyst.ask(path, question, thread_id=tools.check_thread(thread_id), catalog=catalog)
        except RsragError as exc:
            raise _tool_error(exc) from None
        if answer.bad_input is not None:  # the image could not be read, as `rsrag ask` says
            raise ToolError(f"{KIND_POLICIES[ErrorKind.INPUT].mcp_label}: {answer.bad_input}")
        reply = answer.to_json()
        reply["evidence"], provenance = hoist_provenance(reply["evidence"])
        if provenance is not None:
            reply["provenance"] = provenance
        return json_reply(reply)

    return server
