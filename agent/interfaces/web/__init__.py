"""The web workspace (``rsrag serve``): an analyst page over a deep-zoom viewer and the agent's chat.

>>> from rsrag.agent.interfaces.api import Analyst                                      # doctest: +SKIP
>>> from rsrag.agent.interfaces.web import create_app                                   # doctest: +SKIP
>>> app = create_app(Analyst(vlm="rule"), images=["scene.tif"])              # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8765)            # doctest: +SKIP
"""

from __future__ import annotations

from rsrag.agent.interfaces.web.app import create_app

__all__ = ["create_app"]
