"""The agent's workspace: the scenes, encoder, patch store and knowledge base a run works with.

One workspace per process and configuration. Everything is opened lazily and cached: a scene on first
use, the encoder on the first search, a scene's patch index on the first search of that scene (built
then if it does not exist yet, resumably, through :func:`rsrag.tools.indexing.index_scene`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rsrag.tools.errors import IndexNotFoundError
from rsrag.tools.fastpath import Calibration, FastPathResult, fast_search, find_index
from rsrag.tools.hit import Hit
from rsrag.tools.indexing import DEFAULT_TILING, IndexProgress, index_scene
from rsrag.tools.knowledge import KnowledgeBase
from rsrag.tools.raster import Scene, open_scene
from rsrag.tools.region import PixelBox
from rsrag.tools.slowpath import SlowPathResult, slow_search
from rsrag.tools.store import IndexInfo, PatchStore, as_patch_store, region_from_row

if TYPE_CHECKING:
    from rsrag.tools.encoders.base import Encoder


class Workspace:
    """Lazily opened resources shared by the tools of a run.

    Args:
        encoder: encoder spec (``None``: the bundled offline encoder).
        store: embedded store folder (``None``: the default location, see :mod:`rsrag.tools.store.location`).
        tiling: tiling spec used when a scene must be indexed.
        knowledge: name of the knowledge base (in the same store) that knowledge lookups and the slow path use.
        device: torch device for the encoder.
        on_index_progress: called while a scene is being indexed on demand.
    """

    def __init__(
        self,
        encoder: str | None = None,
        store: str | os.PathLike[str] | None = None,
        tiling: str = DEFAULT_TILING,
        device: str = "cpu",
        knowledge: str = "default",
        on_index_progress: Callable[[IndexProgress], None] | None = None,
    ) -> None:
        self.encoder_spec = encoder
        self.knowledge_name = knowledge
        self.store_path = store
        self.tiling = tiling
        self.device = device
        self.on_index_progress = on_index_progress
        self._scenes: dict[str, Scene] = {}
        self._indexes: dict[str, IndexInfo] = {}
        self._lock = threading.RLock()
        self._patches: PatchStore | None = None
        self._encoder: Encoder | None = None
        self._knowledge: KnowledgeBase | None = None

    # --- resources ----------------------------------------------------------------------------------

    def scene(self, path: str | os.PathLike[str]) -> Scene:
        """The scene at ``path``, opened once per workspace."""
        key = str(Path(path).expanduser().resolve())
        with self._lock:
            if key not in self._scenes:
                self._scenes[key] = open_scene(key)
            return self._scenes[key]

    @property
    def encoder(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                from rsrag.tools.encoders import load_encoder

                self._encoder = load_encoder(self.encoder_spec, device=self.device)
            return self._encoder

    @property
    def patches(self) -> PatchStore:
        with self._lock:
            if self._patches is None:
                self._patches = as_patch_store(self.store_path)
            return self._patches

    @property
    def knowledge(self) -> KnowledgeBase:
        """The knowledge base (world knowledge and the visual concept library), in the workspace's store."""
        with self._lock:
            if self._knowledge is None:
                self._knowledge = KnowledgeBase(self.patches.store, self.encoder, name=self.knowledge_name)
            return self._knowledge

    def has_concepts(self) -> bool:
        """Whether the knowledge base holds a visual concept library (what the slow path needs)."""
        return self.knowledge.count(kind="concept") > 0

    def index(self, scene: Scene) -> IndexInfo:
        """The scene's patch index for this workspace's encoder, built now if it does not exist."""
        with self._lock:
            if scene.fingerprint in self._indexes:
                return self._indexes[scene.fingerprint]
            try:
                info = find_index(self.patches, scene.fingerprint, self.encoder.id, self.tiling)
            except IndexNotFoundError:
                info = index_scene(scene, self.encoder, self.tiling, self.patches, wait=True,
                                   progress=self.on_index_progress).info
            self._indexes[scene.fingerprint] = info
            return info

    def close(self) -> None:
        with self._lock:
            for scene in self._scenes.values():
                scene.close()
            self._scenes.clear()

    # --- retrieval ----------------------------------------------------------------------------------

    def search_patches(self, scene: Scene, phrases: list[str], top_k: int, threshold: float) -> FastPathResult:
        """Fast path: key phrases -> the scene's best patches."""
        return fast_search(self.index(scene), self.encoder, phrases=phrases, store=self.patches,
                           top_k=top_k, threshold=threshold)

    def slow_search(self, scene: Scene, phrases: list[str], top_k: int, threshold: float = 0.5) -> SlowPathResult:
        """Slow path: phrases -> concept labels -> their example chips as proxies -> the scene's patches."""
        return slow_search(self.index(scene), self.encoder, self.knowledge, phrases=phrases, store=self.patches,
                           top_k=top_k, threshold=threshold)

    def search_similar(self, scene: Scene, box: PixelBox, top_k: int, calibration: Calibration | None = None) -> list[Hit]:
        """Image -> patches: regions of the scene that look like ``box`` (the box itself excluded)."""
        info = self.index(scene)
        side = self.encoder.image_size
        crop = scene.read_display(box, out_size=(side, side))
        query = np.asarray(self.encoder.encode_images([crop])[0], dtype=np.float32)
        result = self.patches.search(info, query, min(info.n_patches, 4 * top_k + 4))
        z = self.patches.stats(info).zscores(query, np.asarray(result.scores))
        confidence = (calibration or Calibration()).confidence(z)
        hits: list[Hit] = []
        for row, score, zi, ci in zip(result.rows, result.scores, z, confidence):
            region = region_from_row(row)
            if region.box.iou(box) > 0.3:
                continue
            hits.append(Hit(
                region=region, score=float(score), confidence=float(ci), path="similar",
                query=f"like {list(box.as_tuple())}", z=float(zi), index_key=info.key,
                index_version=result.version, encoder=info.encoder, patch=int(row["patch"]),
            ))
            if len(hits) == top_k:
                break
        return hits
