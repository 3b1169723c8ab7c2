"""The web workspace on a catalog, in a real browser (Debian's chromium driven by Playwright).

The three-scene archive of :mod:`tests.catalog_scenes` (storage tanks in scene ``b`` only) is served with
``catalog=...``: the page lists the scenes and draws their lon/lat footprints on its overview map; choosing
a footprint opens that scene; a question across all scenes opens the scene its answer names and draws its
sites there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.interfaces.web import create_app
from tests.catalog_scenes import CATALOG, TILING, Archive, build_archive
from tests.configured import settings_for
from tests.web_server import running

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "aid-rsicd").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return build_archive(tmp_path_factory.mktemp("archive"), SHARED_DATA)


@pytest.fixture(scope="module")
def server(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("web")
    settings = settings_for(folder, **{"encoder.spec": None, "store.path": archive.store, "store.tiling": TILING,
                                       "vlm.spec": "rule"})
    with Analyst(settings) as analyst:
        app = create_app(analyst, [], upload_dir=folder / "uploads", catalog=CATALOG)
        with running(app) as url:
            yield url


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    from rsrag.agent.interfaces.web.assets import bundled_library_present

    assert bundled_library_present(), "the viewer library is not in the package: run `make web`"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(server)
        tab.wait_for_selector("#scene-map .footprint", timeout=30_000)
        yield tab
        assert not errors, errors
        browser.close()


def test_scene_list_shows_footprints_and_choosing_one_opens_it(page: Any) -> None:
    shapes = page.evaluate("""() => [...document.querySelectorAll('#scene-map .footprint')].map((p) => {
        const b = p.getBBox(); return {id: p.dataset.sceneId, x: b.x, y: b.y, w: b.width, h: b.height}; })""")
    assert [s["id"] for s in shapes] == ["a", "b", "c"]
    assert all(s["w"] > 10 and s["h"] > 10 for s in shapes)  # drawn at a visible size
    xs = [s["x"] for s in shapes]
    assert xs == sorted(xs) and xs[0] + shapes[0]["w"] <= xs[1] + 0.5  # 10 km apart west to east: side by side
    assert page.locator("#scene-list li").count() == 3 and page.is_visible("#across-label")

    page.click("#scene-map .footprint[data-scene-id='c']")
    state = page.evaluate("() => ({image: window.rsrag.state.image.name, selected: document.querySelector('#image-select').value,"
                          " current: document.querySelector('#scene-map .footprint.current').dataset.sceneId})")
    assert state["image"] == "c" and state["current"] == "c"


def test_question_across_scenes_opens_the_scene_it_names(page: Any) -> None:
    page.click("#scene-list li[data-scene-id='a']")
    assert page.is_checked("#across")
    page.fill("#question", "which scenes show storage tanks?")
    page.press("#question", "Enter")
    page.wait_for_selector(".answer", timeout=180_000)
    page.wait_for_function("() => !window.rsrag.state.busy", timeout=60_000)
    got = page.evaluate("""() => ({scenes: window.rsrag.state.answers.at(-1).answer.scenes.map((s) => s.id),
        image: window.rsrag.state.image.name, sites: window.rsrag.state.answers.at(-1).sites.length,
        chips: [...document.querySelectorAll('.answer-scenes .chip')].map((c) => c.textContent),
        cited: [...document.querySelectorAll('#scene-map .footprint.cited')].map((p) => p.dataset.sceneId)})""")
    assert got["scenes"] == ["b"] and got["chips"] == ["b"] and got["cited"] == ["b"]
    assert got["image"] == "b" and got["sites"] >= 1  # the page opened b and drew the answer's sites on it
    assert page.locator(".sv-box.site").count() == got["sites"]
    import os

    from tests.conftest import REPO_ROOT

    folder = Path(os.environ.get("RSRAG_TEST_ARTIFACTS", REPO_ROOT / "build" / "test-artifacts")) / "web"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "catalog.png"))  # the scene list, the map and the answer, for a look
