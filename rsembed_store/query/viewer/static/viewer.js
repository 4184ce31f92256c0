// The rsembed-store map: the embedding picture of a space (H3 hexagons coloured by PCA), click-to-search,
// search by marked examples, text search, a change layer. It talks only to the server that served it, over
// the same HTTP API that scripts use; every library it uses is vendored next to it (docs/viewer.md).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  spaces: [], space: null, window: null, picture: null,
  cells: null,            // {n, hex: string[], colour: Uint8Array (rgb), res}
  hits: [], query: null,  // the last search's results and the row it started from
  marks: new Map(),       // key -> {key, label: "positive"|"negative", lon, lat, cell, window}
  change: null,           // {n, hex, colour} or null
  basemap: "", token: sessionStorage.getItem("rsembed-token") || "",
  firstPaintMs: null, loads: 0, searches: 0,
};
window.viewer = { state, marks: { script: performance.now() } };  // for the browser tests and the benchmark
const mark = (name) => { if (!(name in window.viewer.marks)) window.viewer.marks[name] = performance.now(); };

// ------------------------------------------------------------------ HTTP

async function call(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { method: "POST", body: JSON.stringify(options.json) });
  }
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401 && !options.retried) {
    const token = window.prompt("This server protects reads: its token");
    if (token) {
      state.token = token;
      sessionStorage.setItem("rsembed-token", token);
      return call(path, Object.assign({}, options, { retried: true }));
    }
  }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { const e = (await res.json()).error; message = e.message + (e.field ? " (" + e.field + ")" : ""); }
    catch (_) { /* not our error shape */ }
    throw new Error(message);
  }
  return res;
}

async function arrowTable(res) {
  return Arrow.tableFromIPC(new Uint8Array(await res.arrayBuffer()));
}

function status(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

function guarded(fn) {
  return (...args) => fn(...args).catch((e) => status(e.message, true));
}

// the first request goes out before deck starts up (WebGL set-up is the slowest part of a first paint)
const spacesAnswer = call("/viewer/spaces").then((res) => res.json());
spacesAnswer.catch(() => {});  // reported where it is awaited

// ------------------------------------------------------------------ the map

const deckgl = new deck.Deck({
  parent: $("map"),
  views: new deck.MapView({ repeat: false }),
  // the view is controlled: state.view is the one truth, so a late answer for an old view is recognised
  viewState: { longitude: 0, latitude: 20, zoom: 1.5 },
  controller: true,
  getCursor: ({ isHovering }) => (isHovering ? "pointer" : "grab"),
  // only a person (drag, zoom, keys) or a transition moves the view: deck may also report the view it
  // started with once it is ready, which, arriving after the page fitted the view to the cells, would undo it
  onViewStateChange: ({ viewState, interactionState }) => {
    if (interactionState && Object.values(interactionState).some(Boolean)) setView(viewState);
  },
  getTooltip: ({ layer, index }) => layer && layer.id === "cells" && state.cells
    ? "cell " + state.cells.hex[index] + " (" + state.cells.count[index] + " rows)" : null,
  onAfterRender: () => {
    if (state.cells && state.firstPaintMs === null) {
      state.firstPaintMs = performance.now();
      mark("painted");
      setTimeout(render, 0);  // now the graticule and outline
      document.body.dataset.painted = "1";
    }
  },
});
state.view = { longitude: 0, latitude: 20, zoom: 1.5 };
mark("deck");

function setView(view) {
  state.view = view;
  deckgl.setProps({ viewState: view });
  scheduleCells();
}

function viewport() {  // from our own copy of the view state: deck's viewports exist only after a first frame
  const el = $("map");
  return new deck.WebMercatorViewport(Object.assign({}, state.view,
    { width: el.clientWidth || 800, height: el.clientHeight || 600 }));
}

function viewBbox() {
  const b = viewport().getBounds();
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  return [clamp(b[0], -180, 180), clamp(b[1], -90, 90), clamp(b[2], -180, 180), clamp(b[3], -90, 90)];
}

// The finest H3 resolution whose hexagons are at least ~3 pixels wide at this zoom.
function resForZoom(view) {
  // deck.gl zoom 0 shows the world 512 pixels wide
  const metresPerPixel = 78271.52 * Math.cos((view.latitude * Math.PI) / 180) / Math.pow(2, view.zoom);
  const res = Math.floor(Math.log(4.357e12 / Math.pow(3 * metresPerPixel, 2)) / Math.log(7));
  return Math.max(0, Math.min(15, res));
}

function graticule() {
  const z = state.view.zoom;
  const step = z < 3 ? 30 : z < 5 ? 10 : z < 7 ? 2 : z < 9 ? 0.5 : z < 11 ? 0.1 : 0.02;
  const b = viewBbox(), lines = [];
  for (let x = Math.floor(b[0] / step) * step; x <= b[2]; x += step) lines.push([[x, b[1]], [x, b[3]]]);
  for (let y = Math.floor(b[1] / step) * step; y <= b[3]; y += step) lines.push([[b[0], y], [b[2], y]]);
  return lines;
}

function rampColour(t) {  // 0 -> dark blue, 1 -> yellow (a viridis-like ramp)
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((c, j) => Math.round(c + f * (stops[i + 1][j] - c)));
}

function render() {
  const layers = [];
  if (state.basemap) {
    layers.push(new deck.TileLayer({
      id: "basemap", data: state.basemap, minZoom: 0, maxZoom: 19, tileSize: 256,
      renderSubLayers: (props) => {
        const { west, south, east, north } = props.tile.bbox;
        return new deck.BitmapLayer(props, { data: null, image: props.data, bounds: [west, south, east, north] });
      },
    }));
  }
  // the graticule and the cells' outline: one layer (each layer type is a shader to compile before a first frame)
  const lines = graticule().map((path) => ({ path, color: [120, 140, 160, 90], width: 1 }));
  if (state.picture) {
    const [w, s, e, n] = state.picture.bounds;
    lines.push({ path: [[w, s], [e, s], [e, n], [w, n], [w, s]], color: [230, 235, 240, 200], width: 1.5 });
  }
  // drawn from the second frame on: the first frame with cells compiles one layer's shaders, not two
  if (state.firstPaintMs !== null) layers.push(new deck.PathLayer({
    id: "lines", data: lines, getPath: (d) => d.path, getColor: (d) => d.color, getWidth: (d) => d.width,
    widthUnits: "pixels",
  }));
  const c = state.cells;
  if (c) {
    layers.push(new deck.H3HexagonLayer({
      id: "cells", data: { length: c.n }, pickable: true, extruded: false, stroked: false, highPrecision: "auto",
      getHexagon: (_, { index }) => c.hex[index],
      getFillColor: (_, { index }) => [c.colour[3 * index], c.colour[3 * index + 1], c.colour[3 * index + 2]],
      opacity: state.change ? 0.25 : 0.9, updateTriggers: { getHexagon: c.version, getFillColor: c.version },
    }));
  }
  if (state.change) {
    const ch = state.change;
    layers.push(new deck.H3HexagonLayer({
      id: "change", data: { length: ch.n }, extruded: false, stroked: false,
      getHexagon: (_, { index }) => ch.hex[index],
      getFillColor: (_, { index }) => ch.colour.slice(3 * index, 3 * index + 3),
      updateTriggers: { getHexagon: ch.version, getFillColor: ch.version },
    }));
  }
  const n = state.hits.length;
  if (n) layers.push(new deck.ScatterplotLayer({
    id: "hits", data: state.hits, pickable: true, stroked: true, radiusUnits: "pixels",
    getPosition: (h) => [h.lon, h.lat], getRadius: 7, lineWidthUnits: "pixels", getLineWidth: 2,
    getFillColor: (h, { index }) => rampColour(1 - index / Math.max(1, n - 1)).concat(230),
    getLineColor: [255, 255, 255],
  }));
  const marked = Array.from(state.marks.values()).concat(state.query ? [state.query] : []);
  if (marked.length) layers.push(new deck.ScatterplotLayer({
    id: "marks", data: marked,
    stroked: true, radiusUnits: "pixels", getPosition: (m) => [m.lon, m.lat], getRadius: 9, filled: false,
    lineWidthUnits: "pixels", getLineWidth: 3,
    getLineColor: (m) => (m.label === "positive" ? [40, 220, 90] : m.label === "negative" ? [240, 60, 60]
      : [255, 255, 255]),
  }));
  deckgl.setProps({ layers });
}

// ------------------------------------------------------------------ the picture

async function loadSpaces() {
  const body = await spacesAnswer;
  mark("spaces");
  state.spaces = body.spaces;
  state.basemap = localStorage.getItem("rsembed-basemap") || body.basemap || "";
  $("basemap").value = state.basemap;
  $("space").innerHTML = "";
  for (const s of body.spaces) $("space").add(new Option(s.space + " (" + s.model + ", " + s.dim + "-d)", s.space));
  if (!body.spaces.length) { status("this store holds no spaces yet: ingest something first"); return; }
  await chooseSpace(body.spaces[0].space);
}

async function chooseSpace(name) {
  state.space = state.spaces.find((s) => s.space === name);
  for (const id of ["window", "change-from", "change-to"]) {
    $(id).innerHTML = "";
    for (const w of state.space.windows) $(id).add(new Option(w.window + " (" + w.rows + " rows)", w.window));
  }
  const ws = state.space.windows;
  if (ws.length > 1) {  // change: the earliest and the latest window by default
    const sorted = ws.map((w) => w.window).sort();
    $("change-from").value = sorted[0];
    $("change-to").value = sorted[sorted.length - 1];
  }
  $("text-form").hidden = !state.space.text;
  state.hits = []; state.query = null; state.change = null;
  await chooseWindow(ws.length ? ws[0].window : null, true);
}

async function chooseWindow(window, fly) {
  state.window = window;
  $("window").value = window;
  const q = new URLSearchParams({ space: state.space.space, window });
  state.picture = await (await call("/viewer/picture?" + q)).json();
  mark("picture");
  const ex = state.picture.explained.map((x) => Math.round(100 * x) + "%").join(", ");
  $("legend").textContent = state.picture.rows + " rows at H3 res " + state.picture.h3_res
    + "; colour = PCA 1-3 as RGB (" + ex + " of variance)";
  if (fly) {
    const [w, s, e, n] = state.picture.bounds;
    const fitted = new deck.WebMercatorViewport({ width: $("map").clientWidth || 800,
      height: $("map").clientHeight || 600 }).fitBounds([[w, s], [e, n]], { padding: 40 });
    state.view = { longitude: fitted.longitude, latitude: fitted.latitude, zoom: Math.min(fitted.zoom, 16) };
    deckgl.setProps({ viewState: state.view });
  }
  await loadCells();
}

let cellsTimer = null;
function scheduleCells() {
  clearTimeout(cellsTimer);
  cellsTimer = setTimeout(guarded(loadCells), 250);
  render();
}

async function loadCells() {
  if (!state.space || !state.window) return;
  const q = new URLSearchParams({ space: state.space.space, window: state.window,
    bbox: viewBbox().join(","), res: String(resForZoom(state.view)) });
  const seq = (state.cellsAsked = (state.cellsAsked || 0) + 1);
  const res = await call("/viewer/cells?" + q);
  const table = await arrowTable(res);
  if (seq !== state.cellsAsked) return;  // a newer view has asked since: its answer is the one to draw
  mark("cells");
  const n = table.numRows, cells = table.getChild("cell").toArray();
  const r = table.getChild("r").toArray(), g = table.getChild("g").toArray(), b = table.getChild("b").toArray();
  const colour = new Uint8Array(3 * n), hex = new Array(n);
  for (let i = 0; i < n; i++) {
    hex[i] = cells[i].toString(16);
    colour[3 * i] = r[i]; colour[3 * i + 1] = g[i]; colour[3 * i + 2] = b[i];
  }
  state.loads += 1;
  state.cells = { n, hex, colour, count: table.getChild("n").toArray(), res: Number(res.headers.get("X-Viewer-Res")),
    version: state.loads };
  if (!state.hits.length) status(n + " cells at H3 res " + state.cells.res);
  render();
}

// ------------------------------------------------------------------ search

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

async function rowAt(lon, lat) {
  const q = new URLSearchParams({ space: state.space.space, window: state.window, lon, lat });
  return (await call("/viewer/cell?" + q)).json();
}

async function clicked(lon, lat) {
  if (!state.space) return;
  const row = await rowAt(lon, lat);
  const m = mode();
  if (m === "search") {
    state.query = Object.assign({ label: "query" }, row);
    await search({ like: { key: row.key } }, "cell " + (row.cell || row.h3));
  } else {
    const old = state.marks.get(row.key);
    if (old && old.label === m) state.marks.delete(row.key);
    else state.marks.set(row.key, { key: row.key, label: m, lon: row.lon, lat: row.lat, cell: row.cell || row.h3,
      window: row.start_date + "/" + row.end_date });
    showMarks();
    render();
  }
}

function showMarks() {
  const all = Array.from(state.marks.values());
  const pos = all.filter((m) => m.label === "positive").length, neg = all.length - pos;
  $("marks").textContent = all.length ? pos + " positive, " + neg + " negative" : "no marks";
}

function filters() {
  const out = {};
  if ($("in-view").checked) out.within = { bbox: viewBbox() };
  if ($("in-window").checked && state.window) {
    const [start, end] = state.window.split("/");
    out.temporal = { mode: "range", start, end };
  }
  return out;
}

async function search(query, what) {
  const k = Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 10));
  const body = Object.assign({ model: state.space.model, revision: state.space.revision, k }, filters(), query);
  status("searching like " + what + " ...");
  const t0 = performance.now();
  const res = await (await call("/search", { json: body })).json();
  state.hits = res.results;
  state.searches += 1;
  state.lastSearch = body;
  status(state.hits.length + " hits like " + what + " in " + Math.round(performance.now() - t0) + " ms");
  showHits();
  render();
}

// "2021" for a calendar year, else "START/END"
function windowLabel(start, end) {
  if (!start || !end) return "";
  const y = start.slice(0, 4);
  return start === y + "-01-01" && end === (Number(y) + 1) + "-01-01" ? y : start + "/" + end;
}

function showHits() {
  const tbody = $("hits").querySelector("tbody");
  tbody.innerHTML = "";
  state.hits.forEach((h, i) => {
    const tr = document.createElement("tr");
    const cells = [i + 1, Number(h.distance.toPrecision(4)), h.cell || h.h3, windowLabel(h.start_date, h.end_date), h.key];
    cells.forEach((v, j) => {
      const td = document.createElement("td");
      td.textContent = String(v);
      if (j === 4) { td.className = "key"; td.title = h.key; }
      tr.appendChild(td);
    });
    tr.dataset.cell = h.cell || h.h3;
    tr.addEventListener("click", () => recentre(h));
    tbody.appendChild(tr);
  });
}

function recentre(hit) {
  setView(Object.assign({}, state.view, { longitude: hit.lon, latitude: hit.lat }));
}

async function searchMarks() {
  const all = Array.from(state.marks.values());
  const like = all.filter((m) => m.label === "positive").map((m) => ({ key: m.key }));
  const negatives = all.filter((m) => m.label === "negative").map((m) => ({ key: m.key }));
  if (!like.length) { status("mark at least one positive cell first (Click does: mark +)", true); return; }
  const query = { like };
  if (negatives.length) query.negatives = negatives;
  if ($("combine").value) query.combine = $("combine").value;
  state.query = null;
  await search(query, like.length + " positive and " + negatives.length + " negative marks");
}

// ------------------------------------------------------------------ labels as GeoJSON

function point(lon, lat, properties) {
  return { type: "Feature", geometry: { type: "Point", coordinates: [lon, lat] }, properties };
}

function labelsGeoJSON() {
  const features = Array.from(state.marks.values()).map((m) =>
    point(m.lon, m.lat, { label: m.label, key: m.key, cell: m.cell, window: m.window, space: state.space.space }));
  state.hits.forEach((h, i) => features.push(point(h.lon, h.lat, { label: "hit", rank: i + 1, distance: h.distance,
    key: h.key, cell: h.cell || h.h3, window: (h.start_date || "") + "/" + (h.end_date || ""),
    space: state.space.space })));
  return { type: "FeatureCollection", features };
}

function download() {
  const blob = new Blob([JSON.stringify(labelsGeoJSON(), null, 1)], { type: "application/geo+json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "rsembed-labels.geojson";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function loadLabels(file) {
  const doc = JSON.parse(await file.text());
  const features = doc.type === "FeatureCollection" ? doc.features : [doc];
  let n = 0;
  for (const f of features) {
    const p = f.properties || {};
    if (p.label !== "positive" && p.label !== "negative") continue;
    if (!f.geometry || f.geometry.type !== "Point") throw new Error("a label must be a Point feature");
    const [lon, lat] = f.geometry.coordinates;
    const row = p.key ? { key: p.key, lon, lat, cell: p.cell, start_date: "", end_date: "" } : await rowAt(lon, lat);
    state.marks.set(row.key, { key: row.key, label: p.label, lon, lat, cell: p.cell || row.cell || row.h3,
      window: p.window || (row.start_date + "/" + row.end_date) });
    n += 1;
  }
  status("loaded " + n + " labels from " + file.name);
  showMarks();
  render();
}

// ------------------------------------------------------------------ change

async function showChange() {
  const [fs, fe] = $("change-from").value.split("/"), [ts, te] = $("change-to").value.split("/");
  const body = { model: state.space.model, revision: state.space.revision, format: "arrow",
    from: { mode: "range", start: fs, end: fe }, to: { mode: "range", start: ts, end: te } };
  if ($("in-view").checked) body.within = { bbox: viewBbox() };
  status("computing change ...");
  const table = await arrowTable(await call("/change", { json: body }));
  const n = table.numRows, cells = table.getChild("cell").toArray(), dist = table.getChild("distance").toArray();
  const sorted = Float32Array.from(dist).sort(), top = sorted[Math.floor(0.98 * (n - 1))] || 1;
  const hex = new Array(n), colour = new Uint8Array(3 * n);
  for (let i = 0; i < n; i++) {
    hex[i] = BigInt.asUintN(64, BigInt(cells[i])).toString(16);
    colour.set(rampColour(dist[i] / top), 3 * i);
  }
  state.change = { n, hex, colour, distance: Array.from(dist), version: (state.change ? state.change.version : 0) + 1 };
  status(n + " cells compared; colour = cosine distance (yellow: most change, " + top.toFixed(3) + "+)");
  render();
}

// ------------------------------------------------------------------ wiring

// Clicks are read from the DOM (a press and release within a few pixels, so a drag is not a click) and
// picked with deck: a hit recentres, anything else searches or marks the stored row under the pointer.
let pressed = null;
$("map").addEventListener("pointerdown", (e) => { pressed = [e.clientX, e.clientY]; });
$("map").addEventListener("click", (e) => {
  if (!pressed || Math.hypot(e.clientX - pressed[0], e.clientY - pressed[1]) > 5) return;
  const rect = $("map").getBoundingClientRect(), x = e.clientX - rect.left, y = e.clientY - rect.top;
  const hit = deckgl.pickObject({ x, y, radius: 2, layerIds: ["hits"] });
  if (hit && hit.object) { recentre(hit.object); return; }
  const [lon, lat] = viewport().unproject([x, y]);
  guarded(clicked)(lon, lat);
});

$("space").addEventListener("change", (e) => guarded(chooseSpace)(e.target.value));
$("window").addEventListener("change", (e) => guarded(chooseWindow)(e.target.value, false));
$("search-marks").addEventListener("click", guarded(searchMarks));
$("clear-marks").addEventListener("click", () => { state.marks.clear(); showMarks(); render(); });
$("download").addEventListener("click", download);
$("load").addEventListener("change", (e) => { if (e.target.files[0]) guarded(loadLabels)(e.target.files[0]); });
$("change-show").addEventListener("click", guarded(showChange));
$("change-hide").addEventListener("click", () => { state.change = null; render(); });
$("basemap").addEventListener("change", (e) => {
  state.basemap = e.target.value.trim();
  localStorage.setItem("rsembed-basemap", state.basemap);
  render();
});
$("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (text) guarded(search)({ text }, JSON.stringify(text));
});

Object.assign(window.viewer, {
  project: (lon, lat) => viewport().project([lon, lat]),
  ready: guarded(loadSpaces)(),
});
