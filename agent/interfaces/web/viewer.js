/* rsrag scene viewer: OpenSeadragon over the server's deep-zoom tiles, with the answer's sites drawn on top.
 *
 * OpenSeadragon (npm package, copied into the package's static folder by `make web`) does the deep-zoom work
 * analysts know: tiles, drag, wheel and keyboard pan/zoom (arrows or WASD pan, + and - zoom by 1.6x, 0 fits), the
 * minimap (its navigator). This file adds what is rsrag's: the tile source matching
 * rsrag.agent.interfaces.web.tiles.Pyramid (level max_level is full resolution, each level below halves it,
 * 256 px tiles), refitting on resize when the whole image was shown, a scale bar (ground distance where the
 * image is georeferenced, full-resolution pixels otherwise), and an overlay of boxes in full-resolution
 * pixel coordinates [x0, y0, x1, y1] with numbered markers placed so that no two markers overlap.
 *
 * Boxes are drawn largest first, so a smaller box inside a larger one stays reachable; the selected box is
 * drawn last (on top). A click on the image selects the topmost box (or marker) under the pointer.
 */
"use strict";

const MARKER_W = 24;
const MARKER_H = 18;
const MARKER_GAP = 3;
const SCALEBAR_PX = 110;
const KEY_ZOOM = 1.6;
const EARTH_RADIUS_M = 6371008.8;

class SceneViewer {
  /**
   * @param {HTMLElement} container  the element the viewer fills (position: relative or absolute).
   * @param {{onMove?: Function, onSelect?: Function, onEscape?: Function, onView?: Function}} hooks
   */
  constructor(container, hooks = {}) {
    if (!window.OpenSeadragon) {
      throw new Error("the viewer library (OpenSeadragon) is missing from the package: run `make web` "
        + "(npm ci; it copies the library into agent/interfaces/web/static) and restart rsrag serve");
    }
    this.container = container;
    this.hooks = hooks;
    this.image = null;
    this.boxes = [];
    this.animating = false;
    this.fitted = true;
    this.tilesLoaded = 0;
    this.placed = [];
    this._refit = false;
    this._resizing = false;
    this.osd = window.OpenSeadragon({
      element: container,
      drawer: "canvas",
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: "TOP_RIGHT",
      navigatorSizeRatio: 0.16,
      navigatorAutoFade: false,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
      gestureSettingsTouch: { clickToZoom: false, dblClickToZoom: true },
      visibilityRatio: 0.25,
      minZoomImageRatio: 0.5,
      maxZoomPixelRatio: 16,
      zoomPerScroll: 1.25,
      animationTime: 0.5,
      imageLoaderLimit: 6,
      crossOriginPolicy: false,
      keyboardNavEnabled: true,
      pixelsPerArrowPress: 100,
    });
    this.layer = document.createElement("div");
    this.layer.className = "sv-overlay";
    this.osd.canvas.appendChild(this.layer);
    this.scalebar = document.createElement("div");
    this.scalebar.className = "sv-scalebar";
    this.scalebar.innerHTML = '<div class="sv-scalebar-bar"></div><span class="sv-scalebar-text"></span>';
    this.scalebar.hidden = true;
    container.appendChild(this.scalebar);
    this._bind();
  }

  _bind() {
    const osd = this.osd;
    osd.addHandler("viewport-change", () => {
      if (this._refit) {  // the container was resized while the whole image was shown: fit it again
        this._refit = false;
        osd.viewport.goHome(true);
      }
      if (!this._resizing) this.fitted = this._atHome();
      this._resizing = false;
      this.render();
    });
    osd.addHandler("resize", () => {
      this._refit = this.fitted;
      this._resizing = true;
    });
    osd.addHandler("animation-start", () => { this.animating = true; });
    osd.addHandler("animation-finish", () => { this.animating = false; this.render(); });
    osd.addHandler("tile-loaded", () => { this.tilesLoaded += 1; });
    osd.addHandler("open", () => { this.fitted = true; this.render(); });
    osd.addHandler("canvas-click", (ev) => {
      if (!ev.quick) return;
      const hit = this.boxAt(ev.position.x, ev.position.y);
      if (hit && this.hooks.onSelect) this.hooks.onSelect(hit.id);
    });
    osd.addHandler("canvas-key", (ev) => {
      const e = ev.originalEvent;
      if (e.key === "+" || e.key === "=" || e.code === "NumpadAdd") {  // one press, one clear step (OSD's is 10%)
        this.zoomBy(KEY_ZOOM);
        ev.preventDefaultAction = true;
      } else if (e.key === "-" || e.key === "_" || e.code === "NumpadSubtract") {
        this.zoomBy(1 / KEY_ZOOM);
        ev.preventDefaultAction = true;
      } else if (e.key === "Escape") {
        if (this.hooks.onEscape) this.hooks.onEscape();
        ev.preventDefaultAction = true;
      } else if (e.code === "KeyR" || e.code === "KeyF" || e.code === "KeyJ" || e.code === "KeyK") {
        ev.preventDefaultAction = true;  // no rotation, flip or paging: boxes are drawn north-up
      }
    });
    this.container.addEventListener("pointermove", (ev) => {
      if (!this.hooks.onMove || !this.image) return;
      const rect = this.container.getBoundingClientRect();
      this.hooks.onMove(this.screenToImage(ev.clientX - rect.left, ev.clientY - rect.top));
    });
    this.container.addEventListener("pointerleave", () => { if (this.hooks.onMove) this.hooks.onMove(null); });
  }

  /** Show an image: {id, width, height, tile_size, max_level, transform, lonlat_bounds} from /api/images. */
  open(image) {
    this.image = image;
    this.boxes = [];
    this.tilesLoaded = 0;
    this.fitted = true;
    this.metresPerPixel = metresPerPixel(image);
    const id = encodeURIComponent(image.id);
    this.osd.open({
      width: image.width,
      height: image.height,
      tileSize: image.tile_size,
      tileOverlap: 0,
      minLevel: 0,
      maxLevel: image.max_level,
      getTileUrl: (level, col, row) => `/api/images/${id}/tiles/${level}/${col}_${row}.jpg`,
    });
  }

  get width() { return this.container.clientWidth; }
  get height() { return this.container.clientHeight; }

  /** Screen pixels per full-resolution image pixel at the current (animated) view. */
  get scale() {
    const vp = this.osd.viewport;
    return this.image && this.osd.world.getItemCount() ? vp.viewportToImageZoom(vp.getZoom(true)) : 1;
  }

  /** The image point at the centre of the view (full-resolution pixels). */
  get center() {
    return this.screenToImage(this.width / 2, this.height / 2);
  }

  /** Whether the first tiles of the open image have been drawn. */
  get ready() {
    return !!this.image && this.osd.world.getItemCount() > 0 && this.tilesLoaded > 0;
  }

  imageToScreen(x, y) {
    const p = this.osd.viewport.imageToViewerElementCoordinates(new window.OpenSeadragon.Point(x, y));
    return { x: p.x, y: p.y };
  }

  screenToImage(sx, sy) {
    const p = this.osd.viewport.viewerElementToImageCoordinates(new window.OpenSeadragon.Point(sx, sy));
    return { x: p.x, y: p.y };
  }

  _atHome() {
    const vp = this.osd.viewport;
    if (!this.osd.world.getItemCount()) return true;
    const home = vp.getHomeZoom(), zoom = vp.getZoom(false);
    const c = vp.getCenter(false), h = vp.getHomeBounds().getCenter();
    return Math.abs(zoom / home - 1) < 1e-3 && Math.hypot(c.x - h.x, c.y - h.y) * zoom < 1e-3;
  }

  /** Zoom by factor f about the centre of the view. */
  zoomBy(f) {
    if (!this.image) return;
    this.osd.viewport.zoomBy(f);
    this.osd.viewport.applyConstraints();
  }

  /** Show the whole image. */
  fit() {
    if (this.image) this.osd.viewport.goHome();
  }

  /** Animate the view to frame a pixel box [x0, y0, x1, y1] (the box fills about half of the view). */
  flyTo(box) {
    if (!this.image) return Promise.resolve();
    const [x0, y0, x1, y1] = box;
    const w = Math.max(1, x1 - x0), h = Math.max(1, y1 - y0);
    const rect = this.osd.viewport.imageToViewportRectangle(x0 - w / 2, y0 - h / 2, w * 2, h * 2);
    return new Promise((resolve) => {
      this.osd.addOnceHandler("animation-finish", () => resolve());
      this.osd.viewport.fitBoundsWithConstraints(rect);
      if (!this.osd.viewport.getZoom(true)) resolve();
    });
  }

  /**
   * Boxes to draw: [{id, bbox: [x0, y0, x1, y1], number?, kind: "site"|"member"|"candidate", finding?, path?,
   * cited?, selected?, title?}]. Only boxes with a number get a marker.
   */
  setBoxes(boxes) {
    this.boxes = boxes;
    this.render();
  }

  // --- drawing -----------------------------------------------------------------------------------------

  render() {
    this._renderBoxes();
    this._renderScalebar();
    if (this.hooks.onView) this.hooks.onView(this);
  }

  _renderBoxes() {
    const layer = this.layer;
    if (!this.image || !this.osd.world.getItemCount()) { layer.replaceChildren(); this.placed = []; return; }
    const W = this.width, H = this.height;
    const area = (b) => (b.bbox[2] - b.bbox[0]) * (b.bbox[3] - b.bbox[1]);
    const rank = { member: 0, candidate: 1, site: 2 };
    const order = [...this.boxes].sort((a, b) => (!!a.selected - !!b.selected) || (rank[a.kind] || 0) - (rank[b.kind] || 0)
      || area(b) - area(a));
    const nodes = [];
    const drawn = [];
    for (const box of order) {
      const p = this.imageToScreen(box.bbox[0], box.bbox[1]), q = this.imageToScreen(box.bbox[2], box.bbox[3]);
      const rect = { left: p.x, top: p.y, right: q.x, bottom: q.y };
      const el = document.createElement("div");
      el.className = ["sv-box", box.kind || "site", box.finding ? `finding-${box.finding}` : "", box.path ? `path-${box.path}` : "",
        box.cited ? "cited" : "", box.selected ? "selected" : ""].filter(Boolean).join(" ");
      el.dataset.boxId = box.id;
      el.dataset.kind = box.kind || "site";
      if (box.finding) el.dataset.finding = box.finding;
      [el.dataset.x0, el.dataset.y0, el.dataset.x1, el.dataset.y1] = box.bbox.map(String);
      el.title = box.title || box.id;
      Object.assign(el.style, { left: `${rect.left}px`, top: `${rect.top}px`, width: `${rect.right - rect.left}px`,
        height: `${rect.bottom - rect.top}px` });
      const visible = rect.right > 0 && rect.bottom > 0 && rect.left < W && rect.top < H;
      el.hidden = !visible;
      nodes.push(el);
      drawn.push({ box, rect, visible });
    }
    this.drawn = drawn;
    this.placed = this._placeMarkers(drawn.filter((d) => d.visible && d.box.number != null), W, H);
    for (const m of this.placed) {
      const el = document.createElement("div");
      el.className = ["sv-marker", m.box.finding ? `finding-${m.box.finding}` : "", m.box.selected ? "selected" : ""]
        .filter(Boolean).join(" ");
      el.dataset.boxId = m.box.id;
      el.textContent = String(m.box.number);
      el.title = m.box.title || m.box.id;
      Object.assign(el.style, { left: `${m.left}px`, top: `${m.top}px`, width: `${MARKER_W}px`, height: `${MARKER_H}px` });
      nodes.push(el);
    }
    layer.replaceChildren(...nodes);
  }

  /** Place one marker per box, never overlapping another marker: beside a corner of its box where free. */
  _placeMarkers(items, W, H) {
    const placed = [];
    const free = (l, t) => placed.every((m) => l + MARKER_W + 1 <= m.left || m.left + MARKER_W + 1 <= l
      || t + MARKER_H + 1 <= m.top || m.top + MARKER_H + 1 <= t);
    const inside = (l, t) => l >= 0 && t >= 0 && l + MARKER_W <= W && t + MARKER_H <= H;
    const priority = [...items].sort((a, b) => (!!b.box.selected - !!a.box.selected) || a.box.number - b.box.number);
    for (const item of priority) {
      const r = item.rect, g = MARKER_GAP;
      const corners = [
        [r.left, r.top - MARKER_H - g], [r.right - MARKER_W, r.top - MARKER_H - g],
        [r.left, r.bottom + g], [r.right - MARKER_W, r.bottom + g],
        [r.left - MARKER_W - g, r.top], [r.right + g, r.top],
        [r.left - MARKER_W - g, r.bottom - MARKER_H], [r.right + g, r.bottom - MARKER_H],
        [r.left + g, r.top + g],
      ];
      let spot = corners.find(([l, t]) => inside(l, t) && free(l, t)) || corners.find(([l, t]) => free(l, t));
      for (let k = 1; !spot; k++) {  // a column of slots above the box, then below it: one is always free
        const up = [r.left, r.top - MARKER_H - g - k * (MARKER_H + g)];
        const down = [r.left, r.bottom + g + k * (MARKER_H + g)];
        spot = [up, down].find(([l, t]) => inside(l, t) && free(l, t)) || (k > 2 * placed.length + 2 && free(...up) ? up : null);
      }
      placed.push({ box: item.box, left: spot[0], top: spot[1] });
    }
    return placed;
  }

  /** The topmost box (or marker) at a point of the view, or null. */
  boxAt(sx, sy) {
    for (const m of [...this.placed].reverse()) {
      if (sx >= m.left && sx <= m.left + MARKER_W && sy >= m.top && sy <= m.top + MARKER_H) return m.box;
    }
    for (const d of [...(this.drawn || [])].reverse()) {
      const r = d.rect;
      if (d.visible && d.box.kind !== "member" && sx >= r.left && sx <= r.right && sy >= r.top && sy <= r.bottom) return d.box;
    }
    return null;
  }

  _renderScalebar() {
    const bar = this.scalebar;
    if (!this.image || !this.osd.world.getItemCount()) { bar.hidden = true; return; }
    const perScreenPx = (this.metresPerPixel || 1) / this.scale;  // metres (or image pixels) per screen pixel
    const raw = perScreenPx * SCALEBAR_PX;
    const step = Math.pow(10, Math.floor(Math.log10(raw)));
    const nice = [5, 2, 1].map((m) => m * step).find((v) => v <= raw) || step;
    bar.hidden = false;
    bar.firstChild.style.width = `${Math.round(nice / perScreenPx)}px`;
    bar.lastChild.textContent = this.metresPerPixel ? formatMetres(nice) : `${formatNumber(nice)} px`;
    bar.dataset.units = this.metresPerPixel ? "m" : "px";
    bar.dataset.length = String(nice);
  }
}

/** Ground metres per full-resolution pixel from a georeferenced image's lon/lat footprint, else null. */
function metresPerPixel(image) {
  if (!image.transform || !image.lonlat_bounds) return null;
  const [west, south, east, north] = image.lonlat_bounds;
  const rad = Math.PI / 180;
  const mid = (south + north) / 2 * rad;
  const widthM = EARTH_RADIUS_M * Math.cos(mid) * (east - west) * rad;
  const heightM = EARTH_RADIUS_M * (north - south) * rad;
  if (!(widthM > 0 && heightM > 0)) return null;
  return Math.sqrt((widthM / image.width) * (heightM / image.height));
}

function formatNumber(v) {
  return v >= 1 ? v.toLocaleString("en-US", { maximumFractionDigits: 0 }) : String(Number(v.toPrecision(1)));
}

function formatMetres(m) {
  return m >= 1000 ? `${formatNumber(m / 1000)} km` : m >= 1 ? `${formatNumber(m)} m` : `${formatNumber(m * 100)} cm`;
}

/** Map coordinates of a full-resolution pixel through a rasterio-order geotransform [a, b, c, d, e, f]. */
function pixelToMap(transform, x, y) {
  const [a, b, c, d, e, f] = transform;
  return { x: a * x + b * y + c, y: d * x + e * y + f };
}

window.SceneViewer = SceneViewer;
window.pixelToMap = pixelToMap;
