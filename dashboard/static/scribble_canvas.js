// The scribbling canvas: an image viewer (wheel zoom, drag pan, minimap, channel controls) that draws
// strokes and sends them to Python as edits. Python owns the scribbles: it answers with the picture of
// the part in view (a "tile") and the ids of the edits it has applied. Nothing here needs a build step.
//
// Coordinates: image (row, col), continuous; pixel (r, c) covers [r, r + 1) x [c, c + 1).
// The view maps image to screen by   x = (col - origin.col) * scale,   y = (row - origin.row) * scale.

const ZOOM_STEP = 1.25;
const MAX_SCALE = 32;           // screen px per image px at the closest zoom
const TILE_DEBOUNCE_MS = 200;   // ask for a sharper tile this long after the view stops moving
const MIN_POINT_SPACING = 1.5;  // screen px between recorded stroke points
const MINIMAP_SIDE = 150;

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let scribbler = parentElement.__scribbler;
  if (!scribbler) {
    scribbler = createScribbler(parentElement);
    parentElement.__scribbler = scribbler;
  }
  scribbler.send = setStateValue;
  scribbler.update(data);
}

function createScribbler(parentElement) {
  const s = {
    data: null, scale: 1, origin: { row: 0, col: 0 }, fitted: false,
    brush: 0, width: 3, panTool: false, spaceHeld: false,
    pending: [], drawing: null, panning: null, pointer: null,
    pictures: {}, display: [], displayKey: null, lastGoto: null, tileTimer: null,
  };
  const root = element("div", { class: "scribbler", tabindex: "0" });
  const bar = element("div", { class: "bar" });
  const stage = element("div", { class: "stage" });
  const view = element("canvas", { class: "view" });
  const minimap = element("canvas", { class: "minimap" });
  const status = element("div", { class: "status" });
  const channels = element("div", { class: "channels" });
  stage.append(view, minimap);
  root.append(bar, stage, status, channels);
  parentElement.appendChild(root);
  Object.assign(s, { root, bar, stage, view, minimap, status, channels });

  s.update = (data) => update(s, data);
  wireView(s);
  wireKeys(s);
  return s;
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text) node.textContent = text;
  return node;
}

// --- data from Python -------------------------------------------------------------------------------

async function update(s, data) {
  const first = s.data === null;
  s.data = data;
  if (first || s.bar.dataset.brushes !== JSON.stringify(data.brushes)) buildBar(s);
  if (first || s.displayKey !== data.display_key) loadDisplay(s);
  fitCanvas(s);
  const acked = new Set(data.acked || []);
  s.pending = s.pending.filter((op) => !acked.has(op.op));
  if (!s.fitted) { fit(s); s.fitted = true; }
  if (data.goto && data.goto.nonce !== s.lastGoto) {
    s.lastGoto = data.goto.nonce;
    showRect(s, data.goto);
  }
  await Promise.all([
    loadPicture(s, "tile", data.tile.channels, data.tile),
    loadPicture(s, "overview", data.overview.channels, data.overview),
    loadPicture(s, "scribbles", [data.tile.scribbles], data.tile),
    loadPicture(s, "overlay", data.tile.overlay ? [data.tile.overlay] : [], data.tile),
  ]);
  if (s.data !== data) return; // a newer update arrived while decoding
  draw(s);
  requestTileIfNeeded(s);
}

// The canvas takes the column's width, up to the size Python plans tiles for.
function fitCanvas(s) {
  const width = Math.max(240, Math.min(s.data.canvas.width, s.root.clientWidth - 2 || s.data.canvas.width));
  const height = s.data.canvas.height;
  if (s.view.width === width && s.view.height === height) return false;
  s.view.width = width;
  s.view.height = height;
  s.stage.style.width = `${width}px`;
  return true;
}

// A picture is one or more PNGs over one rectangle of the image: channels (composited here with the
// display settings) or an RGBA layer (scribbles, overlays) drawn as it is.
async function loadPicture(s, name, urls, rect) {
  const known = s.pictures[name];
  if (known && known.urls.length === urls.length && known.urls.every((url, i) => url === urls[i])) {
    known.rect = rect;
    return;
  }
  const images = await Promise.all(urls.map(decode));
  const picture = { urls, rect, canvas: null, grays: null };
  if (name === "tile" || name === "overview") {
    picture.grays = images.map(grayPixels);
    picture.size = images.length ? [images[0].height, images[0].width] : [0, 0];
    composite(s, picture);
  } else if (images.length) {
    picture.canvas = toCanvas(images[0]);
  }
  s.pictures[name] = picture;
}

function decode(url) {
  const image = new Image();
  image.src = url;
  return image.decode().then(() => image);
}

function toCanvas(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").drawImage(image, 0, 0);
  return canvas;
}

function grayPixels(image) {
  const rgba = toCanvas(image).getContext("2d").getImageData(0, 0, image.width, image.height).data;
  const gray = new Uint8Array(image.width * image.height);
  for (let i = 0; i < gray.length; i++) gray[i] = rgba[4 * i];
  return gray;
}

// --- channel display --------------------------------------------------------------------------------

function loadDisplay(s) {
  s.displayKey = s.data.display_key;
  const defaults = s.data.channels.map((channel) => ({ on: true, color: channel.color, low: 0, high: 100, gamma: 1 }));
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(s.displayKey)); } catch (error) { saved = null; }
  s.display = Array.isArray(saved) && saved.length === defaults.length ? saved : defaults;
  buildChannelControls(s);
}

function buildChannelControls(s) {
  s.channels.replaceChildren();
  s.data.channels.forEach((channel, index) => {
    const setting = s.display[index];
    const box = element("div", { class: "channel", "data-channel": channel.name });
    const on = element("input", { type: "checkbox", "aria-label": `show ${channel.name}` });
    on.checked = setting.on;
    const color = element("input", { type: "color", value: setting.color, "aria-label": `colour of ${channel.name}` });
    const low = slider(0, 100, 1, setting.low, `black level of ${channel.name}`);
    const high = slider(0, 100, 1, setting.high, `white level of ${channel.name}`);
    const gamma = slider(0.2, 3, 0.1, setting.gamma, `gamma of ${channel.name}`);
    const label = element("label");
    label.append(on, document.createTextNode(channel.name));
    box.append(label, color, element("span", {}, "black"), low, element("span", {}, "white"), high,
      element("span", {}, "γ"), gamma);
    const apply = () => {
      Object.assign(setting, { on: on.checked, color: color.value, low: +low.value, high: +high.value,
        gamma: +gamma.value });
      if (setting.high <= setting.low) setting.high = Math.min(100, setting.low + 1);
      try { localStorage.setItem(s.displayKey, JSON.stringify(s.display)); } catch (error) { /* private mode */ }
      for (const name of ["tile", "overview"]) if (s.pictures[name]) composite(s, s.pictures[name]);
      draw(s);
    };
    for (const input of [on, color, low, high, gamma]) input.addEventListener("input", apply);
    s.channels.appendChild(box);
  });
}

function slider(min, max, step, value, label) {
  const input = element("input", { type: "range", min, max, step, "aria-label": label });
  input.value = value;
  return input;
}

// 256-entry table per channel: grey level -> contribution to (r, g, b), with black/white levels and gamma.
function lookupTables(display) {
  return display.map((setting) => {
    const table = new Float32Array(256 * 3);
    if (!setting.on) return table;
    const rgb = [1, 3, 5].map((at) => parseInt(setting.color.slice(at, at + 2), 16));
    const low = setting.low / 100, span = Math.max(setting.high / 100 - low, 1e-3);
    for (let level = 0; level < 256; level++) {
      const stretched = Math.min(Math.max((level / 255 - low) / span, 0), 1) ** setting.gamma;
      for (let k = 0; k < 3; k++) table[3 * level + k] = stretched * rgb[k];
    }
    return table;
  });
}

function composite(s, picture) {
  const [height, width] = picture.size;
  if (!height || !width) { picture.canvas = null; return; }
  const tables = lookupTables(s.display);
  const out = new ImageData(width, height);
  const pixels = out.data;
  for (let i = 0, n = width * height; i < n; i++) {
    let r = 0, g = 0, b = 0;
    for (let c = 0; c < picture.grays.length; c++) {
      const at = 3 * picture.grays[c][i], table = tables[c];
      r += table[at]; g += table[at + 1]; b += table[at + 2];
    }
    pixels[4 * i] = r; pixels[4 * i + 1] = g; pixels[4 * i + 2] = b; pixels[4 * i + 3] = 255;
  }
  const canvas = picture.canvas || document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(out, 0, 0);
  picture.canvas = canvas;
}

// --- toolbar and keys -------------------------------------------------------------------------------

function buildBar(s) {
  const { brushes } = s.data;
  s.bar.dataset.brushes = JSON.stringify(brushes);
  s.bar.replaceChildren();
  s.brushButtons = brushes.map((brush, index) => {
    const button = element("button", { title: `${brush.label} (key ${brush.key})`, "data-brush": brush.label });
    const swatch = element("span", { class: "swatch" });
    swatch.style.background = brush.color;
    button.append(swatch, document.createTextNode(`${brush.label} [${brush.key}]`));
    button.addEventListener("click", () => chooseBrush(s, index));
    return button;
  });
  s.bar.append(...s.brushButtons);
  s.widthInput = element("input", { type: "number", min: 1, max: 60, step: 1, title: "Brush width in image pixels ([ and ])",
    "aria-label": "brush width" });
  s.widthInput.value = s.width;
  s.widthInput.style.width = "48px";
  s.widthInput.addEventListener("input", () => setWidth(s, +s.widthInput.value));
  const label = element("span", {}, "width");
  s.undoButton = button("Undo", "Undo your last edit (Ctrl+Z)", () => queueOp(s, "undo"));
  s.redoButton = button("Redo", "Redo (Ctrl+Shift+Z)", () => queueOp(s, "redo"));
  s.panButton = button("Pan", "Drag to move the view (H; or hold Space, or drag with the right button)",
    () => { s.panTool = !s.panTool; draw(s); });
  const fitButton = button("Fit", "The whole image (0)", () => { fit(s); draw(s); requestTileIfNeeded(s); });
  const oneButton = button("1:1", "One screen pixel per image pixel", () => zoomAt(s, 1 / s.scale));
  const inButton = button("+", "Zoom in (+ or the wheel)", () => zoomAt(s, ZOOM_STEP));
  const outButton = button("−", "Zoom out (- or the wheel)", () => zoomAt(s, 1 / ZOOM_STEP));
  s.bar.append(label, s.widthInput, s.undoButton, s.redoButton, s.panButton, fitButton, oneButton, inButton, outButton);
  chooseBrush(s, Math.min(s.brush, brushes.length - 1));
}

function button(text, title, onClick) {
  const node = element("button", { title }, text);
  node.addEventListener("click", onClick);
  return node;
}

function chooseBrush(s, index) {
  s.brush = index;
  s.brushButtons.forEach((node, i) => node.classList.toggle("on", i === index));
  draw(s);
}

function setWidth(s, width) {
  s.width = Math.min(Math.max(Math.round(width) || 1, 1), 60);
  s.widthInput.value = s.width;
  draw(s);
}

function wireKeys(s) {
  s.root.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT") return;
    const key = event.key.toLowerCase();
    const command = event.ctrlKey || event.metaKey;
    let handled = true;
    if (command && key === "z") queueOp(s, event.shiftKey ? "redo" : "undo");
    else if (command && key === "y") queueOp(s, "redo");
    else if (command) handled = false;
    else if (key === " ") { s.spaceHeld = true; draw(s); }
    else if (key === "[") setWidth(s, s.width - 1);
    else if (key === "]") setWidth(s, s.width + 1);
    else if (key === "h") { s.panTool = !s.panTool; draw(s); }
    else if (key === "+" || key === "=") zoomAt(s, ZOOM_STEP);
    else if (key === "-") zoomAt(s, 1 / ZOOM_STEP);
    else if (key === "0") { fit(s); draw(s); requestTileIfNeeded(s); }
    else {
      const index = s.data.brushes.findIndex((brush) => brush.key === key);
      if (index >= 0) chooseBrush(s, index); else handled = false;
    }
    if (handled) event.preventDefault();
  });
  s.root.addEventListener("keyup", (event) => {
    if (event.key === " ") { s.spaceHeld = false; draw(s); }
  });
}

// --- edits --------------------------------------------------------------------------------------------

function newId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

function queueOp(s, kind, fields = {}) {
  s.pending.push({ op: newId(), kind, ...fields });
  s.send("ops", s.pending);
  draw(s);
}

// --- view: zoom, pan, draw ---------------------------------------------------------------------------

function fit(s) {
  const { height, width } = s.data.image;
  s.scale = Math.min(s.view.width / width, s.view.height / height);
  s.origin = { row: (height - s.view.height / s.scale) / 2, col: (width - s.view.width / s.scale) / 2 };
}

function showRect(s, rect) {
  s.scale = Math.min(MAX_SCALE, s.view.width / rect.width, s.view.height / rect.height);
  s.origin = { row: rect.top + rect.height / 2 - s.view.height / s.scale / 2,
    col: rect.left + rect.width / 2 - s.view.width / s.scale / 2 };
  keepInside(s);
}

function minScale(s) {
  const { height, width } = s.data.image;
  return Math.min(s.view.width / width, s.view.height / height) / 2;
}

function zoomAt(s, factor, x = s.view.width / 2, y = s.view.height / 2) {
  const anchor = toImage(s, x, y);
  s.scale = Math.min(Math.max(s.scale * factor, minScale(s)), MAX_SCALE);
  s.origin = { row: anchor.row - y / s.scale, col: anchor.col - x / s.scale };
  keepInside(s);
  draw(s);
  scheduleTile(s);
}

// At least half the view stays on the image.
function keepInside(s) {
  const { height, width } = s.data.image;
  const viewH = s.view.height / s.scale, viewW = s.view.width / s.scale;
  s.origin.row = Math.min(Math.max(s.origin.row, -viewH / 2), height - viewH / 2);
  s.origin.col = Math.min(Math.max(s.origin.col, -viewW / 2), width - viewW / 2);
}

function toImage(s, x, y) {
  return { row: s.origin.row + y / s.scale, col: s.origin.col + x / s.scale };
}

function visibleRect(s) {
  const { height, width } = s.data.image;
  const top = Math.max(0, Math.floor(s.origin.row)), left = Math.max(0, Math.floor(s.origin.col));
  const bottom = Math.min(height, Math.ceil(s.origin.row + s.view.height / s.scale));
  const right = Math.min(width, Math.ceil(s.origin.col + s.view.width / s.scale));
  return { top, left, height: Math.max(1, bottom - top), width: Math.max(1, right - left) };
}

function wireView(s) {
  const { view, minimap } = s;
  view.addEventListener("contextmenu", (event) => event.preventDefault());
  view.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = view.getBoundingClientRect();
    zoomAt(s, event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  view.addEventListener("pointerdown", (event) => {
    s.root.focus({ preventScroll: true });
    view.setPointerCapture(event.pointerId);
    const x = event.offsetX, y = event.offsetY;
    if (event.button !== 0 || s.panTool || s.spaceHeld) {
      s.panning = { x, y, origin: { ...s.origin } };
    } else {
      const point = toImage(s, x, y);
      s.drawing = { points: [[point.row, point.col]], x, y };
    }
    draw(s);
  });
  view.addEventListener("pointermove", (event) => {
    const x = event.offsetX, y = event.offsetY;
    s.pointer = { x, y };
    if (s.panning) {
      s.origin = { row: s.panning.origin.row - (y - s.panning.y) / s.scale,
        col: s.panning.origin.col - (x - s.panning.x) / s.scale };
      keepInside(s);
    } else if (s.drawing && Math.hypot(x - s.drawing.x, y - s.drawing.y) >= MIN_POINT_SPACING) {
      const point = toImage(s, x, y);
      s.drawing.points.push([point.row, point.col]);
      Object.assign(s.drawing, { x, y });
    }
    draw(s);
  });
  const finish = () => {
    if (s.drawing) {
      const points = s.drawing.points.map(([row, col]) => [round2(row), round2(col)]);
      s.drawing = null;
      queueOp(s, "stroke", { brush: s.brush, width: s.width, points });
    }
    if (s.panning) { s.panning = null; scheduleTile(s); }
  };
  view.addEventListener("pointerup", finish);
  view.addEventListener("pointercancel", finish);
  view.addEventListener("pointerleave", () => { s.pointer = null; draw(s); });
  const jump = (event) => {
    if (event.type === "pointermove" && !(event.buttons & 1)) return;
    const { height, width } = s.data.image;
    const factor = Math.max(height, width) / MINIMAP_SIDE;
    const row = event.offsetY * factor, col = event.offsetX * factor;
    s.origin = { row: row - s.view.height / s.scale / 2, col: col - s.view.width / s.scale / 2 };
    keepInside(s);
    draw(s);
    scheduleTile(s);
  };
  minimap.addEventListener("pointerdown", (event) => { minimap.setPointerCapture(event.pointerId); jump(event); });
  minimap.addEventListener("pointermove", jump);
  new ResizeObserver(() => {
    if (s.data && fitCanvas(s)) { draw(s); scheduleTile(s); }
  }).observe(s.root);
}

function round2(value) {
  return Math.round(value * 100) / 100;
}

function scheduleTile(s) {
  clearTimeout(s.tileTimer);
  s.tileTimer = setTimeout(() => requestTileIfNeeded(s), TILE_DEBOUNCE_MS);
}

// Ask Python for a new tile when the one we have does not cover the view or is too coarse for the zoom.
function requestTileIfNeeded(s) {
  if (s.panning || !s.data) return;
  const wanted = visibleRect(s);
  const tile = s.data.tile;
  const covered = wanted.top >= tile.top && wanted.left >= tile.left && wanted.top + wanted.height <= tile.top + tile.height
    && wanted.left + wanted.width <= tile.left + tile.width;
  // Python gives the view plus a margin at min(1, scale) tile px per image px, capped by the tile size
  const best = Math.min(1, s.scale, s.data.max_tile_side / Math.max(wanted.height, wanted.width));
  const sharp = tile.resolution >= 0.7 * best;
  if (covered && sharp) return;
  s.send("view", { ...wanted, scale: Math.round(s.scale * 1000) / 1000 });
}

function draw(s) {
  if (!s.data) return;
  const context = s.view.getContext("2d");
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.fillStyle = "#202020";
  context.fillRect(0, 0, s.view.width, s.view.height);
  context.setTransform(s.scale, 0, 0, s.scale, -s.origin.col * s.scale, -s.origin.row * s.scale);
  context.imageSmoothingEnabled = s.scale < 1;
  const { height, width } = s.data.image;
  for (const name of ["overview", "tile", "scribbles", "overlay"]) {
    const picture = s.pictures[name];
    if (!picture || !picture.canvas) continue;
    const rect = name === "overview" ? { top: 0, left: 0, height, width } : picture.rect;
    context.drawImage(picture.canvas, rect.left, rect.top, rect.width, rect.height);
  }
  const strokes = s.pending.filter((op) => op.kind === "stroke");
  if (s.drawing) strokes.push({ brush: s.brush, width: s.width, points: s.drawing.points });
  for (const stroke of strokes) drawStroke(context, s.data.brushes[stroke.brush], stroke);
  context.setTransform(1, 0, 0, 1, 0, 0);
  drawMarks(s, context);
  drawCursor(s, context);
  drawMinimap(s);
  describe(s);
}

function drawStroke(context, brush, stroke) {
  context.strokeStyle = brush.eraser ? "rgba(128, 128, 128, 0.8)" : brush.color;
  context.fillStyle = context.strokeStyle;
  context.lineWidth = stroke.width;
  context.lineCap = "round";
  context.lineJoin = "round";
  const [first, ...rest] = stroke.points;
  context.beginPath();
  if (!rest.length) {
    context.arc(first[1], first[0], stroke.width / 2, 0, 2 * Math.PI);
    context.fill();
    return;
  }
  context.moveTo(first[1], first[0]);
  for (const [row, col] of rest) context.lineTo(col, row);
  context.stroke();
}

// Suggested regions: a frame and its number, in screen pixels so they read at any zoom.
function drawMarks(s, context) {
  context.font = "bold 13px sans-serif";
  context.lineWidth = 2;
  for (const mark of s.data.marks) {
    const x = (mark.left - s.origin.col) * s.scale, y = (mark.top - s.origin.row) * s.scale;
    const side = Math.max(mark.size * s.scale, 6);
    context.strokeStyle = "#00ffff";
    context.strokeRect(x, y, side, side);
    const width = context.measureText(mark.label).width + 6;
    context.fillStyle = "rgba(0, 0, 0, 0.7)";
    context.fillRect(x, y - 17, width, 16);
    context.fillStyle = "#00ffff";
    context.fillText(mark.label, x + 3, y - 4);
  }
}

function drawCursor(s, context) {
  s.stage.classList.toggle("panning", s.panTool || s.spaceHeld || !!s.panning);
  if (!s.pointer || s.panTool || s.spaceHeld || s.panning) return;
  const radius = Math.max(s.width * s.scale / 2, 1.5);
  context.lineWidth = 1.5;
  context.strokeStyle = s.data.brushes[s.brush].color;
  context.beginPath();
  context.arc(s.pointer.x, s.pointer.y, radius, 0, 2 * Math.PI);
  context.stroke();
}

function drawMinimap(s) {
  const { height, width } = s.data.image;
  const factor = MINIMAP_SIDE / Math.max(height, width);
  s.minimap.width = Math.max(1, Math.round(width * factor));
  s.minimap.height = Math.max(1, Math.round(height * factor));
  const context = s.minimap.getContext("2d");
  const overview = s.pictures.overview;
  if (overview && overview.canvas) context.drawImage(overview.canvas, 0, 0, s.minimap.width, s.minimap.height);
  const rect = visibleRect(s);
  context.strokeStyle = "#00ffff";
  context.lineWidth = 2;
  context.strokeRect(rect.left * factor, rect.top * factor, rect.width * factor, rect.height * factor);
}

function describe(s) {
  const rect = visibleRect(s);
  const { height, width } = s.data.image;
  const brush = s.data.brushes[s.brush];
  const waiting = s.pending.length ? ` · ${s.pending.length} edit(s) being saved` : " · all edits saved";
  s.status.textContent = `Zoom ${s.scale.toFixed(2)} screen px per image px · rows ${rect.top}–${rect.top + rect.height}, `
    + `columns ${rect.left}–${rect.left + rect.width} of ${height} × ${width} · brush ${brush.label}, ${s.width} px`
    + `${waiting}. Wheel: zoom · right-drag, Space-drag or H: pan · Ctrl+Z / Ctrl+Shift+Z: undo / redo · `
    + "keys in [ ] pick a brush, [ and ] change its width.";
  Object.assign(s.root.dataset, { scale: s.scale.toFixed(3), pending: String(s.pending.length),
    view: `${rect.top},${rect.left},${rect.height},${rect.width}`, resolution: String(s.data.tile.resolution) });
  s.undoButton.disabled = !s.data.history[0] && !s.pending.some((op) => op.kind === "redo");
  s.redoButton.disabled = !s.data.history[1] && !s.pending.some((op) => op.kind === "undo");
  s.panButton.classList.toggle("on", s.panTool);
}
