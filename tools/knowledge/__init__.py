"""The knowledge base (RS-RAG knowledge and the slow path's concept library) on any store backend.

>>> kb = KnowledgeBase(store=None, encoder=load_encoder())          # doctest: +SKIP
>>> report = ingest_file(kb, "landmarks.jsonl", images_dir="photos")  # doctest: +SKIP
>>> kb.search("gothic cathedral", category="church", k=5)            # doctest: +SKIP
"""

from __future__ import annotations

from rsrag.tools.knowledge.base import AddReport, KnowledgeBase, KnowledgeHit, KnowledgeResult
from rsrag.tools.knowledge.concepts import build_concepts, read_labelled
from rsrag.tools.knowledge.entry import EntryKind, ImageRef, KnowledgeEntry, Location
from rsrag.tools.knowledge.ingest import MAX_FIELD_CHARS, RecordIssue, RecordResult, read_records
from rsrag.tools.knowledge.load import IngestReport, ingest_file

__all__ = [
    "MAX_FIELD_CHARS", "AddReport", "EntryKind", "ImageRef", "IngestReport", "KnowledgeBase", "KnowledgeEntry",
    "KnowledgeHit", "KnowledgeResult", "Location", "RecordIssue", "RecordResult", "build_concepts",
    "ingest_file", "read_labelled", "read_records",
]
