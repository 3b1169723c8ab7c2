"""Evidence and answers: what the agent found, and what it said with which citations.

An :class:`Evidence` record is produced by a tool call and kept in the graph state's evidence ledger (a
``dict`` keyed by evidence id, merged by :func:`merge_ledger`). Ids are derived from what the evidence
*is* (scene, box, path, query or knowledge entry), so finding the same region twice yields the same id,
and a replayed run yields the same ids. Records hold small values only: a crop is a file path, never pixels.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rsrag.tools.calibration import Finding
from rsrag.tools.errors import RsragError
from rsrag.tools.georef import map_box_to_lonlat
from rsrag.tools.hit import Hit
from rsrag.tools.region import PixelBox, Region
from rsrag.tools.sites import Site

EvidencePath = Literal["fast", "slow", "similar", "zoom", "knowledge", "scene"]
EVIDENCE_ID = re.compile(r"\bE[0-9a-f]{6}\b")
"""The one pattern of an evidence id (``E`` + 6 hex digits, see :func:`evidence_id`), wherever ids are
found in free text (an answer written by a model, a question naming an id)."""


def find_evidence_ids(text: str) -> list[str]:
    """Evidence ids written in ``text``, in order, unique."""
    return list(dict.fromkeys(EVIDENCE_ID.findall(text or "")))


class Evidence(BaseModel):
    """One piece of evidence an answer can cite.

    Attributes:
        id: short stable id the answer cites (``E`` + 6 hex digits).
        kind: ``region`` (a place in the scene), ``knowledge`` (a knowledge entry) or ``scene`` (the whole scene).
        path: what produced it: fast / slow / similar retrieval, a zoom, a knowledge lookup, scene info.
        region: where it is, for region evidence (pixel box, map box, scene fingerprint); for a site, the
            union box of its windows.
        members: a site's windows (best first), where the evidence is a site of several windows.
        score: raw similarity, where a retrieval produced it; confidence: within-scene confidence in [0, 1].
        presence: calibrated probability that what was searched for is at this place (see
            :mod:`rsrag.tools.calibration`), where the encoder has a presence calibration.
        query: the phrase or question that found it; why: how it was found (e.g. the concept that proxied it).
        crop: path of a saved crop image (a reference; pixels never enter graph state).
        knowledge_id / title / snippet: the cited knowledge entry, for knowledge evidence.
        tool / tool_call_id: the tool call that produced it.
        scene_source: the path or URL of the scene the evidence is in (its fingerprint is ``region.scene``),
            so evidence from several scenes of a catalog stays apart; scene_id: the catalog's id of that
            scene, where the evidence came from a catalog search.
        provenance: index key and version, encoder id, prompt version... whatever the tool reported.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    kind: Literal["region", "knowledge", "scene"]
    path: EvidencePath
    region: Region | None = None
    members: tuple[PixelBox, ...] = ()
    score: float | None = None
    confidence: float | None = None
    presence: float | None = None
    query: str | None = None
    why: str | None = None
    crop: str | None = None
    knowledge_id: str | None = None
    title: str | None = None
    snippet: str | None = None
    tool: str = ""
    tool_call_id: str = ""
    scene_source: str | None = None
    scene_id: str | None = None
    provenance: dict[str, str | int | float | None] = Field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the scene the evidence is in (``None`` for knowledge evidence)."""
        return self.region.scene if self.region is not None else None

    @property
    def scene_name(self) -> str | None:
        """How an answer names the evidence's scene: its catalog id, else its file name (``None`` if unknown)."""
        if self.scene_id:
            return self.scene_id
        if self.scene_source:
            return self.scene_source.rstrip("/").rsplit("/", 1)[-1]
        return None

    @property
    def bbox(self) -> list[int] | None:
        """Pixel box ``[x0, y0, x1, y1]`` in full-resolution pixels."""
        return list(self.region.box.as_tuple()) if self.region else None

    def summary(self) -> str:
        """One line for the model: id, where, how it was found and how strongly."""
        parts = [self.id, self.path]
        if self.scene_id:
            parts.append(f"scene={self.scene_id}")
        if self.region is not None:
            parts.append(f"bbox={self.bbox}")
        if self.title:
            parts.append(f"entry={self.knowledge_id} '{self.title}'")
        if self.query:
            parts.append(f"query='{self.query}'")
        if self.confidence is not None:
            parts.append(f"confidence={self.confidence:.2f}")
        if self.presence is not None:
            parts.append(f"presence={self.presence:.2f}")
        if self.score is not None:
            parts.append(f"score={self.score:.3f}")
        if len(self.members) > 1:
            parts.append(f"windows={len(self.members)}")
        if self.why:
            parts.append(f"why: {self.why}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """JSON for ``rsrag ask --json``: id, bbox, map box, scores, path and provenance."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "path": self.path}
        if self.region is not None:
            out["bbox"] = self.bbox
            out["scene"] = self.region.scene
            out["scene_fingerprint"] = self.region.scene
            if self.scene_source is not None:
                out["scene_source"] = self.scene_source
            if self.scene_id is not None:
                out["scene_id"] = self.scene_id
            if self.region.map_box is not None:
                out["map_box"] = {"crs": self.region.map_box.crs, "bounds": list(self.region.map_box.as_tuple())}
        if self.members:
            out["members"] = [list(b.as_tuple()) for b in self.members]
        for key in ("score", "confidence", "presence", "query", "why", "crop", "knowledge_id", "title"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["tool"] = self.tool
        out["provenance"] = dict(self.provenance)
        return out


def lonlat_box(ev: Evidence) -> tuple[float, float, float, float] | None:
    """The lon/lat box (west, south, east, north) of region evidence in a georeferenced scene, else ``None``."""
    if ev.region is None or ev.region.map_box is None:
        return None
    try:
        return map_box_to_lonlat(ev.region.map_box)
    except RsragError:
        return None


def evidence_id(*parts: object) -> str:
    """Stable short id from the identifying parts of a piece of evidence."""
    digest = hashlib.blake2s("|".join(str(p) for p in parts).encode(), digest_size=3).hexdigest()
    return f"E{digest}"


FOOTPRINT_KEYS = ("level", "levels", "window", "px_per_input_px", "searched_share")


def footprint(hit: Hit) -> dict[str, str | int | float | None]:
    """The pyramid level and window footprint a hit was found at (its ``extra``), for evidence provenance:
    ``level`` (0 = coarsest) of ``levels``, ``window`` side in full-resolution pixels, ``px_per_input_px``
    (scene pixels per encoder input pixel) and the share of the finest level searched. Empty for flat indexes."""
    return {k: hit.extra[k] for k in FOOTPRINT_KEYS if k in hit.extra}


def evidence_from_hit(hit: Hit, tool: str, tool_call_id: str, source: str | None = None,
                      scene_id: str | None = None) -> Evidence:
    """Evidence for a retrieval hit (fast, slow or similar path) in the scene read from ``source`` (its path or
    URL; ``scene_id``: its catalog id, for a catalog search)."""
    return Evidence(
        id=evidence_id(hit.region.scene, hit.region.box.as_tuple(), hit.path, hit.query),
        kind="region", path=hit.path, region=hit.region, score=hit.score, confidence=hit.confidence,
        query=hit.query, why=hit_reason(hit),
        tool=tool, tool_call_id=tool_call_id, scene_source=source, scene_id=scene_id,
        provenance={"index_key": hit.index_key, "index_version": hit.index_version, "encoder": hit.encoder,
                    "prompt_version": hit.prompt_version, **footprint(hit)},
    )


def evidence_from_site(site: Site, tool: str, tool_call_id: str, source: str | None = None,
                       scene_id: str | None = None) -> Evidence:
    """Evidence for a site (overlapping or touching windows grouped): its union box, its best window's scores
    and provenance, its member windows. A site of one window has that window's evidence id. ``source`` /
    ``scene_id``: the scene's path or URL and catalog id (see :func:`evidence_from_hit`)."""
    best = site.best
    return Evidence(
        id=evidence_id(site.region.scene, site.region.box.as_tuple(), best.path, best.query),
        kind="region", path=best.path, region=site.region,
        members=tuple(m.region.box for m in site.members) if len(site.members) > 1 else (),
        score=site.score, confidence=site.confidence, presence=site.presence, query=best.query,
        why=hit_reason(best), tool=tool, tool_call_id=tool_call_id, scene_source=source, scene_id=scene_id,
        provenance={"index_key": best.index_key, "index_version": best.index_version, "encoder": best.encoder,
                    "prompt_version": best.prompt_version, **footprint(best)},
    )


def hit_reason(hit: Hit) -> str | None:
    """Why a hit was found, from the provenance its path recorded (concept label, fused paths)."""
    extra = hit.extra
    parts = []
    if extra.get("label"):
        parts.append(f"concept '{extra['label']}' (label score {extra.get('label_score')}, entry {extra.get('entry_id')})")
    if extra.get("paths") and "+" in str(extra["paths"]):
        parts.append(f"found by {extra['paths']}")
    return "; ".join(parts) or None


def merge_ledger(left: dict[str, Evidence] | None, right: dict[str, Evidence] | None) -> dict[str, Evidence]:
    """Reducer of the evidence ledger: union by id; a re-found item keeps its best scores and its crop."""
    merged = dict(left or {})
    for key, new in (right or {}).items():
        old = merged.get(key)
        if old is None:
            merged[key] = new
            continue
        update: dict[str, Any] = {}
        if new.confidence is not None and (old.confidence is None or new.confidence > old.confidence):
            update.update(confidence=new.confidence, score=new.score)
        if new.crop and not old.crop:
            update["crop"] = new.crop
        if new.presence is not None and old.presence is None:
            update["presence"] = new.presence
        merged[key] = old.model_copy(update=update) if update else old
    return merged


class Answer(BaseModel):
    """The agent's answer to one question.

    Attributes:
        text: the answer.
        cited: ids of the evidence the answer cites (all present in the ledger when ``supported``).
        confidence: the model's (or policy's) confidence in [0, 1].
        finding: whether what was asked is in the scene: ``found`` / ``not_found`` / ``uncertain``, from the
            encoder's presence calibration through this question's searches (``None`` when no search judged
            presence); separate from ``supported``.
        findings: the finding per target searched (the search's phrases, comma-joined).
        supported: whether the sufficiency check accepted the citations (citation integrity only: a
            supported answer can say "not found").
        missing: what was missing when the budget ran out or the citations did not hold, else ``None``.
        input_errors: why this question's tools could not read their input (an unreadable or truncated
            image), one line each (see :attr:`bad_input`).
        evidence: the cited evidence records.
        backend: the chat model that answered; steps: model steps used; seconds: wall time.
    """

    text: str
    cited: list[str]
    confidence: float
    finding: Finding | None = None
    findings: dict[str, Finding] = Field(default_factory=dict)
    supported: bool = True
    missing: str | None = None
    input_errors: list[str] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    backend: str = ""
    steps: int = 0
    seconds: float = 0.0
    thread_id: str | None = None

    @property
    def bad_input(self) -> str | None:
        """Why the image could not be read, when that left the answer citing nothing (``rsrag ask`` exits 2 and
        MCP ``ask`` is a ``bad input`` error then); else ``None``."""
        return self.input_errors[0] if self.input_errors and not self.cited else None

    @property
    def scenes(self) -> list[dict[str, str | None]]:
        """The scenes of the cited evidence, in order of first citation: ``source`` (path or URL),
        ``fingerprint`` and catalog ``id`` (``None`` where the scene did not come from a catalog)."""
        out: dict[str, dict[str, str | None]] = {}
        for ev in self.evidence:
            if ev.fingerprint is not None and ev.fingerprint not in out:
                out[ev.fingerprint] = {"source": ev.scene_source, "fingerprint": ev.fingerprint, "id": ev.scene_id}
        return list(out.values())

    def geojson(self) -> dict[str, Any]:
        """The cited regions of georeferenced scenes as a GeoJSON FeatureCollection (lon/lat, RFC 7946)."""
        features = []
        for ev in self.evidence:
            if ev.region is None or ev.region.map_box is None:
                continue
            west, south, east, north = map_box_to_lonlat(ev.region.map_box)
            ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
            features.append({
                "type": "Feature",
                "id": ev.id,
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"bbox_px": ev.bbox, "path": ev.path, "confidence": ev.confidence, "presence": ev.presence,
                               "map_crs": ev.region.map_box.crs, "map_bounds": list(ev.region.map_box.as_tuple()),
                               "scene": ev.region.scene, "scene_source": ev.scene_source, "scene_id": ev.scene_id},
            })
        return {"type": "FeatureCollection", "features": features}

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.text, "cited": self.cited, "confidence": self.confidence, "finding": self.finding,
            "findings": dict(self.findings), "supported": self.supported,
            "missing": self.missing, "input_errors": list(self.input_errors),
            "evidence": [e.to_json() for e in self.evidence], "scenes": self.scenes,
            "geojson": self.geojson(),
            "backend": self.backend, "steps": self.steps, "seconds": round(self.seconds, 3), "thread_id": self.thread_id,
        }
