"""Knowledge entries: the records of the knowledge base (RS-RAG landmarks, documents, visual concepts).

An entry is small, typed and lossless: named text fields (``description`` plus any structured fields such as
RSWK's history, architecture, function or remote-sensing indicators) keep their original keys and values,
so a record read from a file and written back out is the same record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

EntryKind = Literal["knowledge", "concept"]
"""``knowledge``: world/domain knowledge (RS-RAG); ``concept``: a labelled visual concept (ImageRAG slow path)."""

LONLAT_CRS = "EPSG:4326"


class Location(BaseModel):
    """Where an entry is: a point or a GeoJSON geometry, in a named CRS.

    ``lon``/``lat`` are the WGS84 representative point (given, or transformed from ``x``/``y`` or from the
    geometry's bounding-box centre); they are what location filters use.

    Attributes:
        crs: CRS of ``x``/``y`` and ``geometry`` (an authority string such as ``EPSG:32618``).
        x, y: the point in ``crs`` as given (for EPSG:4326, x = lon and y = lat).
        geometry: a GeoJSON geometry object in ``crs``, as given.
        lon, lat: WGS84 representative point.
    """

    model_config = ConfigDict(frozen=True)

    crs: str = LONLAT_CRS
    x: float | None = None
    y: float | None = None
    geometry: dict[str, JsonValue] | None = None
    lon: float
    lat: float

    @field_validator("lon")
    @classmethod
    def _lon(cls, v: float) -> float:
        if not -180.0 <= v <= 180.0:
            raise ValueError(f"longitude {v} is outside [-180, 180]")
        return v

    @field_validator("lat")
    @classmethod
    def _lat(cls, v: float) -> float:
        if not -90.0 <= v <= 90.0:
            raise ValueError(f"latitude {v} is outside [-90, 90]")
        return v


class ImageRef(BaseModel):
    """One image of an entry: its file and a content fingerprint (for idempotent re-adds)."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha1: str = ""


class KnowledgeEntry(BaseModel):
    """One record of the knowledge base.

    Attributes:
        id: unique, stable identifier (what answers cite).
        name: display name (a landmark's name, a concept's label).
        category: class or category (filterable).
        kind: ``knowledge`` or ``concept``.
        description: main free text.
        fields: further named text fields, kept verbatim (structured values are kept as given).
        images: image files of the entry.
        location: optional location.
        source: where the record came from (file, dataset, URL).
        licence: licence of the record.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    name: str = ""
    category: str = ""
    kind: EntryKind = "knowledge"
    description: str = ""
    fields: dict[str, JsonValue] = Field(default_factory=dict)
    images: tuple[ImageRef, ...] = ()
    location: Location | None = None
    source: str = ""
    licence: str = ""

    @field_validator("id")
    @classmethod
    def _strip_id(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("id is empty")
        return v

    @model_validator(mode="after")
    def _has_content(self) -> KnowledgeEntry:
        if not (self.name or self.description or self.fields or self.images):
            raise ValueError("entry has no name, description, fields or images")
        return self

    def search_text(self) -> str:
        """All text of the entry in one string: what BM25 indexes and what the text vector embeds."""
        parts = [self.name, self.category, self.description]
        parts += [f"{k.replace('_', ' ')}: {flatten(v)}" for k, v in self.fields.items()]
        return "\n".join(p for p in parts if p)

    def embed_text(self, max_chars: int = 1000) -> str:
        """The text embedded as the entry's text vector (name, category and the start of its text)."""
        return self.search_text()[:max_chars]

    def content_hash(self) -> str:
        """Hash of everything stored about the entry (changes when any field or image content changes)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def flatten(value: Any) -> str:
    """A structured field value as plain text (lists joined, mappings as ``key: value``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "; ".join(flatten(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {flatten(v)}" for k, v in value.items())
    return str(value)
