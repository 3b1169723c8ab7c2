"""The web workspace end to end in a real browser (Debian's chromium driven by Playwright).

A mosaic of real AID photos (forest, with one airport at a known cell) is served by a real uvicorn server;
the page is asked "where is the airport?" with the rule policy. With the tiny random encoder the tests check
the plumbing (tiles, coordinates, streamed steps, boxes drawn exactly where the evidence says, details,
trace, upload limits, refused paths); with the project's default encoder one more test checks that the
best cited box is the planted airport. Screenshots go to the folder printed at the start.
"""

from __future__ import annotations

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
    """A page on the workspace that records every request and script error."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 800})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        self.page.wait_for_selector(".dz-tile.loaded", timeout=20_000)
        self.url = url

    def __enter__(self) -> Any:
        return self.page

    def __exit__(self, *exc: object) -> None:
        self.page.close()
        assert not self.errors, f"script errors on the page: {self.errors}"
        outside = [u for u in self.requests if not u.startswith(self.url) and not u.startswith("data:")]
        assert not outside, f"the page fetched from elsewhere: {outside}"


def ask(page: Any, question: str) -> dict[str, Any]:
    """Ask through the form; returns the answer's evidence as the page holds it."""
    page.fill("#question", question)
    page.press("#question", "Enter")
    page.wait_for_selector(".answer", timeout=120_000)
    return page.evaluate("""() => {
        const s = window.rsrag.state;
        return {cited: [...s.cited], evidence: Object.fromEntries([...s.evidence].map(([k, v]) => [k, v]))};
    }""")


def drawn_boxes(page: Any) -> dict[str, dict[str, Any]]:
    """Each drawn box: its data attributes, and its on-screen rectangle mapped back to image pixels."""
    return page.evaluate("""() => {
        const v = window.rsrag.viewer, root = document.getElementById('viewer').getBoundingClientRect();
        const out = {};
        for (const el of document.querySelectorAll('.dz-box')) {
            const r = el.getBoundingClientRect();
            const a = v.screenToImage(r.left - root.left, r.top - root.top);
            const b = v.screenToImage(r.right - root.left, r.bottom - root.top);
            const onTop = document.elementFromPoint(r.left + 1, r.top + r.height / 2);
            out[el.dataset.evidenceId] = {cited: el.dataset.cited === 'true',
                visible: !!(onTop && onTop.closest('.dz-box')),
                data: ['x0', 'y0', 'x1', 'y1'].map((k) => Number(el.dataset[k])), screen: [a.x, a.y, b.x, b.y]};
        }
        return out;
    }""")


def iou(a: list[float], b: tuple[int, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_tiles_and_coordinates(browser: Any, server: str, mosaic: Mosaic) -> None:
    with Page(browser, server) as page:
        tiles = page.eval_on_selector_all(".dz-tile.loaded", "els => els.map(e => e.naturalWidth)")
        assert tiles and all(w > 0 for w in tiles)
        box = page.locator("#viewer").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        text = page.inner_text("#coords")
        assert text.startswith("px 512, 512") and "EPSG:32633" in text and "500256.00, 4999744.00" in text
        page.click("#zoom-in")
        page.click("#zoom-in")
        page.wait_for_function("() => [...document.querySelectorAll('.dz-tile.loaded')].some(t => t.dataset.level === '10')")


def test_question_streams_steps_and_draws_the_evidence(browser: Any, server: str, mosaic: Mosaic, artifacts: Path) -> None:
    with Page(browser, server) as page:
        result = ask(page, QUESTION)
        assert page.locator(".steps li").count() >= 4  # prepare, model, search, ..., answer
        assert "search_patches" in page.inner_text(".steps")
        regions = {i: e for i, e in result["evidence"].items() if e.get("bbox")}
        cited = [i for i in result["cited"] if i in regions]
        assert cited, "the answer cites no region"
        boxes = drawn_boxes(page)
        assert set(boxes) == set(regions)
        for eid, ev in regions.items():
            assert boxes[eid]["data"] == ev["bbox"] and boxes[eid]["cited"] == (eid in cited)
            assert boxes[eid]["visible"], f"box {eid} is hidden under something else"
            assert max(abs(s - d) for s, d in zip(boxes[eid]["screen"], ev["bbox"])) < 1.0, eid
        page.screenshot(path=str(artifacts / "answer-tiny-encoder.png"))

        page.click(f".chip[data-evidence-id='{cited[0]}']")
        page.wait_for_function("() => !window.rsrag.viewer.animation")
        page.wait_for_function("() => document.getElementById('details-crop').naturalWidth > 0")
        assert cited[0] in page.inner_text("#details-title") and "confidence" in page.inner_text("#details-table")
        x0, y0, x1, y1 = regions[cited[0]]["bbox"]
        centre = page.evaluate("() => [window.rsrag.viewer.cx, window.rsrag.viewer.cy]")
        assert centre == pytest.approx([(x0 + x1) / 2, (y0 + y1) / 2], abs=1)  # flew to the region
        assert page.locator(f".dz-box.selected[data-evidence-id='{cited[0]}']").count() == 1
        page.screenshot(path=str(artifacts / "evidence-selected.png"))

        page.click("#trace-button")
        page.wait_for_selector(".trace-msg")
        trace = page.inner_text("#trace-panel")
        assert "search_patches" in trace and QUESTION in trace and "streamed steps" in trace


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
        page.wait_for_selector(".dz-tile.loaded")
        for url in ["/static/..%2F..%2Fpyproject.toml", "/api/images/..%2F..%2Fetc%2Fpasswd/tiles/0/0_0.jpg"]:
            assert page.request.get(server + url).status == 404
        refused = page.request.post(server + "/api/ask", data={"image": "/etc/passwd", "question": "hi"})
        assert refused.status == 404 and "no image with id" in refused.json()["error"]


def test_planted_target_is_the_best_cited_box(browser: Any, mosaic: Mosaic, artifacts: Path,
                                              tmp_path: Path) -> None:
    from rsrag.tools.encoders import load_encoder
    from rsrag.tools.errors import RsragError

    try:
        load_encoder()
    except RsragError as exc:
        pytest.skip(f"retrieval quality needs the project's default encoder, which cannot load yet: {exc}")
    with tiny_analyst(tmp_path, encoder=None) as analyst, running(create_app(analyst, [mosaic.path])) as url:
        with Page(browser, url) as page:
            result = ask(page, QUESTION)
            page.screenshot(path=str(artifacts / "answer-default-encoder.png"))
            boxes = drawn_boxes(page)
            ranked = [(i, round(iou(boxes[i]["screen"], mosaic.target_box), 2)) for i in result["cited"] if i in boxes]
            assert ranked and ranked[0][1] >= 0.5, f"planted airport at {mosaic.target_box}; cited boxes (id, IoU): {ranked}"
            assert boxes[ranked[0][0]]["cited"] and boxes[ranked[0][0]]["visible"]
    shutil.copy(mosaic.path, artifacts / "mosaic.tif")
