"""Chat models that drive the analyst graph: the backends chosen by a ``--vlm`` spec (OpenAI-compatible
servers, local transformers VLMs) and the offline rule policy. Names load lazily (no model library is
imported by ``import rsrag.agent.models``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rsrag.agent.models.backends import BACKENDS, load_chat_model
    from rsrag.agent.models.policy import RulePolicy

_LAZY = {"BACKENDS": "rsrag.agent.models.backends", "load_chat_model": "rsrag.agent.models.backends",
         "RulePolicy": "rsrag.agent.models.policy"}

__all__ = ["BACKENDS", "RulePolicy", "load_chat_model"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rsrag.agent.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
