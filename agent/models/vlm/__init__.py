"""rsrag.agent.models.vlm: vision-language model backends as LangChain chat models.

Nothing here loads a model at import time.
"""

from rsrag.agent.models.vlm.family import (
    ChatFamily,
    ParsedOutput,
    Prompt,
    UnknownChatFamilyError,
    VLMError,
    VLMInputError,
    VLMLoadError,
    family_names,
    get_family,
    register_family,
)
from rsrag.agent.models.vlm.qwen import QwenFamily
from rsrag.agent.models.vlm.transformers_chat import TransformersChatModel, load_transformers_chat, parse_spec

__all__ = [
    "ChatFamily",
    "ParsedOutput",
    "Prompt",
    "QwenFamily",
    "TransformersChatModel",
    "UnknownChatFamilyError",
    "VLMError",
    "VLMInputError",
    "VLMLoadError",
    "family_names",
    "get_family",
    "load_transformers_chat",
    "parse_spec",
    "register_family",
]
