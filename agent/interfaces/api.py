"""The Python API: ask questions about a scene or across a catalog of scenes, continue a thread, read its evidence.

Example:
    >>> from rsrag.agent.interfaces.api import Analyst                            # doctest: +SKIP
    >>> from rsrag.agent.settings import load_settings                            # doctest: +SKIP
    >>> with Analyst(load_settings(overrides={"vlm.spec": "rule"})) as analyst:   # doctest: +SKIP
    ...     answer = analyst.ask("scene.tif", "where are the storage tanks?", thread_id="t1")
    ...     print(answer.text, [e.bbox for e in answer.evidence])
    ...     follow_up = analyst.ask("scene.tif", "zoom closer on the second one", thread_id="t1")
    ...     across = analyst.ask(None, "which scenes show storage tanks?", catalog="harbours")
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph.state import CompiledStateGraph

from rsrag.agent.context import AgentContext, Resources
from rsrag.agent.evidence import Answer, Evidence
from rsrag.agent.interfaces.sessions import open_checkpointer
from rsrag.agent.results import headline
from rsrag.agent.settings import Settings, load_settings
from rsrag.agent.trace import Tracer
from rsrag.graphs.agent import build_agent_graph
from rsrag.tools.sources import source_key
from rsrag.tools.store import IndexInfo

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from rsrag.agent.workspace import Workspace
    from rsrag.tools.catalog import CatalogScene
    from rsrag.tools.pyramid import PyramidIndex

__all__ = ["CHECKPOINT_TYPES", "Analyst", "Step", "checkpoint_serializer", "describe_update", "merge_updates"]

MIN_INDEXABLE_SIDE = 8
"""The smallest image side (px) that any tiling can cut into a patch (the pyramid's smallest window)."""

#: The rsrag types stored in checkpoints; only these (and LangChain's own) are revived when a session loads.
CHECKPOINT_TYPES = [
    ("rsrag.agent.evidence", "Evidence"), ("rsrag.agent.evidence", "Answer"), ("rsrag.tools.region", "Region"),
    ("rsrag.tools.region", "PixelBox"), ("rsrag.tools.region", "MapBox"), ("rsrag.agent.results", "ToolResult"),
]


def checkpoint_serializer() -> JsonPlusSerializer:
    """The checkpoint serializer, with rsrag's state types registered (nothing else is unpickled).

    Give it to your own checkpointer when rsrag's graph runs inside yours, e.g.
    ``InMemorySaver(serde=checkpoint_serializer())``: rsrag's evidence and answers then load back from
    checkpoints without "unregistered type" warnings.
    """
    return JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)


@dataclass(frozen=True)
class Step:
    """One streamed step: the node that ran and a short description of what it did."""

    node: str
    text: str
    update: dict[str, Any]


class Analyst:
    """A configured analyst agent with persistent chat sessions.

    Args:
        settings: every setting (chat model, encoder, store, tiling, budgets, retrieval, knowledge base,
            sessions and crops, trace); ``None``: :func:`~rsrag.agent.settings.load_settings`.
        model: a ready LangChain chat model with tool calling (wins over ``settings.vlm.spec``).
        resources: live resources to share with other analysts of the same settings (default: new ones).

    Attributes:
        settings: the settings.
        context: the graph's runtime context (the settings only).
        resources: the workspace and the chat model, shared by every thread of this analyst.
    """

    def __init__(self, settings: Settings | None = None, *, model: Any = None,
                 resources: Resources | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.sessions_path = self.settings.sessions_path
        self.sessions_path.parent.mkdir(parents=True, exist_ok=True)
        self._connection, saver = open_checkpointer(self.sessions_path, serde=checkpoint_serializer())  # WAL, set up once
        self.graph: CompiledStateGraph[Any, Any, Any, Any] = build_agent_graph(saver)
        self.context = AgentContext(self.settings)
        self.resources = resources if resources is not None else Resources(self.settings, model=model)
        self.tracer = Tracer(self.settings.sessions_path, self.settings.trace, graph=self.graph)

    @property
    def workspace(self) -> Workspace:
        """The workspace (scenes, encoder, store, knowledge base) of :attr:`resources`."""
        return self.resources.workspace

    def __enter__(self) -> Analyst:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.resources.close()
        self.tracer.close()
        self._connection.close()

    # --- asking -------------------------------------------------------------------------------------

    def ask(self, image: str | os.PathLike[str] | None, question: str, thread_id: str | None = None, *,
            catalog: str | None = None) -> Answer:
        """Answer one question about ``image``, or across the scenes of ``catalog`` (its name in the store;
        ``image`` may then be ``None``: the agent finds the scenes, and a zoom opens one); the thread keeps
        the conversation, its evidence, and the scene it has open."""
        thread = thread_id or uuid.uuid4().hex
        self._check_input(image, question, catalog)  # fail fast, with a clear error: bad path, no catalog, no question
        with self.tracer.run(self.context, self.resources, thread, image, question, catalog=catalog) as run:
            result = self.graph.invoke(self._input(image, question, catalog), run.config(self._config(thread)),
                                       context=self.context)
            answer: Answer = result["answer"]
            run.answered(answer)
        return answer.model_copy(update={"thread_id": thread})

    async def aask(self, image: str | os.PathLike[str] | None, question: str, thread_id: str | None = None, *,
                   catalog: str | None = None) -> Answer:
        """Async :meth:`ask` (runs the graph in a worker thread)."""
        return await asyncio.to_thread(self.ask, image, question, thread_id, catalog=catalog)

    def stream(self, image: str | os.PathLike[str] | None, question: str, thread_id: str | None = None, *,
               catalog: str | None = None) -> Iterator[Step]:
        """Run a question and yield each step as it happens; the last step carries the answer."""
        thread = thread_id or uuid.uuid4().hex
        self._check_input(image, question, catalog)
        with self.tracer.run(self.context, self.resources, thread, image, question, catalog=catalog) as run:
            for chunk in self.graph.stream(self._input(image, question, catalog), run.config(self._config(thread)),
                                           context=self.context, stream_mode="updates"):
                for node, update in chunk.items():
                    merged = merge_updates(update) if isinstance(update, list) else (update or {})
                    yield Step(node=node, text=describe_update(node, merged), update=merged)

    def _check_input(self, image: str | os.PathLike[str] | None, question: str, catalog: str | None) -> None:
        """Check a question's scene (:meth:`_check_scene`) or catalog (:meth:`catalog_scenes`) and its text."""
        if image is None and catalog is None:
            from rsrag.tools.errors import QueryError

            raise QueryError("give an image (a path or URL) or a catalog name to ask about")
        if catalog is not None:
            self.catalog_scenes(catalog)
        if image is not None:
            self._check_scene(image, question)
        else:
            self._check_scene_question(question)

    def catalog_scenes(self, catalog: str) -> list[CatalogScene]:
        """The scenes of the catalog ``catalog`` in this analyst's store.

        Raises:
            QueryError: the catalog has no scenes (or its name is not valid).
        """
        from rsrag.tools.catalog import Catalog
        from rsrag.tools.errors import QueryError

        scenes = Catalog(self.workspace.patches.store, name=catalog).scenes()
        if not scenes:
            raise QueryError(f"catalog {catalog!r} has no scenes in the store {self.settings.store_path}: add some "
                             "with `rsrag catalog add`")
        return scenes

    @staticmethod
    def _check_scene_question(question: str | None) -> None:
        from rsrag.tools.errors import QueryError

        if not isinstance(question, str) or not question.strip():
            raise QueryError("the question is empty: ask about something in the scenes, e.g. 'which scenes show ships?'")

    def _check_scene(self, image: str | os.PathLike[str], question: str | None = None) -> None:
        """Open ``image`` and check it can be indexed, so that a question about an image no search can cover
        fails with that reason instead of getting a normal-looking "nothing matched" answer; check there is a
        question.

        Raises:
            QueryError: the question is empty.
            RasterError: the image cannot be opened.
            ImageTooSmallError: the image is smaller than one patch of the tiling in use.
        """
        from rsrag.tools.errors import ImageTooSmallError, QueryError, TilingError
        from rsrag.tools.tiling import parse_tiling

        if question is not None and (not isinstance(question, str) or not question.strip()):
            raise QueryError("the question is empty: ask about something in the image, e.g. 'where are the ships?'")

        scene = self.workspace.scene(image)
        try:
            if min(scene.width, scene.height) < MIN_INDEXABLE_SIDE:
                raise TilingError(f"an image needs at least {MIN_INDEXABLE_SIDE} px on each side to be cut into "
                                  "patches an encoder can see")
            if getattr(self.workspace, "uses_pyramid", False):
                self.workspace.pyramid(scene)  # its level geometry; nothing is encoded yet
            else:
                parse_tiling(self.workspace.tiling).count(scene.width, scene.height)
        except TilingError as exc:
            raise ImageTooSmallError(f"{scene.path.name} ({scene.width} x {scene.height} px) cannot be indexed, "
                                     f"so no question about it can be answered: {exc}") from None

    def evidence(self, thread_id: str) -> dict[str, Evidence]:
        """The evidence ledger of a thread."""
        return dict(self.graph.get_state(self._config(thread_id)).values.get("evidence") or {})

    def history(self, thread_id: str) -> list[Any]:
        """The messages of a thread."""
        return list(self.graph.get_state(self._config(thread_id)).values.get("messages") or [])

    def index(self, image: str | os.PathLike[str]) -> IndexInfo | PyramidIndex:
        """Open ``image`` and build (or reuse, or resume) its patch index for this analyst's encoder and tiling."""
        workspace = self.workspace
        return workspace.index(workspace.scene(image))

    async def astream(self, image: str | os.PathLike[str] | None, question: str, thread_id: str | None = None, *,
                      catalog: str | None = None) -> AsyncIterator[Step]:
        """Async :meth:`stream`: yields each step as it happens (the graph runs in a worker thread, which
        finishes the question even if the caller stops iterating)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Step | BaseException | None] = asyncio.Queue()

        def run() -> None:
            try:
                for step in self.stream(image, question, thread_id, catalog=catalog):
                    loop.call_soon_threadsafe(queue.put_nowait, step)
            except BaseException as exc:  # handed to the caller, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = asyncio.ensure_future(asyncio.to_thread(run))
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
        await worker

    def _input(self, image: str | os.PathLike[str] | None, question: str, catalog: str | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {"messages": [HumanMessage(content=question)]}
        if image is not None:
            values["scene"] = source_key(image)
        if catalog is not None:
            values["catalog"] = catalog
        return values

    def _config(self, thread: str) -> RunnableConfig:
        return self.resources.config({"configurable": {"thread_id": thread}, "recursion_limit": 200})


def merge_updates(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One update from the pieces LangGraph streams for a step whose tools returned several Commands
    (it splits them per key): messages concatenated, evidence merged, counters added, the rest last-wins."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in (part or {}).items():
            if key == "messages":
                merged.setdefault("messages", []).extend(value)
            elif key == "evidence":
                merged.setdefault("evidence", {}).update(value)
            elif key == "zoomed_pixels":
                merged["zoomed_pixels"] = merged.get("zoomed_pixels", 0) + value
            else:
                merged[key] = value
    return merged


def describe_update(node: str, update: dict[str, Any]) -> str:
    """A one-line description of a graph step, for streaming to a terminal or a page."""
    if update.get("answer") is not None:
        return f"answer: {update['answer'].text}"
    parts = []
    for message in update.get("messages", []):
        if message.type == "ai" and message.tool_calls:
            parts += [f"call {c['name']}({_short_args(c['args'])})" for c in message.tool_calls]
        elif message.type == "tool":
            parts.append(f"{message.name or 'tool'}: {headline(message)}")
        elif message.type == "ai" and message.text:
            parts.append(f"model: {message.text[:200]}")
        elif message.type == "human":
            parts.append(f"feedback: {message.text[:200]}")
    return "; ".join(parts) or node


def _short_args(args: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 120 else text[:117] + "..."
