"""The agent's workspace: the scenes, encoder, patch store and knowledge base a run works with.

One workspace per process and configuration. Everything is opened lazily and cached: a scene on first
use, the encoder on the first search, a scene's index on the first search of that scene. The default index
is the scene's pyramid (:mod:`rsrag.tools.pyramid`): the first search encodes only the windows it visits,
and :meth:`Workspace.start_filling` completes the finest level in the background. A flat tiling
(``store.tiling = "vit:448"``) is built whole on the first search, resumably, through
:func:`rsrag.tools.indexing.index_scene`. Indexing progress of every kind goes to ``on_index_progress`` and
to the listeners added with :meth:`Workspace.add_index_listener` (the web page streams it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from rsrag.tools.errors import IndexNotFoundError, TilingError
from rsrag.tools.fastpath import find_index
from rsrag.tools.hit import Hit
from rsrag.tools.indexing import IndexProgress, index_scene
from rsrag.tools.knowledge import KnowledgeBase
from rsrag.tools.pyramid import BackgroundFiller, Pyramid, PyramidIndex, is_pyramid
from rsrag.tools.raster import Scene, open_scene
from rsrag.tools.sources import source_key
from rsrag.tools.region import PixelBox
from rsrag.tools.retrieval import RetrievalResult, SlowMode, cascade, search_index
from rsrag.tools.slowpath import SlowPathResult, slow_search
from rsrag.tools.store import IndexInfo, PatchStore, as_patch_store

if TYPE_CHECKING:
    from rsrag.agent.settings import Settings
    from rsrag.tools.calibration import PresenceModel
    from rsrag.tools.encoders.base import Encoder
    from rsrag.tools.scene_cache import ConversionProgress


class Workspace:
    """Lazily opened resources shared by the tools of a run (thread-safe: one per analyst or server).

    Args:
        settings: what to open: ``encoder`` (spec, device, batch size), ``store`` (folder, tiling) and the
            knowledge base's name (``knowledge.name``; in the same store, used by lookups and the slow path).
        on_index_progress: called while a scene is being indexed on demand.
        encoder: an encoder object to use instead of loading the one ``encoder.spec`` names (a host's own
            encoder, or a test's).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_index_progress: Callable[[IndexProgress], None] | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        self.settings = settings
        self.encoder_spec = settings.encoder.spec
        self.knowledge_name = settings.knowledge.name
        self.store_path = settings.store_path
        self.tiling = settings.store.tiling
        self.device = settings.encoder.device
        self.batch_size = settings.encoder.batch_size
        self.precision = settings.encoder.precision
        self.on_index_progress = on_index_progress
        self.on_convert_progress: Callable[[ConversionProgress], None] | None = None
        """Called while a scene is converted into the scene cache on first open (the CLI shows a bar)."""
        self.background_fill = settings.pyramid.background_fill == "always"
        """Start filling a scene's finest pyramid level in the background after its first search (``rsrag
        serve`` turns this on unless ``pyramid.background_fill = "never"``)."""
        self._scenes: dict[str, Scene] = {}
        self._indexes: dict[str, IndexInfo | PyramidIndex] = {}
        self._pyramids: dict[str, Pyramid] = {}
        self._fillers: dict[str, BackgroundFiller] = {}
        self._listeners: list[Callable[[IndexProgress], None]] = []
        self._lock = threading.RLock()
        self._patches: PatchStore | None = None
        self._encoder: Encoder | None = encoder
        self._knowledge: KnowledgeBase | None = None
        self._presence: PresenceModel | None = None

    # --- resources ----------------------------------------------------------------------------------

    def scene(self, path: str | os.PathLike[str]) -> Scene:
        """The scene at ``path`` (a local path or a URL), opened once per workspace; a source without
        efficient random access is converted into the scene cache (``cache`` settings) on first open."""
        key = source_key(path)
        with self._lock:
            if key not in self._scenes:
                self._scenes[key] = open_scene(key, cache=self.settings.scene_cache(),
                                               progress=self.on_convert_progress)
            return self._scenes[key]

    @property
    def encoder(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                from rsrag.tools.encoders import lazy_encoder  # the model loads on first use, not to find an index

                self._encoder = lazy_encoder(self.encoder_spec, device=self.device, batch_size=self.batch_size,
                                             precision=self.precision)
            return self._encoder

    @property
    def patches(self) -> PatchStore:
        with self._lock:
            if self._patches is None:
                self._patches = as_patch_store(self.store_path)
            return self._patches

    @property
    def knowledge(self) -> KnowledgeBase:
        """The knowledge base (world knowledge and the visual concept library): on the Weaviate server the
        settings name (``knowledge.weaviate_url``), else in the workspace's embedded store."""
        with self._lock:
            if self._knowledge is None:
                store = self.settings.knowledge_store() or self.patches.store
                self._knowledge = KnowledgeBase(store, self.encoder, name=self.knowledge_name)
            return self._knowledge

    def has_concepts(self) -> bool:
        """Whether the knowledge base holds a visual concept library (what the slow path needs)."""
        return self.knowledge.count(kind="concept") > 0

    # --- indexes ------------------------------------------------------------------------------------

    @property
    def uses_pyramid(self) -> bool:
        """Whether scenes are indexed as pyramids (the default tiling) rather than one flat tiling."""
        return is_pyramid(self.tiling)

    def index(self, scene: Scene) -> IndexInfo | PyramidIndex:
        """The scene's index for this workspace's encoder.

        With a pyramid tiling (the default) this is the scene's :class:`~rsrag.tools.pyramid.PyramidIndex`,
        ready at once: a search encodes the windows it visits (level 0 first, a few hundred windows).
        With a flat tiling it is the complete flat index, built now if it does not exist (resumably).
        """
        with self._lock:
            if scene.fingerprint in self._indexes:
                return self._indexes[scene.fingerprint]
            info: IndexInfo | PyramidIndex
            if self.uses_pyramid:
                p = self.settings.pyramid
                info = PyramidIndex(self.pyramid(scene), beam=p.beam, expand=p.expand, progress=self._progress,
                                    on_search=lambda _result, s=scene: self._after_search(s))
            else:
                try:
                    info = find_index(self.patches, scene.fingerprint, self.encoder.id, self.tiling)
                except IndexNotFoundError:
                    info = index_scene(scene, self.encoder, self.tiling, self.patches, wait=True,
                                       progress=self._progress).info
            self._indexes[scene.fingerprint] = info
            return info

    def pyramid(self, scene: Scene) -> Pyramid:
        """The scene's pyramid (one per scene and workspace).

        Raises:
            TilingError: the workspace's tiling is flat.
        """
        with self._lock:
            if not self.uses_pyramid:
                raise TilingError(f"the workspace indexes scenes with the flat tiling {self.tiling!r}, not a pyramid")
            pyr = self._pyramids.get(scene.fingerprint)
            if pyr is None:
                pyr = Pyramid(scene, self.encoder, self.tiling, self.patches, sample=self.settings.pyramid.sample,
                              batch_size=self.batch_size)
                self._pyramids[scene.fingerprint] = pyr
            return pyr

    def start_filling(self, scene: Scene) -> BackgroundFiller | None:
        """Fill the scene's finest pyramid level in the background (searches keep priority); ``None`` for a
        flat tiling or when the level is already complete. Progress goes to the index listeners
        (``stage="fill"``)."""
        if not self.uses_pyramid:
            return None
        with self._lock:
            filler = self._fillers.get(scene.fingerprint)
            if filler is not None and (filler.running or filler.done):
                return filler
            pyr = self.pyramid(scene)
            if pyr.complete(pyr.n_levels - 1):
                return None
            filler = BackgroundFiller(pyr, progress=self._progress).start()
            self._fillers[scene.fingerprint] = filler
            return filler

    def _after_search(self, scene: Scene) -> None:
        if self.background_fill:
            self.start_filling(scene)

    def filling(self, scene: Scene) -> BackgroundFiller | None:
        """The scene's background filler, if one was started."""
        with self._lock:
            return self._fillers.get(scene.fingerprint)

    def stop_filling(self, timeout: float | None = 30.0) -> bool:
        """Stop every background filler cleanly (after its current batch); returns whether all have ended."""
        with self._lock:
            fillers = list(self._fillers.values())
        return all([f.stop(timeout) for f in fillers])

    def add_index_listener(self, listener: Callable[[IndexProgress], None]) -> Callable[[], None]:
        """Also send indexing progress (a search encoding what it visits, a background fill, an on-demand flat
        index) to ``listener``; returns the function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _progress(self, p: IndexProgress) -> None:
        with self._lock:
            targets = ([self.on_index_progress] if self.on_index_progress else []) + list(self._listeners)
        for fn in targets:
            try:
                fn(p)
            except Exception:  # noqa: BLE001 - a display callback must never break indexing
                pass

    def close(self) -> None:
        self.stop_filling()
        with self._lock:
            for pyramid in self._pyramids.values():
                pyramid.close()
            for scene in self._scenes.values():
                scene.close()
            self._scenes.clear()
            self._pyramids.clear()
            self._fillers.clear()
            self._indexes.clear()

    # --- retrieval ----------------------------------------------------------------------------------

    def retrieve(self, scene: Scene, phrases: list[str], top_k: int, threshold: float,
                 slow: SlowMode = "auto", exclude: Sequence[PixelBox] = ()) -> RetrievalResult:
        """The cascade (:func:`rsrag.tools.retrieval.cascade`) over the scene's index for one target: the fast
        path, and the slow path through the knowledge base's concept library (when it has one) if nothing is
        confident; sites judged by the encoder's presence calibration. ``exclude``: boxes already reported.

        On a pyramid whose finest level has at most ``pyramid.complete_below`` windows left unencoded (a small
        scene), those are encoded first (progress stage ``index``) and the whole level is searched. A search whose
        finding is ``uncertain`` while at most ``pyramid.settle_below`` windows of the finest level are left
        unencoded encodes them and searches again. The result's ``completed_windows`` says how many windows
        either took."""
        kb = self.knowledge if slow != "never" and self.has_concepts() else None

        def search() -> RetrievalResult:
            return cascade(self.index(scene), self.encoder, phrases=phrases, store=self.patches, kb=kb, top_k=top_k,
                           threshold=threshold, slow=slow, presence=self.presence, exclude=exclude,
                           refine=self.settings.retrieval.refine, concept_match=self.settings.retrieval.concept_match)

        completed = self._complete_small(scene)
        result = search()
        if completed:
            result = result.model_copy(update={"completed_windows": completed})
        if self._unsettled(scene, result):
            # "uncertain" on a partly encoded pyramid may only mean "not looked at yet": when little is left,
            # encode the rest of the finest level and search the whole of it
            encoded = self._fill_finest(scene)
            result = search().model_copy(update={"completed_windows": encoded})
        return result

    def _finest_left(self, scene: Scene) -> int:
        """Windows of the scene's finest pyramid level not searched yet (those known to be empty count as seen)."""
        pyr = self.pyramid(scene)
        level = pyr.n_levels - 1
        return 0 if pyr.complete(level) else pyr.levels[level].count - pyr.covered(level)

    def _fill_finest(self, scene: Scene) -> int:
        """Encode the rest of the scene's finest pyramid level (progress stage ``index``); returns how many."""
        pyr = self.pyramid(scene)
        return pyr.fill(pyr.n_levels - 1, progress=self._progress, stage="index", urgent=True)

    def _complete_small(self, scene: Scene) -> int:
        """Encode the rest of the scene's finest pyramid level when at most ``pyramid.complete_below`` of its
        windows are left (a descent would then cost nearly as much and see less); returns how many."""
        limit = self.settings.pyramid.complete_below
        if limit <= 0 or not self.uses_pyramid or not 0 < self._finest_left(scene) <= limit:
            return 0
        return self._fill_finest(scene)

    def _unsettled(self, scene: Scene, result: RetrievalResult) -> bool:
        """Whether an uncertain result should be settled by completing the scene's finest pyramid level:
        the finding is ``uncertain`` under a calibrated presence model, part of the level is not encoded,
        and at most ``pyramid.settle_below`` of its windows are left."""
        limit = self.settings.pyramid.settle_below
        if (limit <= 0 or not self.uses_pyramid or result.finding != "uncertain" or result.searched_share >= 1.0
                or not self.presence.calibrated):
            return False
        return 0 < self._finest_left(scene) <= limit

    @property
    def presence(self) -> PresenceModel:
        """The encoder's presence calibration (:func:`rsrag.tools.calibration.load_presence`; uncalibrated
        encoders get a model whose every finding is ``uncertain``, saying how to fit one)."""
        with self._lock:
            if self._presence is None:
                from rsrag.tools.calibration import load_presence

                self._presence = load_presence(self.encoder)
            return self._presence

    def slow_search(self, scene: Scene, phrases: list[str], top_k: int, threshold: float) -> SlowPathResult:
        """Slow path alone: phrases -> concept labels -> their example chips as proxies -> the scene's patches."""
        return slow_search(self.index(scene), self.encoder, self.knowledge, phrases=phrases, store=self.patches,
                           top_k=top_k, threshold=threshold)

    def search_similar(self, scene: Scene, box: PixelBox, top_k: int) -> list[Hit]:
        """Image -> patches: regions of the scene that look like ``box`` (the box itself excluded)."""
        info = self.index(scene)
        side = self.encoder.image_size
        crop = scene.read_display(box, out_size=(side, side))
        query = np.asarray(self.encoder.encode_images([crop])[0], dtype=np.float32)
        (hits,) = search_index(self.patches, info, query, [f"like {list(box.as_tuple())}"],
                               k=min(info.n_patches, 4 * top_k + 4), path="similar")
        return [h for h in hits if h.region.box.iou(box) <= 0.3][:top_k]
