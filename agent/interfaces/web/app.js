/* rsrag analyst page: image list and upload, chat streaming the agent's steps, the answer's sites on the
 * image, site details (crop, scores, member windows), knowledge citations and the thread's trace.
 *
 * One evidence model on screen: an answer's sites (overlapping or touching windows grouped into one place)
 * are drawn once each, numbered, coloured by finding, with their member windows on demand; the chat shows
 * the same finding, sites and confidences as the answer's JSON. Text from the server is always inserted as
 * text, never as HTML. */
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  images: [], image: null, thread: null, evidence: new Map(), answers: [], shown: null, candidates: [],
  selected: null, showWindows: false, busy: false, catalog: null, scenes: [], cited: new Set(),
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function status(text) { $("status").textContent = text; $("status").title = text; }
function newThreadId() { return "web-" + Math.random().toString(36).slice(2, 8) + Date.now().toString(36).slice(-4); }
function fmt(v, digits = 2) { return typeof v === "number" ? v.toFixed(digits) : String(v); }
const FINDING_TEXT = { found: "found", not_found: "not found", uncertain: "uncertain" };

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

let viewer = null;
try {
  viewer = new SceneViewer($("viewer"), {
    onMove: (p) => showCoords(p),
    onSelect: (id) => selectSite(id),
    onEscape: () => closeDetails(),
  });
} catch (err) {
  $("viewer").append(el("div", { class: "error viewer-error" }, err.message));
}

function showCoords(p) {
  const im = state.image;
  if (!p || !im || p.x < 0 || p.y < 0 || p.x > im.width || p.y > im.height) { $("coords").textContent = ""; return; }
  let text = `px ${Math.floor(p.x)}, ${Math.floor(p.y)}`;
  if (im.transform) {
    const m = pixelToMap(im.transform, p.x, p.y);
    text += `  |  ${m.x.toFixed(2)}, ${m.y.toFixed(2)} ${im.crs && im.crs.length < 40 ? im.crs : "(map)"}`;
  }
  $("coords").textContent = text;
}

// --- images ---------------------------------------------------------------------------------------------

async function loadImages(selectId) {
  const body = await fetchJson("/api/images");
  state.images = body.images;
  const select = $("image-select");
  select.replaceChildren(...state.images.map((im) => el("option", { value: im.id }, `${im.name} (${im.width}×${im.height})`)));
  const wanted = selectId || new URLSearchParams(location.search).get("image") || (state.images[0] || {}).id;
  if (wanted) openImage(wanted);
  else status("no image registered: upload one");
}

/** Open a registered image; `keepThread`: stay on the conversation (a scene chosen from a catalog answer),
 * so the answers' sites in that scene are drawn on it. */
function openImage(id, keepThread = false) {
  const image = state.images.find((im) => im.id === id);
  if (!image) { status(`unknown image ${id}`); return; }
  state.image = image;
  $("image-select").value = id;
  if (viewer) viewer.open(image);
  if (keepThread && state.thread) {
    state.answers.forEach((a, i) => { a.sites = answerSites(a.answer, i); });
    updateCandidates();
    state.selected = null;
    drawBoxes();
  } else {
    newThread();
  }
  markScenes();
  status(imageSummary(image));
}

// --- the catalog's scenes: a list and an overview map of their lon/lat footprints -------------------------

async function loadCatalog() {
  const body = await fetchJson("/api/catalog");
  state.catalog = body.name;
  state.scenes = body.scenes || [];
  $("scenes-pane").hidden = !state.catalog;
  $("across-label").hidden = !state.catalog;
  if (!state.catalog) return;
  $("across").checked = true;
  $("scenes-title").textContent = `Catalog ${state.catalog}`;
  $("scenes-note").textContent = `${state.scenes.length} scene(s); choose one to open it`;
  drawSceneMap();
  $("scene-list").replaceChildren(...state.scenes.map((s) => el("li", {
    "data-scene-id": s.id, title: s.source, onclick: () => chooseScene(s),
  }, `${s.id}${s.datetime ? " · " + s.datetime.slice(0, 10) : ""}${s.bbox ? "" : " · not georeferenced"}`)));
  markScenes();
}

function ringsOf(scene) {
  const g = scene.footprint;
  if (g && g.type === "Polygon") return [g.coordinates[0]];
  if (g && g.type === "MultiPolygon") return g.coordinates.map((p) => p[0]);
  if (scene.bbox) { const [w, s, e, n] = scene.bbox; return [[[w, s], [e, s], [e, n], [w, n], [w, s]]]; }
  return [];
}

/** The footprints on a plain SVG map (equirectangular, shrunk in longitude by cos(latitude); no tiles). */
function drawSceneMap() {
  const svg = $("scene-map");
  const NS = "http://www.w3.org/2000/svg";
  const rings = state.scenes.flatMap((s) => ringsOf(s).map((r) => ({ scene: s, ring: r })));
  svg.replaceChildren();
  if (!rings.length) return;
  const pts = rings.flatMap((r) => r.ring);
  let [w, s, e, n] = [Math.min(...pts.map((p) => p[0])), Math.min(...pts.map((p) => p[1])),
    Math.max(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[1]))];
  const kx = Math.cos(((s + n) / 2) * Math.PI / 180) || 1;
  const pad = 0.05 * Math.max((e - w) * kx, n - s, 1e-6);
  const width = (e - w) * kx + 2 * pad, height = n - s + 2 * pad;
  const W = 400, H = 150, scale = Math.min(W / width, H / height);
  const x0 = (W - width * scale) / 2, y0 = (H - height * scale) / 2;
  const project = ([lon, lat]) => [x0 + ((lon - w) * kx + pad) * scale, y0 + (n - lat + pad) * scale];
  for (const { scene, ring } of rings) {
    const poly = document.createElementNS(NS, "polygon");
    poly.setAttribute("points", ring.map((p) => project(p).map((v) => v.toFixed(1)).join(",")).join(" "));
    poly.setAttribute("class", "footprint");
    poly.setAttribute("data-scene-id", scene.id);
    const title = document.createElementNS(NS, "title");
    title.textContent = `${scene.id}: ${scene.source}`;
    poly.append(title);
    poly.addEventListener("click", () => chooseScene(scene));
    svg.append(poly);
    const [cx, cy] = project([ring.reduce((a, p) => a + p[0], 0) / ring.length, ring.reduce((a, p) => a + p[1], 0) / ring.length]);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", cx.toFixed(1));
    label.setAttribute("y", cy.toFixed(1));
    label.setAttribute("text-anchor", "middle");
    label.textContent = scene.id;
    svg.append(label);
  }
}

function chooseScene(scene) {
  if (!scene.image) { status(`scene ${scene.id} is not served here`); return; }
  openImage(scene.image, true);
}

function markScenes() {
  const current = state.image ? state.image.fingerprint : null;
  for (const node of document.querySelectorAll("#scene-map .footprint, #scene-list li")) {
    const scene = state.scenes.find((s) => s.id === node.dataset.sceneId);
    if (!scene) continue;
    node.classList.toggle("current", scene.fingerprint === current);
    node.classList.toggle("cited", state.cited.has(scene.fingerprint));
  }
}

function imageSummary(image) {
  const crs = image.crs ? ", " + (image.crs.length < 40 ? image.crs : "georeferenced") : "";
  const where = image.lonlat_bounds ? ` — lon/lat ${image.lonlat_bounds.map((v) => v.toFixed(4)).join(", ")}` : "";
  return `${image.name}: ${image.width}×${image.height} px${crs}${where}`;
}

async function upload(file) {
  status(`uploading ${file.name} (${(file.size / 1048576).toFixed(1)} MiB)…`);
  try {
    const entry = await fetchJson(`/api/images?name=${encodeURIComponent(file.name)}`, {
      method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
    });
    await loadImages(entry.id);
  } catch (err) {
    status(`upload failed: ${err.message}`);
  }
}

// --- sites ----------------------------------------------------------------------------------------------

function touches(a, b) {
  return Math.max(a[0], b[0]) <= Math.min(a[2], b[2]) && Math.max(a[1], b[1]) <= Math.min(a[3], b[3]);
}

function contains(outer, inner) {
  return outer[0] <= inner[0] && outer[1] <= inner[1] && outer[2] >= inner[2] && outer[3] >= inner[3];
}

const conf = (e) => (typeof e.confidence === "number" ? e.confidence : -1);

/** The windows a record stands for: a site's member boxes, else its own box. */
function windowsOf(e) {
  return Array.isArray(e.members) && e.members.length ? e.members : [e.bbox];
}

function place(records) {
  const found = records.filter((e) => e.path !== "zoom").sort((a, b) => conf(b) - conf(a));
  const best = found[0] || records[0];
  const bbox = records.reduce((u, e) => [Math.min(u[0], e.bbox[0]), Math.min(u[1], e.bbox[1]),
    Math.max(u[2], e.bbox[2]), Math.max(u[3], e.bbox[3])], best.bbox.slice());
  const windows = [];
  for (const e of found.length ? found : records) {
    for (const w of windowsOf(e)) if (!windows.some((o) => o.join() === w.join())) windows.push(w);
  }
  return { bbox, records, best, windows };
}

/** The places of an answer: each cited site once (with the zoom records that looked at it), best first. */
function answerPlaces(answer) {
  const regions = (answer.evidence || []).filter((e) => e.kind === "region" && e.bbox
    && (!state.image || !e.scene || e.scene === state.image.fingerprint));
  const groups = [];
  for (const e of regions.filter((r) => r.path !== "zoom")) {
    const same = groups.find((g) => g[0].bbox.join() === e.bbox.join());
    if (same) same.push(e); else groups.push([e]);
  }
  for (const z of regions.filter((r) => r.path === "zoom")) {  // a zoom looks at a place: it is not another one
    const home = groups.find((g) => g[0].bbox.join() === z.bbox.join()) || groups.find((g) => contains(g[0].bbox, z.bbox));
    if (home) home.push(z); else groups.push([z]);
  }
  return groups.map(place).sort((a, b) => conf(b.best) - conf(a.best));
}

/** Streamed evidence of a running question, grouped into candidate places (overlapping or touching). */
function candidatePlaces(records) {
  const items = records.filter((e) => e.bbox);
  const parent = items.map((_, i) => i);
  const find = (i) => { while (parent[i] !== i) i = parent[i] = parent[parent[i]]; return i; };
  for (let i = 0; i < items.length; i++) {
    for (let j = 0; j < i; j++) if (touches(items[i].bbox, items[j].bbox)) parent[find(i)] = find(j);
  }
  const groups = new Map();
  items.forEach((e, i) => { const r = find(i); if (!groups.has(r)) groups.set(r, []); groups.get(r).push(e); });
  return [...groups.values()].map(place).sort((a, b) => conf(b.best) - conf(a.best));
}

/** The finding of the search that produced a site: the answer's per-target finding, else its overall one. */
function siteFinding(answer, best) {
  const findings = answer.findings || {};
  for (const [target, finding] of Object.entries(findings)) {
    if (best.query && target.split(",").map((t) => t.trim()).includes(best.query)) return finding;
  }
  return answer.finding || null;
}

/** An answer's sites as the page draws them (numbered in rank order). */
function answerSites(answer, index) {
  return answerPlaces(answer).map((p, i) => {
    const best = p.best;
    return {
      ...p, id: `A${index + 1}-S${i + 1}`, number: i + 1, kind: "site", finding: siteFinding(answer, best),
      path: best.path, confidence: best.confidence, presence: best.presence, query: best.query,
      map_box: best.map_box, lonlat: best.lonlat,
    };
  });
}

function shownSites() {
  if (state.shown === null) return state.candidates;
  return state.answers[state.shown].sites;
}

function drawBoxes() {
  if (!viewer) return;
  const boxes = [];
  const sites = shownSites();
  for (const s of sites) {
    const candidate = s.kind === "candidate";
    boxes.push({ id: s.id, bbox: s.bbox, number: candidate ? null : s.number, kind: s.kind, finding: candidate ? null : s.finding,
      path: s.path, cited: !candidate, selected: state.selected === s.id, title: siteTitle(s) });
    if ((state.showWindows || state.selected === s.id) && s.windows.length > 1) {
      s.windows.forEach((w, j) => boxes.push({ id: `${s.id}-w${j + 1}`, bbox: w, kind: "member", title: `${s.id} window ${j + 1}` }));
    }
  }
  viewer.setBoxes(boxes);
  $("legend").hidden = !sites.length;
}

function siteTitle(s) {
  const parts = [s.number ? `site ${s.number}` : "candidate", s.finding ? FINDING_TEXT[s.finding] || s.finding : null,
    s.query, typeof s.confidence === "number" ? `confidence ${fmt(s.confidence)}` : null, `${s.windows.length} window(s)`];
  return parts.filter(Boolean).join(" · ");
}

function updateCandidates() {
  const regions = [...state.evidence.values()].filter((e) => e.kind === "region" && e.bbox
    && (!state.image || !e.scene || e.scene === state.image.fingerprint));
  state.candidates = candidatePlaces(regions).map((p, i) => ({ ...p, id: `C${i + 1}`, kind: "candidate",
    path: p.best.path, confidence: p.best.confidence, query: p.best.query }));
}

// --- chat -----------------------------------------------------------------------------------------------

function newThread() {
  state.thread = newThreadId();
  state.cited = new Set();
  state.evidence.clear();
  state.answers = [];
  state.shown = null;
  state.candidates = [];
  state.selected = null;
  $("chat").replaceChildren();
  $("details").hidden = true;
  $("thread-label").textContent = `thread ${state.thread}`;
  drawBoxes();
}

function addEvidence(list) {
  if (!list || !list.length) return;
  for (const ev of list) state.evidence.set(ev.id, ev);
  if (state.busy) {
    updateCandidates();
    state.shown = null;
    drawBoxes();
  }
}

async function ask(question) {
  const across = Boolean(state.catalog && $("across").checked);
  if (state.busy || (!state.image && !across)) return false;
  state.busy = true;
  $("ask-button").disabled = true;
  const started = performance.now();
  const steps = el("ul", { class: "steps" });
  const progress = el("div", { class: "progress", hidden: true });
  const turn = el("div", { class: "turn" }, el("div", { class: "question" }, question), steps, progress);
  $("chat").append(turn);
  let phase = "thinking";
  const tick = () => status(`${phase}… ${Math.round((performance.now() - started) / 1000)} s`);
  tick();
  const timer = setInterval(tick, 1000);
  const ctx = { turn, steps, progress, setPhase: (p) => { phase = p; tick(); } };
  try {
    const response = await fetch("/api/ask", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(across ? { image: null, question, thread: state.thread, catalog: true }
        : { image: state.image.id, question, thread: state.thread }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error || `HTTP ${response.status}`);
    }
    await readLines(response.body, (event) => handleEvent(event, ctx, started));
  } catch (err) {
    turn.append(el("div", { class: "error" }, err.message));
  } finally {
    clearInterval(timer);
    state.busy = false;
    $("ask-button").disabled = false;
    status(state.image ? imageSummary(state.image) : "");
  }
  return true;
}

async function readLines(stream, onEvent) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line) onEvent(JSON.parse(line));
    }
    if (done) break;
  }
}

/** The text of a progress report, from a `progress` event or a step that carries one. */
function progressText(p) {
  if (!p) return null;
  if (typeof p === "string") return p;
  if (p.text) return p.text;
  const done = typeof p.done === "number" ? p.done.toLocaleString("en-US") : null;
  const total = typeof p.total === "number" ? p.total.toLocaleString("en-US") : "?";
  const what = p.what || p.stage || p.kind || "indexing";
  return done !== null ? `${what} ${done} / ${total}${p.unit ? " " + p.unit : ""}` : what;
}

function handleEvent(event, ctx, started) {
  const chat = $("chat");
  if (event.type === "start") {
    ctx.setPhase("thinking");
  } else if (event.type === "progress" || (event.type === "step" && event.progress)) {
    const text = progressText(event.progress || event);
    if (text) {
      ctx.progress.hidden = false;
      ctx.progress.textContent = text;
      ctx.setPhase(text);
    }
    if (event.type === "step") ctx.steps.append(el("li", { "data-node": event.node }, el("span", { class: "node" }, event.node), event.text));
  } else if (event.type === "step") {
    ctx.steps.append(el("li", { "data-node": event.node }, el("span", { class: "node" }, event.node), event.text));
    addEvidence(event.evidence);
    ctx.setPhase(event.node === "tools" ? "retrieving" : "thinking");
  } else if (event.type === "answer") {
    ctx.progress.classList.add("done");  // the last indexing report stays: it explains where the time went
    const seconds = typeof event.t === "number" ? event.t : (performance.now() - started) / 1000;
    showAnswer(event.answer, ctx.turn, seconds);
  } else if (event.type === "error") {
    ctx.turn.append(el("div", { class: "error" }, event.error));
  }
  chat.scrollTop = chat.scrollHeight;
}

function showAnswer(answer, turn, seconds) {
  for (const ev of answer.evidence || []) state.evidence.set(ev.id, ev);
  const cited = answer.scenes || [];
  if (cited.length && state.scenes.length && !cited.some((sc) => state.image && sc.fingerprint === state.image.fingerprint)) {
    const entry = state.scenes.find((x) => x.fingerprint === cited[0].fingerprint);
    if (entry && entry.image) openImage(entry.image, true);  // the answer's first scene, to draw its sites
  }
  const index = state.answers.length;
  const sites = answerSites(answer, index);
  state.answers.push({ answer, sites });
  const finding = answer.finding || null;
  const box = el("div", { class: `answer${answer.supported ? "" : " unsupported"}`, "data-answer": index,
    "data-finding": finding || "" });
  const { text, note } = splitNote(answer.answer, finding);
  const head = el("div", { class: "answer-text" });
  if (finding) head.append(el("span", { class: `finding-badge finding-${finding}` }, FINDING_TEXT[finding] || finding));
  head.append(text);
  box.append(head);
  if (note) box.append(el("div", { class: "note" }, note));
  if (sites.length) {
    const rows = sites.map((s) => el("tr", { class: "site-row", "data-site-id": s.id, onclick: () => selectSite(s.id), title: "show this site" },
      el("td", {}, el("span", { class: `site-number finding-${s.finding || "none"}` }, s.number)),
      el("td", {}, s.query || ""),
      el("td", {}, typeof s.confidence === "number" ? fmt(s.confidence) : ""),
      el("td", {}, s.bbox.join(", ")),
      el("td", { class: "muted" }, String(s.windows.length))));
    box.append(el("table", { class: "sites" },
      el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "what"), el("th", { title: "confidence of the site's best window" }, "conf."),
        el("th", {}, "box x0, y0, x1, y1 (px)"), el("th", { title: "windows grouped into this site" }, "win."))),
      el("tbody", {}, ...rows)));
  }
  for (const ev of answer.evidence || []) {
    if (ev.kind === "knowledge") {
      box.append(el("details", { class: "knowledge", "data-evidence-id": ev.id },
        el("summary", {}, `${ev.id} · ${ev.title || ev.knowledge_id}`),
        el("div", {}, ev.snippet || "(no snippet)"), el("div", { class: "muted" }, `entry ${ev.knowledge_id}`)));
    }
  }
  const scenes = (answer.scenes || []).filter((sc) => sc.id || (state.image && sc.fingerprint !== state.image.fingerprint));
  for (const sc of answer.scenes || []) state.cited.add(sc.fingerprint);
  if (scenes.length) {
    box.append(el("div", { class: "answer-scenes" }, "scenes: ", ...scenes.map((sc) => {
      const entry = state.scenes.find((x) => x.fingerprint === sc.fingerprint) || {};
      return el("button", { type: "button", class: "chip", "data-scene-id": sc.id || "", title: sc.source || "",
        onclick: () => entry.image && chooseScene(entry) }, sc.id || sc.source || sc.fingerprint);
    })));
  }
  markScenes();
  const meta = [`confidence ${fmt(answer.confidence)}`, answer.backend, `${answer.steps} steps`, `${fmt(seconds, 1)} s`];
  if (!answer.supported) meta.push(`unsupported: ${answer.missing}`);
  box.append(el("div", { class: "muted meta" }, meta.filter(Boolean).join(" · ")));
  box.addEventListener("click", (ev) => { if (!ev.target.closest(".site-row, details")) showAnswerSites(index); });
  turn.append(box);
  showAnswerSites(index);
}

/** The answer's text without its closing retrieval-only sentence (shown as a one-line note) and without a
 * leading word that repeats the finding badge. */
function splitNote(text, finding) {
  let body = text || "";
  let note = null;
  const cut = body.search(/\s*Retrieval-only:[^]*$/);
  if (cut >= 0) { note = body.slice(cut).trim(); body = body.slice(0, cut).trim(); }
  if (finding) {
    const word = (FINDING_TEXT[finding] || finding).replace("_", " ");
    const lead = new RegExp(`^${word}\\s*:\\s*`, "i");
    if (lead.test(body)) body = body.replace(lead, "").replace(/^./, (c) => c.toUpperCase());
  }
  return { text: body, note };
}

function showAnswerSites(index) {
  state.shown = index;
  state.selected = null;
  for (const node of document.querySelectorAll(".answer")) node.classList.toggle("shown", Number(node.dataset.answer) === index);
  $("details").hidden = true;
  drawBoxes();
}

// --- site details -------------------------------------------------------------------------------------------

function findSite(id) {
  for (const list of [state.candidates, ...state.answers.map((a) => a.sites)]) {
    const s = list.find((x) => x.id === id);
    if (s) return s;
  }
  return null;
}

function selectSite(id) {
  const site = findSite(id);
  if (!site) return;
  const answerIndex = state.answers.findIndex((a) => a.sites.includes(site));
  if (answerIndex >= 0 && answerIndex !== state.shown) showAnswerSites(answerIndex);
  state.selected = id;
  for (const row of document.querySelectorAll(".site-row")) row.classList.toggle("selected", row.dataset.siteId === id);
  drawBoxes();
  if (viewer) viewer.flyTo(site.bbox);
  const best = site.best || {};
  $("details-title").textContent = site.number ? `site ${site.number}${site.finding ? " · " + (FINDING_TEXT[site.finding] || site.finding) : ""}`
    : "candidate";
  showCrop(best);
  const rows = [["finding", site.finding && (FINDING_TEXT[site.finding] || site.finding)], ["presence", site.presence],
    ["confidence", site.confidence], ["path", site.path], ["what", site.query], ["box (px)", site.bbox.join(", ")],
    ["map box", site.map_box && `${site.map_box.bounds.map((v) => v.toFixed(2)).join(", ")} (${site.map_box.crs.slice(0, 40)})`],
    ["lon/lat", site.lonlat && site.lonlat.map((v) => v.toFixed(5)).join(", ")],
    ["best window", best.id && `${best.id} · ${best.bbox ? best.bbox.join(", ") : ""}`], ["score", best.score], ["why", best.why],
    ...Object.entries(best.provenance || {})];
  $("details-table").replaceChildren(...rows.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, typeof v === "number" ? fmt(v, 3) : v))));
  const records = site.records.map((m) => el("button", { type: "button", class: "chip", "data-evidence-id": m.id,
    onclick: () => showCrop(m), title: `${m.path} · ${m.query || ""}` }, `${m.id} ${m.path}${typeof m.confidence === "number" ? " " + fmt(m.confidence) : ""}`));
  $("details-members").replaceChildren(el("div", { class: "muted" },
    `${site.windows.length} window(s) in this site${site.windows.length > 1 ? " (drawn dotted while selected)" : ""}; evidence:`), ...records);
  $("details").hidden = false;
}

function showCrop(ev) {
  const crop = $("details-crop");
  crop.hidden = !ev.has_crop;
  if (ev.has_crop) crop.src = `/api/threads/${encodeURIComponent(state.thread)}/evidence/${encodeURIComponent(ev.id)}/crop`;
}

function closeDetails() {
  $("details").hidden = true;
  state.selected = null;
  for (const row of document.querySelectorAll(".site-row.selected")) row.classList.remove("selected");
  drawBoxes();
}

// --- trace --------------------------------------------------------------------------------------------------

async function showTrace() {
  const panel = $("trace-panel");
  panel.hidden = false;
  const body = $("trace-body");
  body.replaceChildren(el("div", { class: "muted" }, "loading…"));
  try {
    const trace = await fetchJson(`/api/threads/${encodeURIComponent(state.thread)}/trace`);
    const items = trace.messages.map((m) => {
      const calls = (m.tool_calls || []).map((c) => `\n  → ${c.name}(${JSON.stringify(c.args)})`).join("");
      return el("div", { class: `trace-msg ${m.status === "error" ? "error" : ""}` },
        el("span", { class: "type" }, m.name ? `${m.type}:${m.name}` : m.type), (m.text || "") + calls);
    });
    const steps = trace.steps.map((s) => el("div", { class: "trace-msg" }, el("span", { class: "type" }, `${fmt(s.t, 2)} s ${s.node}`), s.text));
    body.replaceChildren(el("h4", {}, `thread ${trace.thread}: ${trace.messages.length} messages`), ...items,
      el("h4", {}, `streamed steps (${trace.steps.length})`), ...steps);
  } catch (err) {
    body.replaceChildren(el("div", { class: "error" }, err.message));
  }
}

// --- wiring -------------------------------------------------------------------------------------------------

$("image-select").addEventListener("change", (ev) => openImage(ev.target.value));
$("upload").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); ev.target.value = ""; });
$("new-thread").addEventListener("click", () => newThread());
$("trace-button").addEventListener("click", () => showTrace());
$("trace-close").addEventListener("click", () => { $("trace-panel").hidden = true; });
$("details-close").addEventListener("click", () => closeDetails());
$("zoom-in").addEventListener("click", () => viewer && viewer.zoomBy(2));
$("zoom-out").addEventListener("click", () => viewer && viewer.zoomBy(0.5));
$("zoom-fit").addEventListener("click", () => viewer && viewer.fit());
$("show-windows").addEventListener("change", (ev) => { state.showWindows = ev.target.checked; drawBoxes(); });
$("ask-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const box = $("question");
  const q = box.value.trim();
  if (!q || state.busy || (!state.image && !(state.catalog && $("across").checked))) return;
  box.value = "";  // sent: the box is ready for the next question
  await ask(q);
});
$("question").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask-form").requestSubmit(); }
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && !$("trace-panel").hidden) { $("trace-panel").hidden = true; return; }
  if (ev.key === "Escape" && !$("details").hidden && !ev.target.closest("textarea, input, select")) closeDetails();
});

window.rsrag = { state, viewer, ask, selectSite, openImage, showAnswerSites, chooseScene };
loadImages().catch((err) => status(`cannot list images: ${err.message}`));
loadCatalog().catch((err) => status(`cannot list the catalog's scenes: ${err.message}`));
