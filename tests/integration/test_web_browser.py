"""The web workspace as a person sees it, in a real browser (Debian's chromium driven by Playwright).

A mosaic of real AID photos (forest, one airport at a known cell) is served by a real uvicorn server and
asked "where is the airport?" with the rule policy. With the tiny random encoder the tests check what the
page shows: tiles, coordinates, minimap, favicon, a one-line header, keyboard pan/zoom, refit on resize,
one box per site with numbered markers that never overlap, the finding's colour, a click that selects the
clicked site, the same finding/confidences as the answer's JSON, the question box cleared, indexing
progress. With the project's default encoder, an analyst scene (several sites of two classes, see
rsrag.tools.mosaic) is asked where its storage tanks are: the best site is a planted one, and the answer
view is saved as a screenshot (docs/workspace.jpg is a copy of it). Screenshots go to the folder printed
at the start.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rsrag.agent.interfaces.web import create_app
from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.rasters import gradient, write_raster
from tests.web_mosaic import Mosaic, make_mosaic
from tests.web_server import running, tiny_analyst

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UPLOAD_LIMIT = 300_000
QUESTION = "where is the airport?"
FINDING_VARS = {"found": "--found", "uncertain": "--uncertain", "not_found": "--not-found"}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest) -> Path:
    folder = Path(os.environ.get("RSRAG_TEST_ARTIFACTS", REPO_ROOT / "build" / "test-artifacts")) / "web"
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nweb workspace screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory) -> Mosaic:
    aid = SHARED_DATA / "aid-rsicd" / "images"
    if not aid.is_dir():
        pytest.skip(f"AID photos not found at {aid}")
    return make_mosaic(aid, tmp_path_factory.mktemp("mosaic") / "mosaic.tif")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from rsrag.agent.interfaces.web.assets import bundled_library_present

    assert bundled_library_present(), "the viewer library is not in the package: run `make web`"
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(mosaic: Mosaic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("web")
    with tiny_analyst(folder) as analyst:
        app = create_app(analyst, [mosaic.path], upload_dir=folder / "uploads", max_upload_bytes=UPLOAD_LIMIT)
        with running(app) as url:
            yield url


class Page:
    """A page on the workspace that records every request, response and script error."""

    def __init__(self, browser: Any, url: str, width: int = 1400, height: int = 800) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        self.page.wait_for_function("() => window.rsrag && window.rsrag.viewer && window.rsrag.viewer.ready",
                                    timeout=20_000)
        settle(self.page)
        self.url = url

    def __enter__(self) -> Any:
        return self.page

    def __exit__(self, *exc: object) -> None:
        self.page.close()
        assert not self.errors, f"script errors on the page: {self.errors}"
        outside = [u for u in self.requests if not u.startswith(self.url) and not u.startswith("data:")]
        assert not outside, f"the page fetched from elsewhere: {outside}"
        assert not [f for f in self.failed if "/api/" not in f], f"failed requests: {self.failed}"


def settle(page: Any) -> None:
    """Wait until the view stops moving: not animating, and the same centre and scale on two checks 100 ms
    apart (a flight started by a click may not have begun when the first check runs)."""
    page.evaluate("() => { window.__settleKey = null; }")
    page.wait_for_function("""() => { const v = window.rsrag.viewer;
        const key = [v.scale, v.center.x, v.center.y].join();
        const same = key === window.__settleKey; window.__settleKey = key;
        return !v.animating && same; }""", polling=100, timeout=10_000)


def ask(page: Any, question: str) -> dict[str, Any]:
    """Ask through the form; returns the answer's JSON and the sites the page drew for it."""
    page.fill("#question", question)
    page.press("#question", "Enter")
    assert page.input_value("#question") == "", "the question box keeps the question after sending"
    page.wait_for_selector(".answer", timeout=180_000)
    settle(page)
    return page.evaluate("""() => {
        const a = window.rsrag.state.answers.at(-1);
        return {answer: a.answer, sites: a.sites.map((s) => ({id: s.id, number: s.number, bbox: s.bbox,
            finding: s.finding, confidence: s.confidence, windows: s.windows, ids: s.records.map((r) => r.id)}))};
    }""")


def view(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => { const v = window.rsrag.viewer;
        return {scale: v.scale, cx: v.center.x, cy: v.center.y, bar: document.querySelector('.sv-scalebar').innerText,
                barWidth: document.querySelector('.sv-scalebar-bar').getBoundingClientRect().width}; }""")


def drawn(page: Any, selector: str) -> list[dict[str, Any]]:
    """Drawn overlay elements: data attributes, page rectangle, rectangle mapped back to image pixels."""
    return page.evaluate("""(sel) => {
        const v = window.rsrag.viewer, root = document.getElementById('viewer').getBoundingClientRect();
        return [...document.querySelectorAll(sel)].filter((el) => !el.hidden).map((el) => {
            const r = el.getBoundingClientRect();
            const a = v.screenToImage(r.left - root.left, r.top - root.top);
            const b = v.screenToImage(r.right - root.left, r.bottom - root.top);
            return {id: el.dataset.boxId, finding: el.dataset.finding || null, text: el.textContent,
                    data: ['x0', 'y0', 'x1', 'y1'].map((k) => Number(el.dataset[k])),
                    rect: [r.left, r.top, r.right, r.bottom], image: [a.x, a.y, b.x, b.y],
                    border: getComputedStyle(el).borderTopColor, background: getComputedStyle(el).backgroundColor};
        });
    }""", selector)


def disjoint(a: list[float], b: list[float]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def css_colour(page: Any, var: str) -> str:
    """A CSS variable's colour as the browser computes it (rgb(...))."""
    return page.evaluate("""(v) => { const d = document.createElement('div'); d.style.color = `var(${v})`;
        document.body.append(d); const c = getComputedStyle(d).color; d.remove(); return c; }""", var)


def iou(a: list[float], b: tuple[int, ...] | list[int]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# --- the viewer ----------------------------------------------------------------------------------------------


def test_tiles_coordinates_minimap_favicon_and_header(browser: Any, server: str) -> None:
    with Page(browser, server) as page:
        tiles = [u for u in page.evaluate("() => performance.getEntriesByType('resource').map((e) => e.name)")
                 if "/tiles/" in u]
        assert tiles, "no tile was loaded"
        box = page.locator("#viewer").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        text = page.inner_text("#coords")
        assert text.startswith("px 512, 512") and "EPSG:32633" in text and "500256.00, 4999744.00" in text
        # the minimap (OpenSeadragon's navigator) shows the whole image in a corner of the viewer
        mini = page.locator(".navigator").bounding_box()
        assert mini and mini["width"] > 60 and mini["height"] > 60 and mini["x"] + mini["width"] <= box["x"] + box["width"] + 1
        # a scale bar in ground units: the mosaic is georeferenced (0.5 m pixels)
        bar = view(page)
        assert bar["bar"].endswith(" m") and 40 <= bar["barWidth"] <= 200
        metres = float(bar["bar"].split()[0])
        assert metres / (bar["barWidth"] / bar["scale"]) == pytest.approx(0.5, rel=0.02)  # m per image pixel
        # the header is one line at 1,400 px, every control beside the others
        tops = page.evaluate("() => [...document.querySelector('header').children].map((c) => c.getBoundingClientRect().top)")
        heights = page.evaluate("() => [...document.querySelector('header').children].map((c) => c.getBoundingClientRect().height)")
        assert page.evaluate("() => document.querySelector('header').getBoundingClientRect().height") <= 44
        assert max(t + h / 2 for t, h in zip(tops, heights)) - min(t + h / 2 for t, h in zip(tops, heights)) < 4
        # favicon: the page links an SVG; /favicon.ico answers browsers that ask for it
        for path, kind in (("/favicon.ico", "image/x-icon"), ("/static/favicon.svg", "image/svg+xml")):
            response = page.request.get(server + path)
            assert response.status == 200 and response.headers["content-type"].startswith(kind)
        assert page.evaluate("() => document.querySelector('link[rel=icon]').href").endswith("/static/favicon.svg")
        page.click("#zoom-in")
        page.click("#zoom-in")
        settle(page)
        page.wait_for_function("() => performance.getEntriesByType('resource').some((e) => e.name.includes('/tiles/10/'))")


def test_keyboard_pans_zooms_fits_and_escape_deselects(browser: Any, server: str) -> None:
    with Page(browser, server) as page:
        page.focus(".openseadragon-canvas")
        home = view(page)
        page.keyboard.press("+")
        settle(page)
        zoomed = view(page)
        assert zoomed["scale"] > home["scale"] * 1.2
        assert (zoomed["bar"], round(zoomed["barWidth"])) != (home["bar"], round(home["barWidth"]))  # the scale bar follows
        page.keyboard.press("ArrowRight")
        settle(page)
        moved = view(page)
        assert moved["cx"] > zoomed["cx"] + 5 and moved["cy"] == pytest.approx(zoomed["cy"], abs=1)
        page.keyboard.press("-")
        settle(page)
        assert view(page)["scale"] < moved["scale"] / 1.2
        page.keyboard.press("0")
        settle(page)
        assert view(page)["scale"] == pytest.approx(home["scale"], rel=0.01)
        # Escape on the viewer clears a selection (the site details close)
        page.evaluate("() => { window.rsrag.state.selected = 'x'; document.getElementById('details').hidden = false; }")
        page.focus(".openseadragon-canvas")
        page.keyboard.press("Escape")
        assert page.evaluate("() => window.rsrag.state.selected") is None and page.locator("#details").is_hidden()


def test_resize_refits_the_whole_image(browser: Any, server: str) -> None:
    with Page(browser, server) as page:
        def image_on_screen() -> tuple[list[float], dict[str, float]]:
            rect = page.evaluate("""() => { const v = window.rsrag.viewer, im = window.rsrag.state.image;
                const a = v.imageToScreen(0, 0), b = v.imageToScreen(im.width, im.height); return [a.x, a.y, b.x, b.y]; }""")
            return rect, page.locator("#viewer").bounding_box()

        for size in ({"width": 900, "height": 560}, {"width": 1600, "height": 1000}):
            page.set_viewport_size(size)
            page.wait_for_timeout(300)
            settle(page)
            (x0, y0, x1, y1), pane = image_on_screen()
            assert x0 >= -1 and y0 >= -1 and x1 <= pane["width"] + 1 and y1 <= pane["height"] + 1, (size, x0, y0, x1, y1)
            assert max((x1 - x0) / pane["width"], (y1 - y0) / pane["height"]) > 0.9  # fitted, not just visible
        # a view the user zoomed into is kept on resize, not thrown away
        page.click("#zoom-in")
        settle(page)
        before = view(page)["scale"]
        page.set_viewport_size({"width": 1400, "height": 800})
        page.wait_for_timeout(300)
        settle(page)
        assert view(page)["scale"] > before * 0.7


def test_markers_never_overlap_when_boxes_crowd(browser: Any, server: str) -> None:
    with Page(browser, server) as page:
        # 30 boxes, many overlapping and many sharing corners, at three zoom levels
        page.evaluate("""() => { const boxes = [];
            for (let i = 0; i < 30; i++) { const x = 300 + (i % 6) * 24, y = 300 + Math.floor(i / 6) * 20;
                boxes.push({id: 'b' + i, bbox: [x, y, x + 40 + (i % 3) * 30, y + 40], number: i + 1, kind: 'site',
                            finding: ['found', 'uncertain', 'not_found'][i % 3], path: 'fast'}); }
            window.rsrag.viewer.setBoxes(boxes); }""")
        for step in range(3):
            markers = drawn(page, ".sv-marker")
            visible = {b["id"] for b in drawn(page, ".sv-box")}
            assert len(visible) >= 12 and sorted(m["id"] for m in markers) == sorted(visible)  # one per box on screen
            for a, b in itertools.combinations(markers, 2):
                assert disjoint(a["rect"], b["rect"]), (step, a["text"], b["text"])
            page.evaluate(f"() => window.rsrag.viewer.flyTo([300, 300, {420 - step * 50}, {400 - step * 40}])")
            settle(page)


# --- a question ----------------------------------------------------------------------------------------------


def test_answer_draws_each_site_once_with_the_json_s_finding(browser: Any, server: str, artifacts: Path) -> None:
    with Page(browser, server) as page:
        result = ask(page, QUESTION)
        answer, sites = result["answer"], result["sites"]
        regions = [e for e in answer["evidence"] if e.get("bbox")]
        assert sites and regions
        # one box per site: every cited region is in exactly one drawn site; zooms on a site are not boxes of their own
        boxes = drawn(page, ".sv-box.site")
        assert sorted(b["id"] for b in boxes) == sorted(s["id"] for s in sites)
        assert len({tuple(b["data"]) for b in boxes}) == len(boxes)
        for ev in regions:
            homes = [s for s in sites if ev["id"] in s["ids"]]
            assert len(homes) == 1, ev["id"]
        for b in boxes:  # drawn exactly where the evidence says
            assert max(abs(s - d) for s, d in zip(b["image"], b["data"])) < 1.0, b
        assert page.locator(".site-row").count() == len(sites)
        # numbered markers, one per site, never overlapping
        markers = drawn(page, ".sv-marker")
        assert sorted(int(m["text"]) for m in markers) == [s["number"] for s in sites]
        for a, b in itertools.combinations(markers, 2):
            assert disjoint(a["rect"], b["rect"]), (a, b)
        # the finding: the badge says what the JSON says; boxes, markers and legend share its colour
        assert answer["finding"] in ("found", "not_found", "uncertain")
        badge = page.inner_text(".answer .finding-badge")
        assert badge == answer["finding"].replace("_", " ")
        colour = css_colour(page, FINDING_VARS[answer["finding"]])
        for b in boxes:
            assert b["finding"] == answer["findings"].get("airport", answer["finding"]) and b["border"] == colour
        assert all(m["background"] == colour for m in markers)
        assert page.locator(f"#legend .finding-{answer['finding']}").count() == 1 and page.locator("#legend").is_visible()
        # the chat shows the JSON's confidences (of the cited evidence) and a one-line retrieval-only note
        rows = page.eval_on_selector_all(".site-row", "rows => rows.map((r) => [...r.cells].map((c) => c.innerText))")
        for row, site in zip(rows, sites):
            best = max((e for e in regions if e["id"] in site["ids"] and e["path"] != "zoom"), key=lambda e: e["confidence"])
            assert row[0] == str(site["number"]) and row[2] == f"{best['confidence']:.2f}"
            assert row[3] == ", ".join(map(str, site["bbox"]))
        note = page.locator(".answer .note")
        assert note.count() == 1 and note.inner_text().startswith("Retrieval-only") and "\n" not in note.inner_text()
        assert "Retrieval-only" not in page.inner_text(".answer .answer-text")
        page.screenshot(path=str(artifacts / "answer-tiny-encoder.png"))


def test_click_selects_the_clicked_site(browser: Any, server: str, artifacts: Path) -> None:
    with Page(browser, server) as page:
        sites = ask(page, QUESTION)["sites"]
        for site in sites:
            page.click("#zoom-fit")  # the whole image: every site on screen (a selection flies to its site)
            settle(page)
            boxes = {b["id"]: b for b in drawn(page, ".sv-box.site")}
            markers = [m["rect"] for m in drawn(page, ".sv-marker")]
            x0, y0, x1, y1 = boxes[site["id"]]["rect"]
            others = [b["rect"] for i, b in boxes.items() if i != site["id"]] + markers
            spot = next((x, y) for x, y in ((x0 + (x1 - x0) * fx, y0 + (y1 - y0) * fy)
                                           for fx in (0.5, 0.3, 0.7, 0.15, 0.85) for fy in (0.5, 0.3, 0.7, 0.15, 0.85))
                        if all(not (r[0] <= x <= r[2] and r[1] <= y <= r[3]) for r in others))
            page.mouse.click(*spot)
            settle(page)
            assert page.evaluate("() => window.rsrag.state.selected") == site["id"]
            selected = drawn(page, ".sv-box.selected")
            assert [s["id"] for s in selected] == [site["id"]]
            assert page.inner_text("#details-title").startswith(f"site {site['number']}")
            centre = view(page)
            assert (centre["cx"], centre["cy"]) == pytest.approx(((site["bbox"][0] + site["bbox"][2]) / 2,
                                                                  (site["bbox"][1] + site["bbox"][3]) / 2), abs=2)
            # drawn on top: nothing covers the middle of the selected box
            top = page.evaluate("""(id) => { const el = [...document.querySelectorAll('.sv-box.site')].find((e) => e.dataset.boxId === id);
                const boxes = [...document.querySelectorAll('.sv-box')];
                return boxes.indexOf(el) === boxes.length - 1 || boxes.slice(boxes.indexOf(el) + 1).every((b) => b.classList.contains('member')); }""",
                                site["id"])
            assert top, f"site {site['id']} is not drawn on top when selected"
        # a marker selects its site too; the member windows of a site show on demand
        page.click("#zoom-fit")
        settle(page)
        first = next(m for m in drawn(page, ".sv-marker") if m["text"] == "1")
        page.mouse.click((first["rect"][0] + first["rect"][2]) / 2, (first["rect"][1] + first["rect"][3]) / 2)
        settle(page)
        assert page.evaluate("() => window.rsrag.state.selected") == sites[0]["id"]
        page.screenshot(path=str(artifacts / "site-selected.png"))
        page.check("#show-windows")
        page.click("#zoom-fit")
        settle(page)
        windows = sum(len(s["windows"]) for s in sites if len(s["windows"]) > 1)
        assert len(drawn(page, ".sv-box.member")) == windows
        page.uncheck("#show-windows")
        page.focus(".openseadragon-canvas")
        page.keyboard.press("Escape")
        assert len(drawn(page, ".sv-box.member")) == 0 and page.evaluate("() => window.rsrag.state.selected") is None


def test_progress_text_appears_while_the_scene_is_indexed(browser: Any, mosaic: Mosaic, tmp_path: Path) -> None:
    with tiny_analyst(tmp_path) as analyst, running(create_app(analyst, [mosaic.path])) as url:
        with Page(browser, url) as page:
            page.evaluate("""() => { window.seen = [];
                const watch = (el) => new MutationObserver(() => window.seen.push(el.textContent)).observe(el,
                    {childList: true, characterData: true, subtree: true});
                watch(document.getElementById('status')); watch(document.getElementById('chat')); }""")
            ask(page, QUESTION)
            seen = page.evaluate("() => window.seen")
            progress = page.inner_text(".turn .progress")
    assert any("windows" in text and "/" in text for text in seen), seen[:20]
    assert "indexing" in progress and "windows" in progress  # what the time went into stays on the turn
    assert any(text.startswith("thinking") and text.endswith(" s") for text in seen)  # elapsed time while waiting


def test_upload_limit_and_refused_paths_from_the_page(browser: Any, server: str, tmp_path: Path) -> None:
    with Page(browser, server) as page:
        big = tmp_path / "big.tif"
        big.write_bytes(b"\0" * (UPLOAD_LIMIT + 10))
        page.set_input_files("#upload", str(big))
        page.wait_for_function("() => document.getElementById('status').textContent.includes('upload failed')")
        assert "too large" in page.inner_text("#status")
        small = write_raster(tmp_path / "small.tif", gradient(3, 96, 128))
        page.set_input_files("#upload", str(small))
        page.wait_for_function("() => document.getElementById('image-select').options.length === 2")
        assert "small.tif" in page.inner_text("#status")
        page.wait_for_function("() => window.rsrag.viewer.ready && window.rsrag.state.image.name === 'small.tif'")
        assert view(page)["bar"].endswith(" m")  # the test raster is georeferenced too
        for url in ["/static/..%2F..%2Fpyproject.toml", "/static/openseadragon.js",
                    "/api/images/..%2F..%2Fetc%2Fpasswd/tiles/0/0_0.jpg"]:
            assert page.request.get(server + url).status == 404
        refused = page.request.post(server + "/api/ask", data={"image": "/etc/passwd", "question": "hi"})
        assert refused.status == 404 and "no image with id" in refused.json()["error"]


# --- the real encoder on an analyst scene -------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyst_scene(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from rsrag.tools.captioned import read_chips, select_split
    from rsrag.tools.mosaic import build_scene

    data = SHARED_DATA / "aid-rsicd"
    if not (data / "captions.jsonl").is_file():
        pytest.skip(f"AID chips not found at {data}")
    chips = select_split(read_chips(data), "val", 0.1)
    return build_scene(chips, tmp_path_factory.mktemp("analyst") / "scene.tif",
                       backgrounds=["Forest", "Farmland", "Meadow", "Desert"],
                       present={"StorageTanks": 3, "Airport": 2}, absent=["Stadium"], seed=7, side=8)


def test_analyst_scene_with_the_default_encoder(browser: Any, analyst_scene: Any, artifacts: Path, tmp_path: Path) -> None:
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.errors import RsragError

    try:
        load_encoder()
    except RsragError as exc:
        pytest.skip(f"retrieval quality needs the project's default encoder, which cannot load: {exc}")
    truth = analyst_scene.truth
    with tiny_analyst(tmp_path, encoder=None, tiling="pyramid") as analyst, \
            running(create_app(analyst, [analyst_scene.path])) as url:
        with Page(browser, url) as page:
            result = ask(page, "where are the storage tanks?")
            page.screenshot(path=str(artifacts / "answer-default-encoder.jpg"), type="jpeg", quality=85)
            boxes = {b["id"]: b for b in drawn(page, ".sv-box.site")}
            markers = drawn(page, ".sv-marker")
    sites = result["sites"]
    assert sites and len(boxes) == len(sites)
    tanks = [list(b.as_tuple()) for b in truth.present["StorageTanks"]]
    # the best site covers planted tanks, and some site outlines one (retrieval quality itself is measured by
    # benchmarks/analyst.py; this checks that what the page draws is where the tanks are)
    assert any(iou(boxes[sites[0]["id"]]["image"], t) > 0 for t in tanks), (tanks, sites[0]["bbox"])
    best = max(iou(boxes[s["id"]]["image"], t) for s in sites for t in tanks)
    assert best >= 0.3, f"planted tanks at {tanks}; sites {[s['bbox'] for s in sites]} (best IoU {best:.2f})"
    for a, b in itertools.combinations(markers, 2):
        assert disjoint(a["rect"], b["rect"])
    shutil.copy(analyst_scene.path, artifacts / "analyst-scene.tif")
