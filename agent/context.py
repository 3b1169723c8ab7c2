"""Per-run settings, passed to the graph as LangGraph's runtime context (never stored in checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsrag.agent.workspace import Workspace
from rsrag.tools.indexing import DEFAULT_TILING
from rsrag.tools.store.location import rsrag_home


@dataclass(frozen=True)
class Budgets:
    """Limits of one question.

    Attributes:
        max_steps: model calls before the agent must answer with what it has.
        max_zoom_pixels: full-resolution pixels all zooms of a question may read together.
        max_seconds: wall time before the agent must answer with what it has.
        max_zoom_side: longest side, in pixels, of a crop sent to the model.
    """

    max_steps: int = 10
    max_zoom_pixels: int = 64 * 2048 * 2048
    max_seconds: float = 300.0
    max_zoom_side: int = 1024


@dataclass
class AgentContext:
    """Settings and resources of a run.

    Attributes:
        workspace: opened scenes, encoders, stores and knowledge base (cached per process); when not
            given, one is made from ``encoder``, ``store`` and ``tiling`` (so a LangGraph server can pass
            the context as JSON).
        encoder / store / tiling: encoder spec, store folder and tiling of the workspace made here.
        vlm: chat model spec (see :func:`rsrag.agent.models.backends.load_chat_model`), used when ``model`` is None.
        model: a ready LangChain chat model with tool calling (overrides ``vlm``).
        budgets: per-question limits.
        top_k: hits a search tool returns.
        fast_threshold: fast-path confidence a hit needs to count as found.
        crop_dir: where zoom crops are written (one sub-folder per thread).
        backend: name of the chat model backend (recorded in answers and traces); defaults to ``vlm``.
    """

    workspace: Workspace | None = None
    encoder: str | None = None
    store: str | None = None
    tiling: str = DEFAULT_TILING
    vlm: str = "rule"
    model: Any = None
    budgets: Budgets = field(default_factory=Budgets)
    top_k: int = 5
    fast_threshold: float = 0.5
    crop_dir: Path = field(default_factory=lambda: rsrag_home() / "crops")
    backend: str = ""

    def __post_init__(self) -> None:
        if self.workspace is None:
            self.workspace = Workspace(encoder=self.encoder, store=self.store, tiling=self.tiling)
        self.crop_dir = Path(self.crop_dir)
        if isinstance(self.budgets, dict):  # context given as JSON (LangGraph server)
            self.budgets = Budgets(**self.budgets)

    def chat_model(self) -> Any:
        """The chat model of this run: ``model`` if given, else the one ``vlm`` names (built once)."""
        if self.model is None:
            from rsrag.agent.models.backends import load_chat_model

            self.model = load_chat_model(self.vlm)
            self.backend = self.backend or self.vlm
        self.backend = self.backend or getattr(self.model, "model_name", None) or type(self.model).__name__
        return self.model
