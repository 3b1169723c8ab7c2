/* rsrag deep-zoom viewer: positioned <img> tiles over an image's pixel space, with pan, zoom and boxes.
 *
 * The pyramid matches rsrag.agent.interfaces.web.tiles.Pyramid: level max_level is full resolution, each level below
 * halves it; tile (level, col, row) covers tile_size level pixels. The view is a scale (screen pixels per
 * full-resolution pixel) and the image point shown at the centre of the viewport. Boxes are given in
 * full-resolution pixel coordinates [x0, y0, x1, y1] and drawn as positioned <div>s.
 */
"use strict";

class DeepZoomViewer {
  /**
   * @param {HTMLElement} container  the element the viewer fills (position: relative).
   * @param {{onMove?: Function, onBoxClick?: Function, onView?: Function}} hooks
   */
  constructor(container, hooks = {}) {
    this.container = container;
    this.hooks = hooks;
    this.image = null;
    this.scale = 1;
    this.cx = 0;
    this.cy = 0;
    this.boxes = [];
    this.tiles = new Map();
    this.animation = null;
    this.tileLayer = this._layer("dz-tiles");
    this.boxLayer = this._layer("dz-boxes");
    this._bindInput();
    new ResizeObserver(() => this.render()).observe(container);
  }

  _layer(cls) {
    const div = document.createElement("div");
    div.className = cls;
    this.container.appendChild(div);
    return div;
  }

  /** Show an image: {id, width, height, tile_size, max_level, ...} as returned by /api/images. */
  open(image) {
    this.image = image;
    for (const img of this.tiles.values()) img.remove();
    this.tiles.clear();
    this.boxes = [];
    this.fit();
  }

  get width() { return this.container.clientWidth; }
  get height() { return this.container.clientHeight; }

  /** Scale at which the whole image fits the viewport. */
  fitScale() {
    if (!this.image) return 1;
    return Math.min(this.width / this.image.width, this.height / this.image.height) * 0.95;
  }

  fit() {
    if (!this.image) return;
    this.scale = this.fitScale();
    this.cx = this.image.width / 2;
    this.cy = this.image.height / 2;
    this.render();
  }

  imageToScreen(x, y) {
    return { x: (x - this.cx) * this.scale + this.width / 2, y: (y - this.cy) * this.scale + this.height / 2 };
  }

  screenToImage(sx, sy) {
    return { x: (sx - this.width / 2) / this.scale + this.cx, y: (sy - this.height / 2) / this.scale + this.cy };
  }

  _clampScale(scale) {
    const min = Math.min(this.fitScale(), 1) / 4;
    return Math.max(min, Math.min(scale, 16));
  }

  /** Zoom by factor f keeping the image point under screen point (sx, sy) fixed. */
  zoomBy(f, sx = this.width / 2, sy = this.height / 2) {
    if (!this.image) return;
    const before = this.screenToImage(sx, sy);
    this.scale = this._clampScale(this.scale * f);
    const after = this.screenToImage(sx, sy);
    this.cx += before.x - after.x;
    this.cy += before.y - after.y;
    this.render();
  }

  panBy(dx, dy) {
    this.cx -= dx / this.scale;
    this.cy -= dy / this.scale;
    this.render();
  }

  /** Animate the view to frame a pixel box [x0, y0, x1, y1]; resolves when the view arrives. */
  flyTo(box, ms = 450) {
    if (!this.image) return Promise.resolve();
    const [x0, y0, x1, y1] = box;
    const target = {
      scale: this._clampScale(Math.min(this.width / ((x1 - x0) * 2), this.height / ((y1 - y0) * 2))),
      cx: (x0 + x1) / 2,
      cy: (y0 + y1) / 2,
    };
    const start = { scale: this.scale, cx: this.cx, cy: this.cy };
    if (this.animation) cancelAnimationFrame(this.animation.frame);
    return new Promise((resolve) => {
      const t0 = performance.now();
      const step = (now) => {
        const t = ms > 0 ? Math.min(1, (now - t0) / ms) : 1;
        const e = t < 0.5 ? 2 * t * t : 1 - Math.pow(-2 * t + 2, 2) / 2;
        this.scale = Math.exp(Math.log(start.scale) + (Math.log(target.scale) - Math.log(start.scale)) * e);
        this.cx = start.cx + (target.cx - start.cx) * e;
        this.cy = start.cy + (target.cy - start.cy) * e;
        this.render();
        if (t < 1) {
          this.animation = { frame: requestAnimationFrame(step) };
        } else {
          this.animation = null;
          resolve();
        }
      };
      this.animation = { frame: requestAnimationFrame(step) };
    });
  }

  /** Boxes to draw: [{id, bbox: [x0, y0, x1, y1], label, cited, selected}]. */
  setBoxes(boxes) {
    this.boxes = boxes;
    this._renderBoxes();
  }

  // --- tiles ---------------------------------------------------------------------------------------

  _levelFor(scale) {
    const im = this.image;
    const drop = Math.floor(Math.log2(1 / scale) + 1e-9);
    return Math.max(0, Math.min(im.max_level, im.max_level - Math.max(0, drop)));
  }

  _baseLevel() {
    const im = this.image;
    const longest = Math.max(im.width, im.height);
    return Math.max(0, im.max_level - Math.ceil(Math.log2(Math.max(1, longest / im.tile_size))));
  }

  /** Full-resolution box and grid of a tile (the same arithmetic as the server's Pyramid.tile). */
  _tileBox(level, col, row) {
    const im = this.image;
    const f = Math.pow(2, im.max_level - level);
    const lw = Math.ceil(im.width / f), lh = Math.ceil(im.height / f);
    const ow = Math.min(im.tile_size, lw - col * im.tile_size);
    const oh = Math.min(im.tile_size, lh - row * im.tile_size);
    const x0 = col * im.tile_size * f, y0 = row * im.tile_size * f;
    return [x0, y0, Math.min(im.width, x0 + ow * f), Math.min(im.height, y0 + oh * f)];
  }

  _visibleTiles(level) {
    const im = this.image;
    const f = Math.pow(2, im.max_level - level);
    const span = im.tile_size * f;
    const cols = Math.ceil(Math.ceil(im.width / f) / im.tile_size);
    const rows = Math.ceil(Math.ceil(im.height / f) / im.tile_size);
    const a = this.screenToImage(0, 0), b = this.screenToImage(this.width, this.height);
    const c0 = Math.max(0, Math.floor(a.x / span)), c1 = Math.min(cols - 1, Math.floor(b.x / span));
    const r0 = Math.max(0, Math.floor(a.y / span)), r1 = Math.min(rows - 1, Math.floor(b.y / span));
    const out = [];
    for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) out.push([level, c, r]);
    return out;
  }

  render() {
    if (!this.image || !this.width) return;
    const base = this._baseLevel();
    const level = this._levelFor(this.scale);
    const wanted = this._visibleTiles(base);
    if (level > base) wanted.push(...this._visibleTiles(level));
    const keep = new Set();
    for (const [l, c, r] of wanted) {
      const key = `${l}/${c}/${r}`;
      keep.add(key);
      let img = this.tiles.get(key);
      if (!img) {
        img = document.createElement("img");
        img.className = "dz-tile";
        img.draggable = false;
        img.alt = "";
        img.dataset.level = l;
        img.style.zIndex = String(l);
        img.onload = () => img.classList.add("loaded");
        img.src = `/api/images/${encodeURIComponent(this.image.id)}/tiles/${l}/${c}_${r}.jpg`;
        this.tileLayer.appendChild(img);
        this.tiles.set(key, img);
      }
      this._place(img, this._tileBox(l, c, r));
    }
    for (const [key, img] of this.tiles) {
      if (!keep.has(key)) {
        img.remove();
        this.tiles.delete(key);
      }
    }
    this._renderBoxes();
    if (this.hooks.onView) this.hooks.onView(this);
  }

  _place(el, [x0, y0, x1, y1]) {
    const p = this.imageToScreen(x0, y0), q = this.imageToScreen(x1, y1);
    el.style.left = `${p.x}px`;
    el.style.top = `${p.y}px`;
    el.style.width = `${q.x - p.x}px`;
    el.style.height = `${q.y - p.y}px`;
  }

  _renderBoxes() {
    const layer = this.boxLayer;
    const present = new Map([...layer.children].map((el) => [el.dataset.evidenceId, el]));
    for (const box of this.boxes) {
      let el = present.get(box.id);
      present.delete(box.id);
      if (!el) {
        el = document.createElement("div");
        el.className = "dz-box";
        el.dataset.evidenceId = box.id;
        const label = document.createElement("span");
        label.className = "dz-label";
        el.appendChild(label);
        el.addEventListener("pointerdown", (ev) => ev.stopPropagation());
        el.addEventListener("click", (ev) => {
          ev.stopPropagation();
          if (this.hooks.onBoxClick) this.hooks.onBoxClick(box.id);
        });
        layer.appendChild(el);
      }
      [el.dataset.x0, el.dataset.y0, el.dataset.x1, el.dataset.y1] = box.bbox.map(String);
      el.dataset.cited = box.cited ? "true" : "false";
      el.classList.toggle("cited", !!box.cited);
      el.classList.toggle("selected", !!box.selected);
      el.firstChild.textContent = box.label || box.id;
      el.title = box.title || box.id;
      this._place(el, box.bbox);
    }
    for (const el of present.values()) el.remove();
  }

  // --- input ---------------------------------------------------------------------------------------

  _bindInput() {
    const el = this.container;
    let drag = null;
    el.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      drag = { x: ev.clientX, y: ev.clientY };
      el.setPointerCapture(ev.pointerId);
      el.classList.add("dragging");
    });
    el.addEventListener("pointermove", (ev) => {
      const rect = el.getBoundingClientRect();
      if (this.hooks.onMove && this.image) this.hooks.onMove(this.screenToImage(ev.clientX - rect.left, ev.clientY - rect.top));
      if (!drag) return;
      this.panBy(ev.clientX - drag.x, ev.clientY - drag.y);
      drag = { x: ev.clientX, y: ev.clientY };
    });
    const end = () => { drag = null; el.classList.remove("dragging"); };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
    el.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const rect = el.getBoundingClientRect();
      this.zoomBy(Math.pow(1.0015, -ev.deltaY), ev.clientX - rect.left, ev.clientY - rect.top);
    }, { passive: false });
    el.addEventListener("dblclick", (ev) => {
      const rect = el.getBoundingClientRect();
      this.zoomBy(ev.shiftKey ? 0.5 : 2, ev.clientX - rect.left, ev.clientY - rect.top);
    });
  }
}

/** Map coordinates of a full-resolution pixel through a rasterio-order geotransform [a, b, c, d, e, f]. */
function pixelToMap(transform, x, y) {
  const [a, b, c, d, e, f] = transform;
  return { x: a * x + b * y + c, y: d * x + e * y + f };
}

window.DeepZoomViewer = DeepZoomViewer;
window.pixelToMap = pixelToMap;
