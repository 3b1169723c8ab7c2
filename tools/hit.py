"""Hits: regions found by a retrieval path, with their score, confidence and provenance."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.region import Region

HitPath = Literal["fast", "slow", "similar"]


class Hit(BaseModel):
    """One retrieved region (small values only; safe to keep in graph state).

    Attributes:
        region: the region in the scene.
        score: raw cosine similarity between the query embedding and the region's embedding.
        confidence: path-specific confidence in [0, 1], comparable across images (see the path's docs).
        path: which retrieval path found it.
        query: the key phrase (or query text) that found it.
        queries: every query that matched this region or a region merged into it.
        z: standardised score within the scene (fast path), where computed.
        merged: regions merged into this one (overlapping hits across scales, or duplicates).
        index_key: key of the patch index searched; index_version: its table version at query time.
        encoder: encoder id; prompt_version: prompt template set used to embed the query.
        patch: patch index within the tiling, where the hit is a stored patch.
    """

    model_config = ConfigDict(frozen=True)

    region: Region
    score: float
    confidence: float
    path: HitPath
    query: str
    queries: tuple[str, ...] = ()
    z: float | None = None
    merged: int = 0
    index_key: str | None = None
    index_version: int | None = None
    encoder: str | None = None
    prompt_version: str | None = None
    patch: int | None = None
    extra: dict[str, str | float | int] = Field(default_factory=dict)
