"""Store tables of a knowledge base: one row per entry (text + image vectors), one row per entry image."""

from __future__ import annotations

import hashlib
import re

from rsrag.tools.store.base import FieldType, ScalarField, TableSchema, VectorField

_F = ScalarField
ENTRY_FIELDS = (
    _F("id", FieldType.STR), _F("kind", FieldType.STR), _F("name", FieldType.STR), _F("category", FieldType.STR),
    _F("search_text", FieldType.STR), _F("entry_json", FieldType.STR), _F("content_hash", FieldType.STR),
    _F("n_images", FieldType.INT), _F("has_image", FieldType.BOOL),
    _F("lon", FieldType.FLOAT, nullable=True), _F("lat", FieldType.FLOAT, nullable=True),
    _F("source", FieldType.STR), _F("licence", FieldType.STR),
)
IMAGE_FIELDS = (
    _F("id", FieldType.STR), _F("entry_id", FieldType.STR), _F("kind", FieldType.STR), _F("category", FieldType.STR),
    _F("path", FieldType.STR), _F("sha1", FieldType.STR),
)
RESULT_FIELDS = [f.name for f in ENTRY_FIELDS]


def _slug(name: str, encoder: str) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:30] or "kb"
    return f"{base}_{hashlib.blake2b(encoder.encode(), digest_size=4).hexdigest()}"


def entry_schema(name: str, encoder: str, dim: int) -> TableSchema:
    """Entries of knowledge base ``name`` embedded by ``encoder``: vectors ``text`` and ``image``.

    Entries without images store their text vector in ``image`` too, with ``has_image`` false; image
    searches filter on ``has_image``.
    """
    return TableSchema(
        name=f"kb_{_slug(name, encoder)}", key="id", fields=ENTRY_FIELDS,
        vectors=(VectorField("text", dim), VectorField("image", dim)), text_fields=("search_text",),
    )


def image_schema(name: str, encoder: str, dim: int) -> TableSchema:
    """Every image of every entry with its own vector (concept chips for the slow path's proxies)."""
    return TableSchema(name=f"kbimg_{_slug(name, encoder)}", key="id", fields=IMAGE_FIELDS,
                       vectors=(VectorField("image", dim),))
