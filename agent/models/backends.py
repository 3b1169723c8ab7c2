"""Chat model backends, chosen by one spec string.

``rule``
    The offline rule policy (:class:`rsrag.agent.models.policy.RulePolicy`): no VLM, retrieval-only answers.
``openai:MODEL[@BASE_URL]``
    Any OpenAI-compatible chat server with tool calling (vLLM, Ollama, llama.cpp server, a hosted API)
    through ``langchain-openai``; images go as data URLs. The API key is read from ``OPENAI_API_KEY`` when
    set (local servers usually accept any key). Example: ``openai:qwen2.5-vl-7b@http://localhost:8000/v1``.
``transformers:PATH_OR_ID[?options]``
    A local transformers VLM (Qwen2-VL / Qwen2.5-VL / Qwen3-VL class), see :mod:`rsrag.agent.models.vlm`.
"""

from __future__ import annotations

import os
from typing import Any

from rsrag.tools.errors import ConfigError

BACKENDS = ("rule", "openai:MODEL[@BASE_URL]", "transformers:PATH_OR_ID")


def load_chat_model(spec: str, **kwargs: Any) -> Any:
    """Build the chat model a spec names (lazily: nothing is loaded until the first call where possible).

    Raises:
        ConfigError: the spec names no known backend or is missing its model.
    """
    text = (spec or "rule").strip()
    kind, _, rest = text.partition(":")
    if kind == "rule" and not rest:
        from rsrag.agent.models.policy import RulePolicy

        return RulePolicy(**kwargs)
    if kind == "openai":
        model, _, base_url = rest.partition("@")
        if not model:
            raise ConfigError(f"VLM spec {spec!r} names no model; use e.g. 'openai:gpt-4o' or 'openai:MODEL@http://host:8000/v1'")
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=model, base_url=base_url or None, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            temperature=0, max_retries=kwargs.pop("max_retries", 1), timeout=kwargs.pop("timeout", 120), **kwargs,
        )
    if kind == "transformers":
        if not rest:
            raise ConfigError(f"VLM spec {spec!r} names no model; use 'transformers:PATH_OR_HF_ID'")
        from rsrag.agent.models.vlm import load_transformers_chat

        return load_transformers_chat(text, **kwargs)
    raise ConfigError(f"unknown VLM spec {spec!r}; use one of: {', '.join(BACKENDS)}")


def unreachable_model_error(exc: BaseException, backend: str) -> BaseException | None:
    """A :class:`~rsrag.tools.errors.ModelUnavailableError` naming the backend when ``exc`` (or its cause) is
    a failure to reach the chat model's server (connection refused, timed out), else ``None``."""
    from rsrag.tools.errors import ModelUnavailableError

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        name = type(seen).__name__
        if isinstance(seen, (ConnectionError, TimeoutError)) or name in (
                "APIConnectionError", "APITimeoutError", "OpenAIConnectionError", "ConnectError", "ConnectTimeout",
                "ReadTimeout"):
            return ModelUnavailableError(f"the chat model {backend!r} cannot be reached ({name}: "
                                         f"{' '.join(str(seen).split()) or 'no answer'}); start its server or "
                                         "choose another --vlm (e.g. rule)")
        seen = seen.__cause__ or seen.__context__
    return None
