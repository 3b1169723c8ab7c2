"""A tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoint for plumbing tests (builds offline in about a second).

:func:`build_tiny_qwen_vl` writes a folder loadable with ``transformers:<folder>``: a 2-layer, 32-wide
Qwen2-VL (or Qwen2.5-VL) with a one- or two-block vision tower, a byte-level BPE tokenizer trained here on generated text (with the
Qwen special tokens), a processor that resizes images to at most 56 x 56 px (a few image tokens), and a
ChatML chat template written for rsrag that renders tools, tool calls, tool results and images. Its output
is random text: use it to test plumbing, never behaviour.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)
PLAIN_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>")

_CONTENT = """{%- macro show(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'text' -%}{{ part.text }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
"""

TOOL_TEMPLATE = _CONTENT + """{%- set has_system = messages and messages[0].role == 'system' -%}
{%- if tools or has_system -%}
<|im_start|>system
{% if has_system %}{{ show(messages[0].content) }}{% endif %}
{%- if tools %}{{ '\n\n' }}# Available tools
Each tool is a JSON schema inside <tools></tools>:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
To use a tool, reply with one block per call:
<tool_call>
{"name": "<tool name>", "arguments": {"<argument>": <value>}}
</tool_call>
{%- endif %}<|im_end|>
{% endif -%}
{%- for message in messages -%}
{%- if loop.first and has_system -%}
{%- elif message.role == 'assistant' -%}
<|im_start|>assistant
{% if message.content %}{{ show(message.content) }}{% endif %}
{%- for call in message.tool_calls | default([]) %}
{%- set fn = call.function if call.function is defined else call %}
<tool_call>
{"name": {{ fn.name | tojson }}, "arguments": {% if fn.arguments is string %}{{ fn.arguments }}{% else %}{{ fn.arguments | tojson }}{% endif %}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' -%}
{%- if loop.first or loop.previtem.role != 'tool' %}<|im_start|>user{% endif %}{{ '\n' }}<tool_response>
{{ show(message.content) }}
</tool_response>
{%- if loop.last or loop.nextitem.role != 'tool' %}<|im_end|>
{% endif -%}
{%- else -%}
<|im_start|>{{ message.role }}
{{ show(message.content) }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}
"""

# Like the templates shipped with Qwen2-VL / Qwen2.5-VL checkpoints: no tools, no tool calls.
PLAIN_TEMPLATE = _CONTENT + """{%- for message in messages -%}
<|im_start|>{{ message.role }}
{{ show(message.content) }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}
"""

_WORDS = (
    "ship harbour airport runway storage tank bridge river field building road vehicle cloud forest port "
    "zoom search patches scene info lookup knowledge rerank box region answer evidence the a of in at near "
    "north south east west large small white red green how many where is are there"
).split()


def _corpus(n_lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12)))
        if i % 3 == 0:
            box = [rng.randint(0, 4000) for _ in range(4)]
            lines.append(f'{{"name": "zoom", "arguments": {{"bbox": {box}, "reason": "{words}"}}}}')
        else:
            lines.append(words.capitalize() + rng.choice([".", "?", "!"]))
    return lines


def build_tiny_qwen_vl(
    out_dir: str | Path, *, arch: str = "qwen2_vl", tool_template: bool = True, seed: int = 0, vocab_size: int = 600
) -> Path:
    """Write a tiny random Qwen2-VL or Qwen2.5-VL checkpoint (model, tokenizer, processor, template) to ``out_dir``.

    Args:
        out_dir: folder to create (or overwrite files in).
        arch: ``"qwen2_vl"`` or ``"qwen2_5_vl"``.
        tool_template: True for a template that renders tools; False for one that ignores them (like the
            templates of the released Qwen2-VL / Qwen2.5-VL checkpoints).
        seed: seeds the corpus and the random weights.
        vocab_size: BPE vocabulary size target.

    Returns:
        The folder.
    """
    import torch
    import transformers as tf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(400, seed), trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    if arch not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"arch must be 'qwen2_vl' or 'qwen2_5_vl', got {arch!r}")
    v25 = arch == "qwen2_5_vl"
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    image_processor = Qwen2VLImageProcessor(
        min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = (tf.Qwen2_5_VLProcessor if v25 else tf.Qwen2VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
        chat_template=TOOL_TEMPLATE if tool_template else PLAIN_TEMPLATE,
    )
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}
    if v25:  # two blocks: one windowed, one with full attention
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                  "fullatt_block_indexes": [1], "window_size": 56}
    config = (tf.Qwen2_5_VLConfig if v25 else tf.Qwen2VLConfig)(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={**vision, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = (tf.Qwen2_5_VLForConditionalGeneration if v25 else tf.Qwen2VLForConditionalGeneration)(config).eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
