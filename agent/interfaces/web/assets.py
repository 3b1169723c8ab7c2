"""The page's own files and the bundled viewer library, served from the package (nothing from elsewhere).

The page's files (``index.html``, ``app.js``, ``viewer.js``, ``style.css``, ``favicon.svg``) are in the
repository. The viewer library, OpenSeadragon, is an npm package pinned by ``package-lock.json`` and copied
into ``static/`` by ``make web`` (part of ``make setup``); that folder is ignored by git and shipped in the
wheel. Only names in :data:`PAGE_FILES` and :data:`BUNDLED_FILES` are served: no path from a request ever
reaches the file system.
"""

from __future__ import annotations

import functools
import io
from importlib import resources

from PIL import Image, ImageDraw
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PACKAGE = "rsrag.agent.interfaces.web"
PAGE_FILES = {"app.js": "text/javascript", "viewer.js": "text/javascript", "style.css": "text/css",
              "favicon.svg": "image/svg+xml"}
#: What ``make web`` copies into ``static/`` (see the Makefile).
BUNDLED_FILES = {"openseadragon.min.js": "text/javascript", "openseadragon.LICENSE.txt": "text/plain"}
MISSING_LIBRARY = ("the web viewer library {name} is not in the package: run `make web` (npm ci, then the copy "
                   "into agent/interfaces/web/static) and restart rsrag serve")


def read_static(name: str) -> tuple[bytes, str] | None:
    """The bytes and media type of a page file or bundled library file, or ``None`` when it is not there."""
    root = resources.files(PACKAGE)
    if name in PAGE_FILES:
        return root.joinpath(name).read_bytes(), PAGE_FILES[name]
    if name in BUNDLED_FILES:
        path = root.joinpath("static").joinpath(name)
        return (path.read_bytes(), BUNDLED_FILES[name]) if path.is_file() else None
    return None


def bundled_library_present() -> bool:
    """Whether ``make web`` has put the viewer library into the package."""
    return resources.files(PACKAGE).joinpath("static").joinpath("openseadragon.min.js").is_file()


@functools.cache
def favicon_ico() -> bytes:
    """The favicon as an ICO (the page links the SVG; this answers browsers that ask for /favicon.ico)."""
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, 31, 31), radius=6, fill=(29, 36, 48, 255))
    draw.rectangle((5, 8, 19, 20), outline=(59, 209, 255, 255), width=3)
    draw.ellipse((18, 17, 28, 27), fill=(47, 191, 113, 255))
    out = io.BytesIO()
    image.save(out, format="ICO", sizes=[(32, 32), (16, 16)])
    return out.getvalue()


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    found = read_static(name)
    if found is None:
        message = (MISSING_LIBRARY.format(name=name) if name in BUNDLED_FILES else f"no static file {name[:60]!r}")
        return JSONResponse({"error": message, "type": "NotFound"}, status_code=404)
    body, media_type = found
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


async def _favicon(request: Request) -> Response:
    return Response(favicon_ico(), media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})


def static_routes() -> list[Route]:
    """``/static/{name}`` (page files and the bundled library) and ``/favicon.ico``."""
    return [Route("/static/{name}", _static), Route("/favicon.ico", _favicon)]
