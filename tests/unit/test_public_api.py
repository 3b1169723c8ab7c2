"""The public surface of rsrag: every package declares ``__all__``, and it is pinned here (as httpx does).

Changing what a package exports is a decision: update the pinned list in the same change. Every name a
package defines itself (not imported, not private) must be exported; every exported name must resolve.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import rsrag

EXPORTED: dict[str, list[str]] = {
    "rsrag.agent": [
        "AgentContext", "AgentState", "Analyst", "Answer", "Budgets", "Evidence", "InputState", "OutputState",
        "Resources", "Scene", "Settings", "Step", "agent_graph", "analyst_tool_node", "analyst_tools", "answer",
        "build_mcp_server", "checkpoint_serializer", "describe_update", "imagerag_graph", "indexer_graph",
        "load_chat_model", "load_settings", "lookup_knowledge", "merge_ledger", "open_analyst", "open_scene", "rerank",
        "scene_info", "search_patches", "search_similar", "tool_error_message", "zoom",
    ],
    "rsrag.agent.interfaces": [],
    "rsrag.agent.interfaces.cli": ["app", "main"],
    "rsrag.agent.interfaces.web": ["create_app"],
    "rsrag.agent.models": ["BACKENDS", "RulePolicy", "load_chat_model"],
    "rsrag.agent.models.vlm": [
        "ChatFamily", "ParsedOutput", "Prompt", "QwenFamily", "TransformersChatModel", "UnknownChatFamilyError",
        "VLMError", "VLMInputError", "VLMLoadError", "family_names", "get_family", "load_transformers_chat",
        "parse_spec", "register_family",
    ],
    "rsrag.agent.trace": [
        "AnswerRecord", "EvidenceRecord", "Provenance", "RunRow", "TraceEvent", "TraceRun", "TraceSettings",
        "TraceStore", "Tracer", "VerifyReport",
    ],
    "rsrag.tools": [],
    "rsrag.tools.encoders": [
        "DEFAULT_SPEC", "Encoder", "EncoderSpec", "ImageLike", "LazyEncoder", "check_spec", "clear_encoder_cache",
        "hf_offline", "known_encoder_id", "lazy_encoder", "load_encoder", "parse_spec",
    ],
    "rsrag.tools.encoders.weights": [],
    "rsrag.tools.knowledge": [
        "AddReport", "EntryKind", "ImageRef", "IngestReport", "KnowledgeBase", "KnowledgeEntry", "KnowledgeHit",
        "KnowledgeResult", "Location", "MAX_FIELD_CHARS", "RecordIssue", "RecordResult", "build_concepts",
        "ingest_file", "read_labelled", "read_records",
    ],
    "rsrag.tools.store": [
        "Columns", "FieldType", "IndexInfo", "LanceStore", "LanceTable", "PatchStore", "Range", "ScalarField",
        "SceneStats", "SearchResult", "Store", "StoreTable", "TableSchema", "VectorField", "Where", "as_patch_store",
        "index_key", "open_store", "region_from_row", "resolve_store_path", "rsrag_home",
    ],
    "rsrag.tools.training": [],
    "rsrag.graphs": ["build_agent_graph", "build_imagerag_graph", "build_indexer_graph"],
    "rsrag.prompts": ["Prompt", "load_prompt"],
}


def packages() -> list[str]:
    names = []
    for namespace in ("agent", "tools", "graphs", "prompts"):
        package = importlib.import_module(f"rsrag.{namespace}")
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.") if m.ispkg]
    return sorted(names)


def test_every_package_is_pinned() -> None:
    assert rsrag.__name__ == "rsrag"
    assert packages() == sorted(EXPORTED), "a package was added or removed: pin its __all__ in EXPORTED"


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_names_are_pinned(name: str) -> None:
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert exported is not None, f"{name} declares no __all__"
    assert sorted(exported) == sorted(EXPORTED[name]) and len(set(exported)) == len(exported)
    defined = [n for n, v in vars(package).items()
               if not n.startswith("_") and getattr(v, "__module__", None) == name]
    assert set(defined) <= set(exported), f"{name} defines public names it does not export: {set(defined) - set(exported)}"
    for attr in exported:
        assert getattr(package, attr) is not None, f"{name}.{attr} does not resolve"
