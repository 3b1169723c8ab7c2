"""What a run of the graphs gets besides its state: settings (the runtime context) and live resources.

* :class:`AgentContext` is LangGraph's runtime context: the run's :class:`~rsrag.agent.settings.Settings`
  and nothing else (immutable; a LangGraph server passes it as JSON, ``{"settings": {"vlm": {"spec":
  "rule"}, "store": {"tiling": "grid:512"}}}``, read over the server's own settings file and environment).
* :class:`Resources` holds what is live: the :class:`~rsrag.agent.workspace.Workspace` (scenes, encoder,
  store, knowledge base) and the chat model. One is shared by every thread of an analyst or a server; it
  is injected through the run's config (:meth:`Resources.config`) and found by :func:`resources_for`. A
  run without one (a LangGraph server, a host graph that passes only the context) uses the process-wide
  :meth:`Resources.shared` instance for its settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rsrag.agent.settings import Budgets, Settings, flatten, load_settings

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from rsrag.agent.workspace import Workspace
    from rsrag.tools.indexing import IndexProgress

__all__ = ["RESOURCES_KEY", "AgentContext", "Budgets", "Resources", "resources_for"]

RESOURCES_KEY = "rsrag_resources"
"""The key of ``config["configurable"]`` that carries a run's :class:`Resources`."""


@dataclass(frozen=True)
class AgentContext:
    """The runtime context of the graphs: the run's settings, read-only.

    Args:
        settings: the settings; a mapping (JSON from a LangGraph server) is read as explicit values by
            section over the settings file and environment (see :func:`rsrag.agent.settings.load_settings`);
            omitted: :func:`~rsrag.agent.settings.load_settings`.
    """

    settings: Settings = field(default_factory=load_settings)

    def __post_init__(self) -> None:
        if isinstance(self.settings, Mapping):
            object.__setattr__(self, "settings", load_settings(overrides=flatten(self.settings)))
        elif not isinstance(self.settings, Settings):
            raise TypeError(f"AgentContext(settings=...) takes Settings or a mapping, not {type(self.settings).__name__}")

    @property
    def budgets(self) -> Budgets:
        """Per-question limits (``[budgets]``)."""
        return self.settings.budgets

    @property
    def top_k(self) -> int:
        """Regions a search shows (``retrieval.top_k``)."""
        return self.settings.retrieval.top_k

    @property
    def fast_threshold(self) -> float:
        """Confidence a hit needs to count as found (``retrieval.fast_threshold``)."""
        return self.settings.retrieval.fast_threshold

    @property
    def crop_dir(self) -> Path:
        """Where zoom crops are written, one sub-folder per thread (``paths.crops``)."""
        return self.settings.crops_dir

    @property
    def vlm(self) -> str:
        """The chat model spec (``vlm.spec``)."""
        return self.settings.vlm.spec


class Resources:
    """The live resources of runs: the workspace and the chat model, opened lazily, safe to share across threads.

    Args:
        settings: what to open (encoder, store, tiling, knowledge base, chat model spec).
        model: a ready LangChain chat model with tool calling (wins over ``settings.vlm.spec``).
        workspace: an open workspace to use (default: one made from ``settings``).
        on_index_progress: called while a scene is being indexed on demand (workspace made here).
    """

    _shared: ClassVar[dict[str, Resources]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, settings: Settings, *, model: Any = None, workspace: Workspace | None = None,
                 on_index_progress: Callable[[IndexProgress], None] | None = None) -> None:
        self.settings = settings
        self._model = model
        self._given_model = model is not None
        self._workspace = workspace
        self._on_index_progress = on_index_progress
        self._lock = threading.RLock()

    @property
    def workspace(self) -> Workspace:
        """Scenes, encoder, patch store and knowledge base (made on first use)."""
        with self._lock:
            if self._workspace is None:
                from rsrag.agent.workspace import Workspace

                self._workspace = Workspace(self.settings, on_index_progress=self._on_index_progress)
            return self._workspace

    def chat_model(self) -> Any:
        """The chat model: the one given, else the one ``vlm.spec`` names (built once)."""
        with self._lock:
            if self._model is None:
                from rsrag.agent.models.backends import load_chat_model

                self._model = load_chat_model(self.settings.vlm.spec)
            return self._model

    @property
    def backend(self) -> str:
        """Name of the chat model backend, recorded in answers and traces (the spec, or the given model's name)."""
        if not self._given_model:
            return self.settings.vlm.spec
        return str(getattr(self._model, "model_name", None) or type(self._model).__name__)

    @property
    def model(self) -> Any:
        """The chat model if it is built or was given (``None`` otherwise; see :meth:`chat_model`)."""
        return self._model

    def config(self, config: Mapping[str, Any] | None = None) -> RunnableConfig:
        """``config`` with these resources injected (``configurable[RESOURCES_KEY]``), for ``graph.invoke``."""
        base: dict[str, Any] = dict(config or {})
        base["configurable"] = {**(base.get("configurable") or {}), RESOURCES_KEY: self}
        return cast("RunnableConfig", base)

    def close(self) -> None:
        """Close the workspace's open scenes."""
        with self._lock:
            if self._workspace is not None:
                self._workspace.close()

    @classmethod
    def shared(cls, settings: Settings) -> Resources:
        """The process-wide resources of ``settings`` (for runs that come with a context but no resources)."""
        key = settings.model_dump_json()
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(settings)
            return cls._shared[key]


def resources_for(context: AgentContext, config: Mapping[str, Any] | None = None) -> Resources:
    """The resources of the current run: those injected in ``config`` (default: the running node's config),
    else the process-wide ones for the context's settings."""
    if config is None:
        from langgraph.config import get_config

        try:
            config = get_config()
        except RuntimeError:  # outside a runnable context
            config = {}
    found = (config.get("configurable") or {}).get(RESOURCES_KEY)
    return found if isinstance(found, Resources) else Resources.shared(context.settings)
