"""Import a knowledge file into a knowledge base: valid records are added, bad ones reported and skipped."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from rsrag.tools.knowledge.base import AddReport, KnowledgeBase, Progress
from rsrag.tools.knowledge.ingest import MAX_FIELD_CHARS, RecordIssue, read_records


class IngestReport(BaseModel):
    """Outcome of :func:`ingest_file`: what was written and every record that was skipped, with why."""

    source: str
    records: int
    written: AddReport
    issues: list[str] = Field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.issues)


def ingest_file(kb: KnowledgeBase, path: str | Path, images_dir: str | Path | None = None, *,
                max_field_chars: int = MAX_FIELD_CHARS, progress: Progress | None = None) -> IngestReport:
    """Validate every record of a JSONL / CSV / GeoJSON file and add the valid ones (idempotent).

    Raises:
        DataError: the file (or image folder) is missing or unreadable as a whole.
        StoreError: the store cannot be written.
    """
    results = list(read_records(path, images_dir, max_field_chars=max_field_chars))
    issues: list[RecordIssue] = [r.issue for r in results if r.issue is not None]
    entries = [r.entry for r in results if r.entry is not None]
    written = kb.add(entries, total=len(entries), progress=progress)
    return IngestReport(source=str(path), records=len(results), written=written, issues=[str(i) for i in issues])
