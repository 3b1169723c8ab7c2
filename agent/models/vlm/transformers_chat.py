"""A local transformers vision-language model as a LangChain chat model with tool calling.

Spec grammar (for the backend factory)::

    transformers:<path-or-hf-id>[?key=value[&key=value...]]

``<path-or-hf-id>`` is a local checkpoint folder (absolute, ``./relative`` or ``~/...``) or a Hugging Face
id (``Qwen/Qwen2.5-VL-3B-Instruct``, looked up in the local cache). The query keys are the constructor
fields of :class:`TransformersChatModel` below: ``family``, ``max_new_tokens``, ``temperature``, ``top_p``,
``seed``, ``device``, ``dtype``, ``revision``, ``attn_implementation``, ``trust_remote_code``,
``min_image_pixels``, ``max_image_pixels``, ``sanitize_control_tokens``. Values are percent-decoded and
coerced to the field's type; keyword arguments of :func:`load_transformers_chat` override them. Examples::

    transformers:Qwen/Qwen2.5-VL-7B-Instruct?max_new_tokens=256&dtype=bfloat16&device=cuda
    transformers:/models/tiny-qwen2-vl?family=qwen2_vl&max_image_pixels=200704
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

import rsrag.agent.models.vlm.qwen  # noqa: F401  (registers the Qwen family)
from rsrag.agent.models.vlm.family import ChatFamily, Prompt, VLMInputError, add_system_text, family_for_model_type, get_family
from rsrag.agent.models.vlm.loading import LoadedVLM, load_vlm
from rsrag.agent.models.vlm.messages import to_conversation
from rsrag.tools.errors import ConfigError

SPEC_PREFIX = "transformers:"
SPEC_GRAMMAR = "transformers:<path-or-hf-id>[?key=value&...]"
Conversation = list[dict[str, Any]]
ToolSchemas = list[dict[str, Any]]


class TransformersChatModel(BaseChatModel):
    """A Qwen-VL class (or any registered family) checkpoint run locally with transformers.

    Loads lazily on the first call and shares the loaded model per process. Greedy decoding unless
    ``temperature > 0``. Tool calls in the output become ``AIMessage.tool_calls``; malformed ones
    (bad JSON, unknown tool, missing arguments, cut off) become ``AIMessage.invalid_tool_calls`` with the
    error, so the graph can tell the model.
    """

    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="Local checkpoint folder or Hugging Face id.")
    family: str | None = Field(default=None, description="Chat family name; None detects it from config.model_type.")
    max_new_tokens: int = Field(default=512, gt=0)
    temperature: float = Field(default=0.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, description="Seeds torch before sampling (temperature > 0).")
    device: str = Field(default="auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda:0', ...")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="'auto' is float32 on cpu and the checkpoint's dtype elsewhere."
    )
    revision: str | None = None
    attn_implementation: str | None = Field(default=None, description="e.g. 'sdpa', 'eager', 'flash_attention_2'.")
    trust_remote_code: bool = False
    min_image_pixels: int | None = Field(default=None, gt=0, description="Lower bound on pixels per image after resizing.")
    max_image_pixels: int | None = Field(default=None, gt=0, description="Upper bound on pixels per image (caps tokens).")
    sanitize_control_tokens: bool = Field(default=True, description="Encode control tokens in message text as plain text.")
    _loaded: LoadedVLM | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "rsrag-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        keys = ("model", "family", "max_new_tokens", "temperature", "top_p", "device", "dtype", "revision")
        return {k: getattr(self, k) for k in keys}

    # --- loading --------------------------------------------------------------------------------------

    def loaded(self) -> LoadedVLM:
        """The processor and model (loaded on first use, cached per process)."""
        if self._loaded is None:
            self._loaded = load_vlm(
                self.model, device=self.device, dtype=self.dtype, revision=self.revision,
                attn_implementation=self.attn_implementation, trust_remote_code=self.trust_remote_code,
            )
        return self._loaded

    def chat_family(self) -> ChatFamily:
        """The configured family, or the one registered for the checkpoint's ``model_type``."""
        if self.family:
            return get_family(self.family)
        return family_for_model_type(self.loaded().model.config.model_type)

    # --- tools ----------------------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (converted to OpenAI-style schemas) to the model.

        Args:
            tools: LangChain tools, pydantic models, functions or OpenAI tool dicts.
            tool_choice: None / "auto" (model decides), "none" (tools hidden), "any" / "required" / True
                (the prompt asks for a tool call), or a tool name / ``{"function": {"name": ...}}`` (only that
                tool is shown and asked for). Local decoding is not constrained: these are prompt hints.
            **kwargs: further generation keyword arguments bound with the tools (e.g. ``max_new_tokens``).

        Raises:
            ConfigError: ``tool_choice`` names a tool that is not among ``tools``.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        if isinstance(tool_choice, dict):
            tool_choice = tool_choice.get("function", tool_choice).get("name")
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "any", "required"):
            names = [t["function"]["name"] for t in formatted]
            if tool_choice not in names:
                raise ConfigError(f"tool_choice {tool_choice!r} is not a bound tool; bound: {', '.join(names)}")
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    @staticmethod
    def _apply_tool_choice(conv: Conversation, tools: ToolSchemas | None, choice: Any) -> tuple[Conversation, ToolSchemas | None]:
        if not tools or choice in (None, "auto", False):
            return conv, tools
        if choice == "none":
            return conv, None
        if choice in ("any", "required", True):
            return add_system_text(conv, "Answer with at least one tool call."), tools
        chosen = [t for t in tools if t["function"]["name"] == choice]
        return add_system_text(conv, f"Answer with a call to the tool {choice!r}."), chosen or tools

    # --- generation -----------------------------------------------------------------------------------

    def render(self, messages: Sequence[BaseMessage], tools: ToolSchemas | None = None, tool_choice: Any = None) -> Prompt:
        """The prompt the model would see for ``messages`` (useful for audits and tests)."""
        loaded = self.loaded()
        conv, _ = to_conversation(messages)
        conv, tools = self._apply_tool_choice(conv, tools, tool_choice)
        return self.chat_family().render(loaded.processor, conv, tools)

    def _encode(self, loaded: LoadedVLM, prompt: Prompt) -> Any:
        images_kwargs: dict[str, Any] = {}
        if self.min_image_pixels or self.max_image_pixels:
            size = dict(getattr(loaded.processor.image_processor, "size", None) or {})
            size["shortest_edge"] = self.min_image_pixels or size.get("shortest_edge")
            size["longest_edge"] = self.max_image_pixels or size.get("longest_edge")
            images_kwargs["size"] = size
        try:
            return loaded.processor.apply_chat_template(
                prompt.conversation, tools=prompt.tools, add_generation_prompt=True, tokenize=True, return_dict=True,
                return_tensors="pt", sanitize_control_tokens=self.sanitize_control_tokens,
                processor_kwargs={"images_kwargs": images_kwargs} if images_kwargs else None,
            )
        except (ValueError, IndexError, RuntimeError) as exc:
            raise VLMInputError(f"could not encode the prompt ({prompt.images} image(s)) for {self.model!r}: {exc}") from exc

    def _generation_kwargs(
        self, tokenizer: Any, stop_ids: list[int], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``: greedy unless temperature > 0; call kwargs override fields."""
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("ls_")}  # LangChain tracing hints
        temperature = float(kwargs.pop("temperature", self.temperature))
        top_p = kwargs.pop("top_p", self.top_p)
        gen: dict[str, Any] = {"max_new_tokens": int(kwargs.pop("max_new_tokens", self.max_new_tokens))}
        gen.update(do_sample=temperature > 0, eos_token_id=stop_ids or None)
        gen["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids or [None])[0]
        if temperature > 0:
            gen.update(temperature=temperature, top_p=top_p)
        else:  # override sampling defaults from the checkpoint's generation_config
            gen.update(temperature=None, top_p=None, top_k=None)
        if stop:
            gen.update(stop_strings=list(stop), tokenizer=tokenizer)
        return {**gen, **kwargs}

    @staticmethod
    def _stop_ids(tokenizer: Any, tokens: list[str]) -> list[int]:
        ids = (tokenizer.convert_tokens_to_ids(t) for t in tokens)
        return [i for i in ids if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = kwargs.pop("tools", None)
        prompt = self.render(messages, tools, kwargs.pop("tool_choice", None))
        loaded, family = self.loaded(), self.chat_family()
        tokenizer = loaded.processor.tokenizer
        inputs = self._encode(loaded, prompt).to(loaded.device)
        stop_ids = self._stop_ids(tokenizer, family.stop_tokens(loaded.processor))
        seed = kwargs.pop("seed", self.seed)
        gen = self._generation_kwargs(tokenizer, stop_ids, stop, kwargs)
        n_in = int(inputs["input_ids"].shape[1])
        import torch

        with loaded.lock, torch.inference_mode():
            if seed is not None and gen["do_sample"]:
                torch.manual_seed(int(seed))
            out = loaded.model.generate(**inputs, **gen)
        new_ids = out[0, n_in:].tolist()
        cut = next((i for i, t in enumerate(new_ids) if t in stop_ids), None)
        finish = "stop" if cut is not None or len(new_ids) < gen["max_new_tokens"] else "length"
        raw = tokenizer.decode(new_ids[:cut], skip_special_tokens=False)
        for s in stop or ():
            raw = raw.split(s, 1)[0]
        parsed = family.parse(raw, prompt.offered_tools)
        n_out = len(new_ids) if cut is None else cut + 1
        message = AIMessage(
            content=parsed.content,
            tool_calls=parsed.tool_calls,
            invalid_tool_calls=parsed.invalid_tool_calls,
            additional_kwargs={"reasoning_content": parsed.reasoning} if parsed.reasoning else {},
            response_metadata={"model_name": self.model, "family": family.name, "finish_reason": finish, "raw_output": raw},
            usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``transformers:<path-or-id>?k=v&...`` into the model and its string options.

    Raises:
        ConfigError: the prefix is missing, the model is empty or the query is malformed.
    """
    if not spec.startswith(SPEC_PREFIX):
        raise ConfigError(f"VLM spec {spec!r} must start with {SPEC_PREFIX!r}: {SPEC_GRAMMAR}")
    model, _, query = spec[len(SPEC_PREFIX):].partition("?")
    if not model.strip():
        raise ConfigError(f"VLM spec {spec!r} names no model: {SPEC_GRAMMAR}")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True)) if query else {}
    except ValueError as exc:
        raise ConfigError(f"VLM spec {spec!r}: malformed options {query!r} (use key=value&key=value)") from exc
    return model.strip(), options


def load_transformers_chat(spec: str, **kwargs: Any) -> TransformersChatModel:
    """Build a :class:`TransformersChatModel` from a spec string (see the module docstring for the grammar).

    Nothing is loaded here; the model loads on the first call.

    Args:
        spec: ``transformers:<path-or-hf-id>[?key=value&...]``.
        **kwargs: constructor fields; they override the spec's options.

    Raises:
        ConfigError: a malformed spec, an unknown option, or a value of the wrong type.
        UnknownChatFamilyError: ``family`` names no registered family.
    """
    model, options = parse_spec(spec)
    fields = set(TransformersChatModel.model_fields) - {"model"} - set(BaseChatModel.model_fields)
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"VLM spec {spec!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    params: dict[str, Any] = {**options, **kwargs, "model": model}
    try:
        chat = TransformersChatModel(**params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"VLM spec {spec!r}: {problems}") from exc
    if chat.family:
        get_family(chat.family)
    return chat
