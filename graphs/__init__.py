"""rsrag.graphs: LangGraph wiring only (no logic, no model loading at import time)."""
