"""Chat models that drive the analyst graph: the backends chosen by a ``--vlm`` spec (OpenAI-compatible
servers, local transformers VLMs) and the offline rule policy."""
