"""Settings for tests: every value explicit, on top of the defaults (the suite isolates ``RSRAG_HOME``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rsrag.agent.settings import BudgetSettings, Settings, TraceSettings, load_settings

TINY = "rsrag-tiny-test:random"


def settings_for(folder: Path, *, budgets: BudgetSettings | None = None, trace: TraceSettings | bool | None = None,
                 **dotted: Any) -> Settings:
    """Settings keeping the store, sessions and crops in ``folder``; ``dotted`` keys (``vlm__spec=...`` or
    ``**{"vlm.spec": ...}``) win. The tiny random encoder and a 64 px grid unless given."""
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()  # the tiny encoder's spec validates once its config is registered
    values: dict[str, Any] = {
        "encoder.spec": TINY, "store.path": folder / "store", "store.tiling": "grid:64",
        "paths.sessions": folder / "sessions.sqlite", "paths.crops": folder / "crops",
    }
    if budgets is not None:
        values.update({f"budgets.{k}": v for k, v in budgets.model_dump().items()})
    if isinstance(trace, bool):
        values["trace.enabled"] = trace
    elif trace is not None:
        values.update({f"trace.{k}": v for k, v in trace.model_dump().items()})
    values.update({k.replace("__", "."): v for k, v in dotted.items()})
    return load_settings(overrides=values)
