"""The page's static files: a fixed list served from the package, the bundled viewer library, the favicon."""

from __future__ import annotations

import io

from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from rsrag.agent.interfaces.web.assets import BUNDLED_FILES, PAGE_FILES, favicon_ico, read_static, static_routes


def test_only_listed_names_are_served() -> None:
    for name in PAGE_FILES:
        body, media = read_static(name)  # type: ignore[misc]
        assert body and media == PAGE_FILES[name]
    for name in ("../app.py", "app.py", "index.html", "static/openseadragon.min.js", "", "openseadragon.js"):
        assert read_static(name) is None


def test_the_bundled_viewer_library_and_favicon_over_http() -> None:
    client = TestClient(Starlette(routes=static_routes()))
    library = client.get("/static/openseadragon.min.js")
    assert library.status_code == 200, library.text  # `make web` (part of make setup) puts it into the package
    assert library.headers["content-type"].startswith("text/javascript") and b"OpenSeadragon" in library.content[:4000]
    assert set(BUNDLED_FILES) == {"openseadragon.min.js", "openseadragon.LICENSE.txt"}
    assert client.get("/static/openseadragon.LICENSE.txt").status_code == 200
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content == favicon_ico()
    with Image.open(io.BytesIO(icon.content)) as im:
        assert im.format == "ICO" and im.size == (32, 32)
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404 and "no static file" in missing.json()["error"]
