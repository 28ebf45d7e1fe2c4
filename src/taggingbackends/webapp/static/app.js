// tagging-backend view: look at the larvae, walk the review queue, correct tags, save, retrain.
import { api } from "./api.js";
import { Arena } from "./arena.js";
import { Ethogram, Timeline, nearestIndex } from "./charts.js";

const CHUNK = 5;            // seconds of spines fetched per request
const MAX_CHUNKS = 24;
const UNLABELLED = "#555b66";
const $ = (id) => document.getElementById(id);

const state = {
  session: null, names: [], colors: [], t: 0, playing: false, speed: 1,
  selected: null, detail: null, selection: null, loop: null,
  rows: new Map(), order: [], queue: [], reviewIndex: -1,
  chunks: new Map(), dirty: false, retrainPolling: false, drawn: 0,
};

const arena = new Arena($("arena"), { onSelect: (id) => select(id) });
arena.onView = () => requestDraw();
const ethogram = new Ethogram($("ethogram"), $("ethogram-scroll"), {
  onPick: (id, t) => { select(id); seek(t); },
});
const timeline = new Timeline($("timeline"), {
  onSeek: (t) => { state.selection = null; seek(t); },
  onSelect: (i0, i1) => { state.selection = [i0, i1]; updateInfo(); requestDraw(); },
  onView: () => requestDraw(),
});

function status(text, kind = "") { const el = $("status"); el.textContent = text; el.className = `status ${kind}`; }

function setState(answer) {
  if (answer.dirty !== undefined) state.dirty = answer.dirty;
  $("dirty").hidden = !state.dirty;
  if (answer.can_undo !== undefined) $("undo").disabled = !answer.can_undo;
  if (answer.can_redo !== undefined) $("redo").disabled = !answer.can_redo;
  if (answer.save_file) $("save").title = `Save to ${answer.save_file} (Ctrl+S)`;
}

// --------------------------------------------------------------- loading
async function load() {
  const session = await api.session();
  state.session = session; state.names = session.names; state.colors = session.colors;
  state.t = session.t0;
  $("title").textContent = `${session.run} · ${session.labels_file || session.tracking}`;
  document.title = `${session.run} – tagging-backend view`;
  $("notes").textContent = [`edits are saved to ${session.save_file}`, ...session.notes].join(" · ");
  setState(session);
  buildPalette();
  arena.resize(); arena.fit(session.bounds);
  await Promise.all([loadEthogram(), loadQueue(), chunkAt(state.t)]);
  const retrain = await api.retrainStatus();
  const [frozen, tuned] = retrain.iterations || ["", ""];   // empty: the fast fine-tune
  $("it-frozen").value = frozen; $("it-tuned").value = tuned;
  $("scope").value = retrain.scope;
  showRetrain(retrain);
  if (retrain.state === "running") pollRetrain();
  requestDraw();
}

async function loadEthogram() {
  const { rows } = await api.ethogram();
  state.rows = new Map(rows.map((row) => [row.id, row]));
  state.order = rows.map((row) => row.id);
}

async function loadQueue() {
  const queue = await api.review();
  state.queue = queue.segments;
  $("queue-info").textContent = `${queue.segments.length} segments, ranked by ${queue.ranked_by}`;
  renderQueue();
}

function renderQueue() {
  const list = $("queue");
  list.replaceChildren();
  state.queue.slice(0, 100).forEach((segment, i) => {
    const item = document.createElement("li");
    item.textContent = `#${segment.larva} ${segment.start.toFixed(2)}–${segment.end.toFixed(2)} s ${segment.label} (${segment.score.toFixed(2)})`;
    item.style.borderLeftColor = state.colors[state.names.indexOf(segment.label)] || UNLABELLED;
    if (segment.done >= 1) item.classList.add("done");
    if (i === state.reviewIndex) item.classList.add("current");
    item.addEventListener("click", () => goReview(i));
    list.appendChild(item);
  });
  const current = list.querySelector(".current");
  if (current) current.scrollIntoView({ block: "nearest" });
}

function chunkAt(t) {
  const k = Math.floor((t - state.session.t0) / CHUNK);
  if (!state.chunks.has(k)) {
    const t0 = state.session.t0 + k * CHUNK;
    const entry = { data: null };
    entry.promise = api.frames(t0, t0 + CHUNK).then((data) => {
      entry.data = new Map(data.tracks.map((track) => [track.id, track]));
      requestDraw();
      return entry.data;
    });
    state.chunks.set(k, entry);
    if (state.chunks.size > MAX_CHUNKS) state.chunks.delete(state.chunks.keys().next().value);
  }
  return state.chunks.get(k).promise;
}

function chunkData(t) {
  const k = Math.floor((t - state.session.t0) / CHUNK);
  const entry = state.chunks.get(k);
  if (!entry) { chunkAt(t); return null; }
  if (state.playing && t + 2 > state.session.t0 + (k + 1) * CHUNK) chunkAt(t + CHUNK); // prefetch
  return entry.data;
}

// ----------------------------------------------------------------- labels
function codeAt(id, t) {
  if (state.detail && state.detail.id === id) {
    const d = state.detail;
    if (t < d.t[0] || t > d.t[d.t.length - 1] + 1e-6) return -1;
    return d.labels[nearestIndex(d.t, t)];
  }
  const row = state.rows.get(id);
  if (!row) return -1;
  const bouts = row.bouts;
  let lo = 0, hi = bouts.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (bouts[mid][0] <= t + 1e-9) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found >= 0 && t < bouts[found][1] ? bouts[found][2] : -1;
}

function colorOf(code) { return code >= 0 ? state.colors[code] : UNLABELLED; }

function buildPalette() {
  const list = $("palette");
  list.replaceChildren();
  state.names.forEach((name, i) => {
    const item = document.createElement("li");
    const key = document.createElement("kbd"); key.textContent = i < 9 ? String(i + 1) : "";
    const swatch = document.createElement("span"); swatch.className = "swatch"; swatch.style.background = state.colors[i];
    const label = document.createElement("span"); label.textContent = name;
    item.append(key, swatch, label);
    item.title = `tag the selection as ${name}`;
    item.addEventListener("click", () => tag(i));
    list.appendChild(item);
  });
  const clear = document.createElement("li");
  const key = document.createElement("kbd"); key.textContent = "Del";
  const swatch = document.createElement("span"); swatch.className = "swatch"; swatch.style.background = UNLABELLED;
  const label = document.createElement("span"); label.textContent = "clear (unlabelled)";
  clear.append(key, swatch, label);
  clear.title = "clear the selection (unlabelled steps are not used for training)";
  clear.addEventListener("click", () => tag(null));
  list.appendChild(clear);
}

// -------------------------------------------------------------- selection
async function select(id) {
  if (id === null || id === undefined) return;
  if (state.selected !== id) {
    state.selected = id; state.selection = null;
    state.detail = await api.larva(id);
    timeline.setDetail(state.detail);
    timeline.follow(state.t);
    $("timeline-title").textContent = `Larva #${id}: tags, edits and probabilities`;
  }
  updateInfo(); requestDraw();
}

function currentStep() {
  const d = state.detail;
  return d ? nearestIndex(d.t, state.t) : null;
}

function updateInfo() {
  const d = state.detail;
  if (!d) return;
  const i = currentStep();
  const code = d.labels[i];
  const lines = [`#${d.id} · ${d.t.length} steps · ${d.t[0].toFixed(2)}–${d.t[d.t.length - 1].toFixed(2)} s`,
    `step ${i}: ${code >= 0 ? state.names[code] : "unlabelled"}${d.edited[i] ? " (edited)" : ""}` +
    (d.probabilities && code >= 0 ? ` · p = ${(d.probabilities[i][code] || 0).toFixed(2)}` : "")];
  if (state.selection) {
    const [a, b] = state.selection;
    lines.push(`selected: steps ${a}–${b} (${d.t[a].toFixed(2)}–${d.t[b].toFixed(2)} s) · press 1–9 to tag`);
  }
  $("selection-info").textContent = lines.join("\n");
}

// --------------------------------------------------------------- playback
function seek(t) {
  const s = state.session;
  state.t = Math.min(Math.max(t, s.t0), s.t1);
  timeline.follow(state.t);
  chunkAt(state.t);
  updateInfo(); requestDraw();
}

function setPlaying(playing) {
  state.playing = playing;
  $("play").textContent = playing ? "Pause" : "Play";
  state.last = performance.now();
  if (playing) requestAnimationFrame(tick);
}

function step(direction) {
  setPlaying(false);
  const d = state.detail;
  if (d) {
    const i = Math.min(Math.max(currentStep() + direction, 0), d.t.length - 1);
    seek(d.t[i]);
  } else seek(state.t + direction * state.session.dt);
}

function tick(now) {
  if (!state.playing) return;
  const elapsed = (now - state.last) / 1000; state.last = now;
  let t = state.t + elapsed * state.speed;
  if (state.loop) {   // a segment loops, also one that ends with the recording
    const loopEnd = Math.min(state.loop[1], state.session.t1);
    if (t >= loopEnd || t < state.loop[0]) t = state.loop[0];
  }
  if (t >= state.session.t1) { t = state.session.t1; setPlaying(false); }
  state.t = t;
  timeline.follow(t);
  draw();
  if (state.playing) requestAnimationFrame(tick);
}

let drawPending = false;
function requestDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; draw(); });
}

function larvaeAt(t) {
  const data = chunkData(t);
  if (!data) return null;
  const larvae = [];
  const tolerance = 1.5 * state.session.dt;
  for (const [id, track] of data) {
    const i = nearestIndex(track.t, t);
    if (Math.abs(track.t[i] - t) > tolerance) continue;
    const code = codeAt(id, t);
    larvae.push({ id, spine: track.spine[i], outline: track.outline ? track.outline[i] : null,
                  color: colorOf(code), selected: id === state.selected });
  }
  return larvae;
}

function draw() {
  const s = state.session;
  if (!s) return;
  const larvae = larvaeAt(state.t);
  if (larvae) { arena.draw(larvae, s.head); state.drawn += 1; }
  const review = state.queue[state.reviewIndex];
  ethogram.draw({ rows: state.order.map((id) => state.rows.get(id)), colors: state.colors, t0: s.t0, t1: s.t1,
                  cursor: state.t, selected: state.selected, review });
  const segments = state.queue.filter((q) => q.larva === state.selected)
    .map((q) => ({ ...q, current: q === review }));
  timeline.draw({ colors: state.colors, names: state.names, cursor: state.t, selection: state.selection,
                  segments, width: $("timeline-section").clientWidth - 2 });
  $("clock").textContent = `t = ${state.t.toFixed(2)} s`;
  $("scrubber").value = String(Math.round((state.t - s.t0) / Math.max(s.t1 - s.t0, 1e-9) * 1000));
  $("loop").hidden = !state.loop;
  if (!state.playing) updateInfo();
}

// ----------------------------------------------------------------- review
async function goReview(i) {
  if (!state.queue.length) { status("the review queue is empty"); return; }
  i = (i + state.queue.length) % state.queue.length;
  state.reviewIndex = i;
  const segment = state.queue[i];
  await select(segment.larva);
  state.selection = [segment.first, segment.last];
  const pad = Math.max(0.3, 2 * state.session.dt);
  state.loop = [segment.start - pad, segment.end + pad];
  const span = Math.max(10, 4 * (segment.end - segment.start));
  timeline.v0 = segment.start - span / 3; timeline.v1 = timeline.v0 + span;
  seek(segment.start);
  await focusOn(segment.larva, segment.start);
  renderQueue();
  status(`review ${i + 1}/${state.queue.length}: larva #${segment.larva}, ${segment.label}, score ${segment.score.toFixed(2)}`);
  setPlaying(true);
}

async function focusOn(id, t = state.t) {    // the larva as it is at time t (playback may move on meanwhile)
  const data = await chunkAt(t);
  const track = data.get(id);
  if (!track) return;
  arena.focus(track.spine[nearestIndex(track.t, t)]);
  requestDraw();
}

// ---------------------------------------------------------------- editing
async function tag(code) {
  const d = state.detail;
  if (!d) { status("select a larva first", "warn"); return; }
  const [first, last] = state.selection || [currentStep(), currentStep()];
  const label = code === null ? null : state.names[code];
  try {
    applyAnswer(await api.edit(d.id, first, last, label));
    status(`${label === null ? "cleared" : `tagged ${label}`}: larva #${d.id}, steps ${first}–${last}`);
    refreshQueueDone();
  } catch (error) { status(error.message, "error"); }
}

function applyAnswer(answer) {
  state.rows.set(answer.larva, answer.row);
  if (state.detail && state.detail.id === answer.larva) {
    state.detail.labels = answer.labels; state.detail.edited = answer.edited; state.detail.previous = answer.previous;
  }
  setState(answer);
  requestDraw();
}

async function refreshQueueDone() {
  const queue = await api.review();
  state.queue = queue.segments; renderQueue();
}

async function undo(redo = false) {
  try {
    const answer = redo ? await api.redo() : await api.undo();
    applyAnswer(answer);
    status(`${redo ? "redone" : "undone"}: larva #${answer.larva}`);
    refreshQueueDone();
  } catch (error) { status(error.message, "warn"); }
}

async function save() {
  try {
    const answer = await api.save(null, false);
    setState(answer);
    status(`saved ${answer.saved}${answer.backup ? ` (previous version in ${answer.backup})` : ""}`, "ok");
    return true;
  } catch (error) { status(`not saved: ${error.message}`, "error"); return false; }
}

// ---------------------------------------------------------------- retrain
async function retrain() {
  if (state.dirty) {
    if (!window.confirm("Retraining uses saved edits. Save your edits now and retrain?")) return;
    if (!await save()) return;
  }
  const given = [parseInt($("it-frozen").value, 10), parseInt($("it-tuned").value, 10)];
  const iterations = given.some(Number.isNaN) ? null : given;   // null: the fast fine-tune
  try {
    showRetrain(await api.retrain(iterations, $("scope").value));
    pollRetrain();
  } catch (error) { status(`retrain: ${error.message}`, "error"); }
}

function showRetrain(s) {
  const progress = $("retrain-progress");
  $("retrain").disabled = s.state === "running";
  progress.hidden = s.state !== "running";
  if (s.total) { progress.max = s.total; progress.value = s.done; } else progress.removeAttribute("value");
  const loss = s.loss !== null && s.loss !== undefined ? ` · loss ${s.loss.toFixed(3)}` : "";
  const texts = { idle: "fine-tunes the tagger on every saved edit in this folder, then tags this file again",
    running: `${s.stage} ${s.total ? `${s.done}/${s.total}` : ""}${loss} · ${s.elapsed || 0} s`,
    done: `done in ${s.elapsed} s: ${s.message}`, failed: `failed: ${s.message}` };
  $("retrain-status").textContent = texts[s.state] || s.state;
  const changes = s.result && s.result.changes;
  const box = $("changes");
  box.replaceChildren();
  if (s.state === "done" && changes) {
    const head = document.createElement("div");
    head.textContent = `model ${s.result.model.split("/").pop()} (from ${s.result.edited_steps} edited steps of ` +
      `${s.result.edited_larvae} larvae); ${changes.changed} of ${changes.steps} steps changed ` +
      `(${(100 * changes.fraction).toFixed(1)} %); new predictions in ${s.result.predicted}`;
    box.appendChild(head);
    for (const tr of changes.transitions) {
      const line = document.createElement("div");
      line.textContent = `${tr.from} → ${tr.to}: ${tr.steps}`;
      box.appendChild(line);
    }
    const larvae = Object.entries(changes.larvae);
    if (larvae.length) {
      const line = document.createElement("div");
      line.append("larvae: ");
      for (const [id, n] of larvae.slice(0, 30)) {
        const link = document.createElement("a");
        link.href = "#"; link.textContent = `#${id} (${n})`;
        link.addEventListener("click", (event) => { event.preventDefault(); select(Number(id)); });
        line.append(link, " ");
      }
      box.appendChild(line);
    }
  }
}

async function pollRetrain() {
  if (state.retrainPolling) return;
  state.retrainPolling = true;
  try {
    for (;;) {
      const s = await api.retrainStatus();
      showRetrain(s);
      if (s.state !== "running") {
        if (s.state === "done") await afterRetrain();
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally { state.retrainPolling = false; }
}

async function afterRetrain() {
  const session = await api.session();
  setState(session);
  state.session = session;
  await Promise.all([loadEthogram(), loadQueue()]);
  if (state.selected !== null) {
    state.detail = await api.larva(state.selected); timeline.setDetail(state.detail); timeline.follow(state.t);
  }
  status("retrained: the timeline's 'before' strip shows the previous tags (yellow marks: changed)", "ok");
  requestDraw();
}

// --------------------------------------------------------------- keyboard
document.addEventListener("keydown", (event) => {
  const tagName = event.target.tagName;
  if (tagName === "INPUT" || tagName === "SELECT" || tagName === "TEXTAREA") return;
  const key = event.key, ctrl = event.ctrlKey || event.metaKey;
  if (ctrl && (key === "z" || key === "Z")) { event.preventDefault(); undo(event.shiftKey); return; }
  if (ctrl && (key === "y" || key === "Y")) { event.preventDefault(); undo(true); return; }
  if (ctrl && (key === "s" || key === "S")) { event.preventDefault(); save(); return; }
  if (ctrl || event.altKey) return;
  if (key === " ") { event.preventDefault(); setPlaying(!state.playing); }
  else if (key === "ArrowRight") { event.preventDefault(); step(1); }
  else if (key === "ArrowLeft") { event.preventDefault(); step(-1); }
  else if (key === "n" || key === "N") goReview(state.reviewIndex + 1);
  else if (key === "p" || key === "P") goReview(state.reviewIndex - 1);
  else if (key === "Delete" || key === "Backspace") { event.preventDefault(); tag(null); }
  else if (key === "Escape") { state.selection = null; state.loop = null; updateInfo(); requestDraw(); }
  else if (key === "+" || key === "=") changeSpeed(1);
  else if (key === "-") changeSpeed(-1);
  else if (key === "?") $("help").hidden = !$("help").hidden;
  else if (key === "f" || key === "F") { if (state.selected !== null) focusOn(state.selected); }
  else if (key === "0") { arena.fit(state.session.bounds); requestDraw(); }
  else if (/^[1-9]$/.test(key) && Number(key) <= state.names.length) tag(Number(key) - 1);
});

function changeSpeed(direction) {
  const options = [...$("speed").options];
  const i = Math.min(Math.max(options.findIndex((o) => o.selected) + direction, 0), options.length - 1);
  $("speed").selectedIndex = i; state.speed = Number(options[i].value);
}

// ----------------------------------------------------------------- wiring
$("play").addEventListener("click", () => setPlaying(!state.playing));
$("step-back").addEventListener("click", () => step(-1));
$("step-forward").addEventListener("click", () => step(1));
$("speed").addEventListener("change", (event) => { state.speed = Number(event.target.value); });
$("scrubber").addEventListener("input", (event) => {
  const s = state.session;
  seek(s.t0 + Number(event.target.value) / 1000 * (s.t1 - s.t0));
});
$("undo").addEventListener("click", () => undo(false));
$("redo").addEventListener("click", () => undo(true));
$("save").addEventListener("click", () => save());
$("retrain").addEventListener("click", () => retrain());
$("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
$("help-close").addEventListener("click", () => { $("help").hidden = true; });
window.addEventListener("resize", () => { arena.resize(); requestDraw(); });
window.addEventListener("beforeunload", (event) => {
  if (state.dirty) { event.preventDefault(); event.returnValue = ""; }
});

// what the browser tests (and curious users, in the console) can reach
window.app = {
  state, seek, select, goReview, tag, save, setPlaying, ethogram, timeline,
  screenPointOf(id) {          // canvas (CSS pixel) position of the spine midpoint of larva `id` now
    const data = chunkData(state.t);
    const track = data && data.get(id);
    if (!track) return null;
    const spine = track.spine[nearestIndex(track.t, state.t)];
    const [x, y] = spine[Math.floor(spine.length / 2)];
    return arena.toScreen(x, y);
  },
  chunkReady: (t) => chunkAt(t === undefined ? state.t : t),
};
window.app.ready = load().then(() => true, (error) => { status(`cannot load: ${error.message}`, "error"); throw error; });
