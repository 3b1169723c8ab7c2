"""rsrag.agent: the analyst (settings, CLI, and later the agent graph's logic and the Python API)."""
