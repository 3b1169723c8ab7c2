"""rsrag.tools: the capabilities, usable without LangGraph.

Raster engine (:mod:`rsrag.tools.raster`), regions (:mod:`rsrag.tools.region`), tiling
(:mod:`rsrag.tools.tiling`), display conversion (:mod:`rsrag.tools.display`), georeferencing
(:mod:`rsrag.tools.georef`) and the error tree (:mod:`rsrag.tools.errors`). Nothing here imports LangGraph
or loads a model at import time.
"""

__all__: list[str] = []  # the capabilities are their modules (raster, region, tiling, retrieval, store, ...)
