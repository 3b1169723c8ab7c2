"""The Python API: ask questions about a scene, continue a thread, read its evidence.

Example:
    >>> from rsrag.agent.interfaces.api import Analyst                                       # doctest: +SKIP
    >>> with Analyst(vlm="rule") as analyst:                                      # doctest: +SKIP
    ...     answer = analyst.ask("scene.tif", "where are the storage tanks?", thread_id="t1")
    ...     print(answer.text, [e.bbox for e in answer.evidence])
    ...     follow_up = analyst.ask("scene.tif", "zoom closer on the second one", thread_id="t1")
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph

from rsrag.agent.context import AgentContext, Budgets
from rsrag.agent.evidence import Answer, Evidence
from rsrag.agent.trace import TraceSettings, Tracer
from rsrag.agent.workspace import Workspace
from rsrag.graphs.agent import build_agent_graph
from rsrag.tools.indexing import DEFAULT_TILING
from rsrag.tools.store import IndexInfo
from rsrag.tools.store.location import rsrag_home


#: The rsrag types stored in checkpoints; only these (and LangChain's own) are revived when a session loads.
CHECKPOINT_TYPES = [
    ("rsrag.agent.evidence", "Evidence"), ("rsrag.agent.evidence", "Answer"), ("rsrag.tools.region", "Region"),
    ("rsrag.tools.region", "PixelBox"), ("rsrag.tools.region", "MapBox"),
]


def checkpoint_serializer() -> JsonPlusSerializer:
    """The checkpoint serializer, with rsrag's state types registered (nothing else is unpickled)."""
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
        vlm: chat model spec (``rule``, ``openai:MODEL@URL``, ``transformers:PATH``); ignored when ``model`` is given.
        model: a ready LangChain chat model with tool calling.
        encoder: encoder spec for patch retrieval (``None``: the bundled offline encoder).
        store: embedded store folder (``None``: the default under ``RSRAG_HOME``).
        tiling: tiling used to index scenes on first use.
        sessions: SQLite file of chat sessions (default ``RSRAG_HOME/sessions.sqlite``).
        crop_dir: where zoom crops are written (default ``RSRAG_HOME/crops``).
        budgets: per-question limits.
        top_k: regions a search returns; fast_threshold: fast-path confidence threshold.
        trace: trace settings (``None``: from ``RSRAG_TRACE_*``; ``False``: no trace); see :mod:`rsrag.agent.trace`.
        knowledge: name of the knowledge base (in the store) that knowledge lookups and the slow path use.
    """

    def __init__(
        self,
        vlm: str = "rule",
        *,
        model: Any = None,
        encoder: str | None = None,
        store: str | os.PathLike[str] | None = None,
        tiling: str = DEFAULT_TILING,
        sessions: str | os.PathLike[str] | None = None,
        crop_dir: str | os.PathLike[str] | None = None,
        budgets: Budgets | None = None,
        top_k: int = 5,
        fast_threshold: float = 0.5,
        trace: TraceSettings | bool | None = None,
        knowledge: str = "default",
    ) -> None:
        home = rsrag_home()
        self.sessions_path = Path(sessions) if sessions else home / "sessions.sqlite"
        self.sessions_path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.sessions_path, check_same_thread=False)
        self.graph: CompiledStateGraph = build_agent_graph(SqliteSaver(self._connection, serde=checkpoint_serializer()))
        self.context = AgentContext(
            workspace=Workspace(encoder=encoder, store=store, tiling=tiling, knowledge=knowledge), vlm=vlm, model=model,
            budgets=budgets or Budgets(), top_k=top_k, fast_threshold=fast_threshold,
            crop_dir=Path(crop_dir) if crop_dir else home / "crops",
        )
        self.tracer = Tracer(self.sessions_path, trace, graph=self.graph)

    def __enter__(self) -> Analyst:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.context.workspace.close()
        self.tracer.close()
        self._connection.close()

    # --- asking -------------------------------------------------------------------------------------

    def ask(self, image: str | os.PathLike[str], question: str, thread_id: str | None = None) -> Answer:
        """Answer one question about ``image``; the thread keeps the conversation and its evidence."""
        thread = thread_id or uuid.uuid4().hex
        self.context.workspace.scene(image)  # fail fast, with a clear error, on a bad image path
        with self.tracer.run(self.context, thread, image, question) as run:
            result = self.graph.invoke(self._input(image, question), run.config(self._config(thread)), context=self.context)
            answer: Answer = result["answer"]
            run.answered(answer)
        return answer.model_copy(update={"thread_id": thread})

    async def aask(self, image: str | os.PathLike[str], question: str, thread_id: str | None = None) -> Answer:
        """Async :meth:`ask` (runs the graph in a worker thread)."""
        return await asyncio.to_thread(self.ask, image, question, thread_id)

    def stream(self, image: str | os.PathLike[str], question: str, thread_id: str | None = None) -> Iterator[Step]:
        """Run a question and yield each step as it happens; the last step carries the answer."""
        thread = thread_id or uuid.uuid4().hex
        self.context.workspace.scene(image)
        with self.tracer.run(self.context, thread, image, question) as run:
            for chunk in self.graph.stream(self._input(image, question), run.config(self._config(thread)),
                                           context=self.context, stream_mode="updates"):
                for node, update in chunk.items():
                    merged = merge_updates(update) if isinstance(update, list) else (update or {})
                    yield Step(node=node, text=describe_update(node, merged), update=merged)

    def evidence(self, thread_id: str) -> dict[str, Evidence]:
        """The evidence ledger of a thread."""
        return dict(self.graph.get_state(self._config(thread_id)).values.get("evidence") or {})

    def history(self, thread_id: str) -> list[Any]:
        """The messages of a thread."""
        return list(self.graph.get_state(self._config(thread_id)).values.get("messages") or [])

    def index(self, image: str | os.PathLike[str]) -> IndexInfo:
        """Open ``image`` and build (or reuse, or resume) its patch index for this analyst's encoder and tiling."""
        workspace = self.context.workspace
        return workspace.index(workspace.scene(image))

    async def astream(self, image: str | os.PathLike[str], question: str, thread_id: str | None = None) -> AsyncIterator[Step]:
        """Async :meth:`stream`: yields each step as it happens (the graph runs in a worker thread, which
        finishes the question even if the caller stops iterating)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Step | BaseException | None] = asyncio.Queue()

        def run() -> None:
            try:
                for step in self.stream(image, question, thread_id):
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

    def _input(self, image: str | os.PathLike[str], question: str) -> dict[str, Any]:
        return {"messages": [HumanMessage(content=question)], "scene": str(Path(image).expanduser().resolve())}

    @staticmethod
    def _config(thread: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread}, "recursion_limit": 200}


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
            parts.append(f"{message.name or 'tool'}: {message.text.splitlines()[0] if message.text else ''}")
        elif message.type == "ai" and message.text:
            parts.append(f"model: {message.text[:200]}")
        elif message.type == "human":
            parts.append(f"feedback: {message.text[:200]}")
    return "; ".join(parts) or node


def _short_args(args: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 120 else text[:117] + "..."
