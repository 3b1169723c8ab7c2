"""rsrag as an MCP server, so other agents can use its tools and ask it questions.

Tools: ``scene_info`` (size, CRS, footprint and an overview image), ``search_patches`` (fast path: phrases
-> regions with pixel and map boxes), ``zoom`` (a region at native resolution, returned as MCP image
content), ``lookup_knowledge`` (the knowledge base, when :mod:`rsrag.tools.knowledge` is installed) and
``ask`` (the whole analyst agent: a cited answer; ``thread_id`` continues a conversation).

The scene tools run the same code as the analyst graph's tools (:mod:`rsrag.agent.toolkit`). Evidence ids
returned by ``search_patches`` and ``zoom`` can be passed back to ``zoom`` (per scene, for the server's
lifetime). Errors come back as tool errors with one clear message.

Example (in-process, as the tests do; ``rsrag mcp`` serves it over stdio or HTTP)::

    from mcp import Client
    server = build_mcp_server(load_settings().analyst())
    async with Client(server) as client:
        result = await client.call_tool("zoom", {"image": "scene.tif", "bbox": [0, 0, 512, 512]})
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.evidence import Evidence
from rsrag.agent.results import ToolResult, headline
from rsrag.agent.settings import Settings
from rsrag.agent.toolkit import lookup_knowledge as lookup_knowledge_tool
from rsrag.agent.toolkit import scene_info as scene_info_tool
from rsrag.agent.toolkit import search_patches as search_patches_tool
from rsrag.agent.toolkit import zoom as zoom_tool
from rsrag.tools.errors import RsragError, WindowError

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

    Args:
        analyst: the configured analyst (its context supplies the workspace, budgets and crop folder).
        settings: the settings (knowledge base location); ``None``: the analyst's.
        image_roots: when given, only images inside these folders can be opened.
    """

    def __init__(self, analyst: Analyst, settings: Settings | None = None,
                 image_roots: Sequence[str | os.PathLike[str]] | None = None) -> None:
        self.analyst = analyst
        self.settings = settings if settings is not None else analyst.settings
        self.roots = [Path(r).expanduser().resolve() for r in image_roots or []]
        self._ledgers: dict[str, dict[str, Evidence]] = {}
        self._lock = threading.Lock()
        self._kb: Any = None

    def scene_path(self, image: str) -> str:
        """The resolved path of ``image``, checked against the allowed roots and opened once."""
        path = Path(image).expanduser().resolve()
        if self.roots and not any(path.is_relative_to(root) for root in self.roots):
            raise WindowError(f"{image} is outside the image folders this server may open "
                              f"({', '.join(map(str, self.roots))})")
        self.analyst.workspace.scene(path)
        return str(path)

    def run(self, tool: BaseTool, image: str, **args: Any) -> tuple[str, ToolResult]:
        """Run one of the analyst's tools outside the graph: the text the model would read, and its typed result."""
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
        """The knowledge base: on the Weaviate server the settings name, else the agent's own (embedded store)."""
        k = self.settings.knowledge
        if not k.weaviate_url:
            return self.analyst.workspace.knowledge
        if self._kb is None:
            from rsrag.tools.knowledge import KnowledgeBase
            from rsrag.tools.store.weaviate import WeaviateStore

            key = k.weaviate_api_key.get_secret_value() if k.weaviate_api_key else None
            self._kb = KnowledgeBase(WeaviateStore(k.weaviate_url, key), self.analyst.workspace.encoder,
                                     name=k.name)
        return self._kb


def _tool_error(exc: RsragError) -> ToolError:
    return ToolError(str(exc))


def build_mcp_server(
    analyst: Analyst,
    settings: Settings | None = None,
    *,
    image_roots: Sequence[str | os.PathLike[str]] | None = None,
    knowledge: bool | None = None,
) -> MCPServer:
    """An MCP server exposing rsrag's tools and the ``ask`` agent.

    Args:
        analyst: the analyst that runs the tools and answers ``ask`` (the caller closes it).
        settings: settings for the knowledge base; ``None``: the analyst's.
        image_roots: when given, only images inside these folders can be opened.
        knowledge: offer ``lookup_knowledge`` (``None``: when :mod:`rsrag.tools.knowledge` is installed).
    """
    tools = SceneTools(analyst, settings, image_roots)
    server: MCPServer = MCPServer("rsrag", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    def scene_info(image: str) -> list[str | Image]:
        """Describe a scene: size, bands, CRS, ground sample distance, footprint, and an overview image.

        Args:
            image: path of the image file on the server (GeoTIFF, COG, VRT, JPEG, PNG).
        """
        try:
            text, result = tools.run(scene_info_tool, image)
        except RsragError as exc:
            raise _tool_error(exc) from None
        return [text, Image(path=result.crop)]

    @server.tool()
    def search_patches(image: str, phrases: list[str], top_k: int | None = None) -> dict[str, Any]:
        """Fast path: the regions of a scene that best match short key phrases, with calibrated confidences.

        Args:
            image: path of the image file on the server.
            phrases: 1-4 short noun phrases naming what to look for, e.g. ["storage tanks"].
            top_k: how many regions to return.
        """
        try:
            _, result = tools.run(search_patches_tool, image, phrases=phrases, top_k=top_k)
        except RsragError as exc:
            raise _tool_error(exc) from None
        regions = [{**e.to_json(), "confident": result.is_confident(e)} for e in result.visible]
        return {"summary": headline(result), "threshold": result.threshold, "path": result.path,
                "regions": regions}

    @server.tool()
    def zoom(
        image: str,
        evidence_id: str | None = None,
        bbox: list[float] | None = None,
        map_bbox: list[float] | None = None,
        lonlat_bbox: list[float] | None = None,
        max_side: int | None = None,
    ) -> list[str | Image]:
        """Look at a region of a scene at native resolution; the crop comes back as an image.

        Args:
            image: path of the image file on the server.
            evidence_id: id of a region from search_patches or zoom on this scene.
            bbox: or [x0, y0, x1, y1] in full-resolution pixels.
            map_bbox: or [left, bottom, right, top] in the scene's CRS.
            lonlat_bbox: or [west, south, east, north] in degrees.
            max_side: longest side of the returned crop in pixels.
        """
        try:
            text, result = tools.run(zoom_tool, image, evidence_id=evidence_id, bbox=bbox, map_bbox=map_bbox,
                                     lonlat_bbox=lonlat_bbox, max_side=max_side)
        except RsragError as exc:
            raise _tool_error(exc) from None
        return [text, Image(path=result.crop)]

    if knowledge if knowledge is not None else knowledge_available():

        @server.tool()
        def lookup_knowledge(query: str, image: str | None = None, k: int = 5,
                             category: str | None = None) -> dict[str, Any]:
            """Search the knowledge base (landmarks, facilities, land-cover classes, expert notes) by text. With an
            image, also search that scene through the visual concept library (the slow path): the regions found
            have evidence ids that zoom accepts.

            Args:
                query: what to look up: a name, a class, a short description.
                image: optional path of an image file on the server, to find the concept in it.
                k: how many entries (and regions) to return.
                category: only knowledge entries of this category.
            """
            try:
                if image is not None:
                    text, result = tools.run(lookup_knowledge_tool, image, query=query, category=category, k=k)
                    if result.status == "error":
                        raise ToolError(result.message or "knowledge base unavailable")
                    return {"report": text, "entries": [e.to_json() for e in result.evidence],
                            "threshold": result.threshold}
                result = tools.knowledge_base().search(query, k=k, kind="knowledge", category=category)
            except RsragError as exc:
                raise _tool_error(exc) from None
            entries = [{"id": h.id, "score": round(h.score, 4), **h.entry.model_dump(mode="json", exclude_none=True)}
                       for h in result.hits]
            return {"mode": result.mode, "table": result.table, "version": result.version, "entries": entries}

    @server.tool()
    def ask(image: str, question: str, thread_id: str | None = None) -> dict[str, Any]:
        """Ask the rsrag analyst agent a question about a scene; it searches, zooms and answers with cited
        evidence (pixel boxes, map boxes, GeoJSON). Pass the returned thread_id to ask a follow-up.

        Args:
            image: path of the image file on the server.
            question: the question, e.g. "where are the storage tanks?".
            thread_id: a thread to continue (default: a new one).
        """
        try:
            answer = tools.analyst.ask(tools.scene_path(image), question, thread_id=thread_id)
        except RsragError as exc:
            raise _tool_error(exc) from None
        return answer.to_json()

    return server
