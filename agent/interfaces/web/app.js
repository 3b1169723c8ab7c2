/* rsrag analyst page: image list and upload, chat streaming the agent's steps, evidence on the image,
 * evidence details (crop and scores), knowledge citations and the thread's trace. Text from the server is
 * always inserted as text, never as HTML. */
"use strict";

const $ = (id) => document.getElementById(id);
const state = { images: [], image: null, thread: null, evidence: new Map(), cited: new Set(), selected: null, busy: false };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function status(text) { $("status").textContent = text; }
function newThreadId() { return "web-" + Math.random().toString(36).slice(2, 10) + Date.now().toString(36); }
function fmt(v, digits = 3) { return typeof v === "number" ? v.toFixed(digits) : String(v); }

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

const viewer = new DeepZoomViewer($("viewer"), {
  onMove: (p) => showCoords(p),
  onBoxClick: (id) => selectEvidence(id),
});

function showCoords(p) {
  const im = state.image;
  if (!im || p.x < 0 || p.y < 0 || p.x > im.width || p.y > im.height) { $("coords").textContent = ""; return; }
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

function openImage(id) {
  const image = state.images.find((im) => im.id === id);
  if (!image) { status(`unknown image ${id}`); return; }
  state.image = image;
  $("image-select").value = id;
  viewer.open(image);
  newThread();
  const where = image.lonlat_bounds ? ` — lon/lat ${image.lonlat_bounds.map((v) => v.toFixed(4)).join(", ")}` : "";
  status(`${image.name}: ${image.width}×${image.height} px${image.crs ? ", " + (image.crs.length < 40 ? image.crs : "georeferenced") : ""}${where}`);
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

// --- chat -----------------------------------------------------------------------------------------------

function newThread() {
  state.thread = newThreadId();
  state.evidence.clear();
  state.cited.clear();
  state.selected = null;
  $("chat").replaceChildren();
  $("details").hidden = true;
  $("thread-label").textContent = `thread ${state.thread}`;
  drawBoxes();
}

function addEvidence(list) {
  for (const ev of list || []) state.evidence.set(ev.id, ev);
  drawBoxes();
}

function drawBoxes() {
  const im = state.image;
  const boxes = [];
  for (const ev of state.evidence.values()) {
    if (!ev.bbox || !im || (ev.scene && ev.scene !== im.fingerprint)) continue;
    const conf = typeof ev.confidence === "number" ? ` ${ev.confidence.toFixed(2)}` : "";
    boxes.push({ id: ev.id, bbox: ev.bbox, cited: state.cited.has(ev.id), selected: state.selected === ev.id,
                 label: `${ev.id}${conf}`, title: `${ev.id} ${ev.path} ${ev.query || ""}` });
  }
  viewer.setBoxes(boxes);
}

async function ask(question) {
  if (state.busy || !state.image) return;
  state.busy = true;
  $("ask-button").disabled = true;
  const steps = el("ul", { class: "steps" });
  const turn = el("div", { class: "turn" }, el("div", { class: "question" }, question), steps);
  $("chat").append(turn);
  try {
    const response = await fetch("/api/ask", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: state.image.id, question, thread: state.thread }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error || `HTTP ${response.status}`);
    }
    await readLines(response.body, (event) => handleEvent(event, turn, steps));
  } catch (err) {
    turn.append(el("div", { class: "error" }, err.message));
  } finally {
    state.busy = false;
    $("ask-button").disabled = false;
    status("");
  }
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

function handleEvent(event, turn, steps) {
  const chat = $("chat");
  if (event.type === "start") {
    status("thinking…");
  } else if (event.type === "step") {
    steps.append(el("li", { "data-node": event.node }, el("span", { class: "node" }, event.node), event.text));
    addEvidence(event.evidence);
  } else if (event.type === "answer") {
    showAnswer(event.answer, turn);
  } else if (event.type === "error") {
    turn.append(el("div", { class: "error" }, event.error));
  }
  chat.scrollTop = chat.scrollHeight;
}

function showAnswer(answer, turn) {
  addEvidence(answer.evidence);
  for (const id of answer.cited) state.cited.add(id);
  const box = el("div", { class: answer.supported ? "answer" : "answer unsupported" }, answer.answer);
  box.append(el("div", { class: "muted" }, `confidence ${fmt(answer.confidence, 2)} · ${answer.backend} · ${answer.steps} steps · ${fmt(answer.seconds, 1)} s`
    + (answer.supported ? "" : ` · unsupported: ${answer.missing}`)));
  const chips = el("div", { class: "chips" });
  for (const ev of answer.evidence) {
    if (ev.kind === "knowledge") {
      box.append(el("details", { class: "knowledge", "data-evidence-id": ev.id },
        el("summary", {}, `${ev.id} · ${ev.title || ev.knowledge_id}`),
        el("div", {}, ev.snippet || "(no snippet)"), el("div", { class: "muted" }, `entry ${ev.knowledge_id}`)));
    } else {
      chips.append(el("button", { class: "chip", type: "button", "data-evidence-id": ev.id, onclick: () => selectEvidence(ev.id) }, ev.id));
    }
  }
  box.append(chips);
  turn.append(box);
  drawBoxes();
}

// --- evidence details -------------------------------------------------------------------------------------

function selectEvidence(id) {
  const ev = state.evidence.get(id);
  if (!ev) return;
  state.selected = id;
  drawBoxes();
  if (ev.bbox) viewer.flyTo(ev.bbox);
  $("details-title").textContent = `${ev.id} · ${ev.path}${state.cited.has(id) ? " · cited" : ""}`;
  const crop = $("details-crop");
  crop.hidden = !ev.has_crop;
  if (ev.has_crop) crop.src = `/api/threads/${encodeURIComponent(state.thread)}/evidence/${encodeURIComponent(id)}/crop`;
  const rows = [["kind", ev.kind], ["confidence", ev.confidence], ["score", ev.score], ["query", ev.query], ["why", ev.why],
    ["bbox (px)", ev.bbox && ev.bbox.join(", ")],
    ["map box", ev.map_box && `${ev.map_box.bounds.map((v) => v.toFixed(2)).join(", ")} (${ev.map_box.crs.slice(0, 40)})`],
    ["lon/lat", ev.lonlat && ev.lonlat.map((v) => v.toFixed(5)).join(", ")], ["knowledge", ev.title],
    ["snippet", ev.snippet], ["tool", ev.tool],
    ...Object.entries(ev.provenance || {}).map(([k, v]) => [k, v])];
  $("details-table").replaceChildren(...rows.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, typeof v === "number" ? fmt(v) : v))));
  $("details").hidden = false;
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
$("details-close").addEventListener("click", () => { $("details").hidden = true; state.selected = null; drawBoxes(); });
$("zoom-in").addEventListener("click", () => viewer.zoomBy(2));
$("zoom-out").addEventListener("click", () => viewer.zoomBy(0.5));
$("zoom-fit").addEventListener("click", () => viewer.fit());
$("ask-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("question").value.trim();
  if (q) ask(q);
});
$("question").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask-form").requestSubmit(); }
});

window.rsrag = { state, viewer, ask, selectEvidence, openImage };
loadImages().catch((err) => status(`cannot list images: ${err.message}`));
