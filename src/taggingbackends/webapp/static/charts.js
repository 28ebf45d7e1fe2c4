// The ethogram (every larva, one row each) and the timeline of the selected larva.

const UNLABELLED = "#555b66";
const LEFT = 64;          // pixels of captions on the left of both charts

function setupCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.style.width = `${width}px`; canvas.style.height = `${height}px`;
  canvas.width = Math.floor(width * ratio); canvas.height = Math.floor(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return context;
}

export function lowerBound(array, value) {   // first index with array[i] >= value
  let lo = 0, hi = array.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (array[mid] < value) lo = mid + 1; else hi = mid; }
  return lo;
}

export function nearestIndex(times, t) {
  const i = lowerBound(times, t);
  if (i <= 0) return 0;
  if (i >= times.length) return times.length - 1;
  return (t - times[i - 1] <= times[i] - t) ? i - 1 : i;
}

function timeAxis(c, x0, x1, t0, t1, y) {
  const span = t1 - t0;
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600];
  const step = steps.find((s) => (x1 - x0) * s / span >= 60) || 3600;
  c.fillStyle = "#9aa3b0"; c.font = "10px sans-serif"; c.textAlign = "center";
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const x = x0 + (t - t0) / span * (x1 - x0);
    if (x < x0 || x > x1) continue;
    c.fillRect(x, y, 1, 4);
    c.fillText(step < 1 ? t.toFixed(1) : t.toFixed(0), x, y + 13);
  }
  c.textAlign = "left";
}

export class Ethogram {
  constructor(canvas, scroll, { onPick }) {
    this.canvas = canvas; this.scroll = scroll; this.onPick = onPick;
    canvas.addEventListener("click", (event) => {
      if (!this.rows) return;
      const row = Math.floor((event.offsetY - 2) / this.rowHeight);
      if (row < 0 || row >= this.rows.length) return;
      this.onPick(this.rows[row].id, this.timeAt(event.offsetX));
    });
  }

  timeAt(x) { return this.t0 + (x - LEFT) / (this.width - LEFT - 8) * (this.t1 - this.t0); }
  xAt(t) { return LEFT + (t - this.t0) / (this.t1 - this.t0) * (this.width - LEFT - 8); }

  draw({ rows, colors, t0, t1, cursor, selected, review }) {
    this.rows = rows; this.t0 = t0; this.t1 = Math.max(t1, t0 + 1e-6);
    this.width = this.scroll.clientWidth;
    const available = Math.max(60, this.scroll.clientHeight - 20);
    this.rowHeight = Math.max(3, Math.min(14, Math.floor(available / Math.max(rows.length, 1))));
    const height = rows.length * this.rowHeight + 22;
    const c = setupCanvas(this.canvas, this.width, height);
    c.fillStyle = "#1b1f26"; c.fillRect(0, 0, this.width, height);
    rows.forEach((row, r) => {
      const y = 2 + r * this.rowHeight, h = Math.max(2, this.rowHeight - 1);
      if (row.id === selected) { c.fillStyle = "#39414f"; c.fillRect(0, y - 1, this.width, h + 2); }
      if (this.rowHeight >= 7) {
        c.fillStyle = row.id === selected ? "#ffffff" : "#9aa3b0";
        c.font = `${Math.min(10, this.rowHeight)}px sans-serif`;
        c.fillText(`#${row.id}`, 4, y + h - 1);
      }
      for (const [start, end, code, p, edited] of row.bouts) {
        const x = this.xAt(start), w = Math.max(1, this.xAt(end) - x);
        c.globalAlpha = Math.max(0.15, p); c.fillStyle = colors[code] || UNLABELLED; c.fillRect(x, y, w, h);
        c.globalAlpha = 1;
        if (edited && h >= 4) { c.fillStyle = "#ffffff"; c.fillRect(x, y + h - 1, w, 1); }
      }
    });
    if (review) {
      c.strokeStyle = "#ffd54a"; c.lineWidth = 1.5;
      const r = rows.findIndex((row) => row.id === review.larva);
      if (r >= 0) {
        const x = this.xAt(review.start);
        c.strokeRect(x - 1, 1 + r * this.rowHeight, Math.max(3, this.xAt(review.end) - x + 2), this.rowHeight + 1);
      }
    }
    const x = this.xAt(cursor);
    c.fillStyle = "#ffffff"; c.fillRect(x, 0, 1, height - 20);
    timeAxis(c, LEFT, this.width - 8, this.t0, this.t1, height - 20);
  }
}

export class Timeline {
  constructor(canvas, { onSeek, onSelect, onView }) {
    this.canvas = canvas; this.onSeek = onSeek; this.onSelect = onSelect; this.onView = onView;
    this.v0 = 0; this.v1 = 1; this.detail = null;
    let drag = null;
    canvas.addEventListener("mousedown", (event) => {
      if (!this.detail) return;
      const i = this.stepAt(event.offsetX);
      if (event.shiftKey && this.anchor !== null && this.anchor !== undefined) {
        this.onSelect(Math.min(this.anchor, i), Math.max(this.anchor, i));
        return;
      }
      drag = { x: event.offsetX, i, moved: false };
      this.anchor = i;
    });
    window.addEventListener("mousemove", (event) => {
      if (!drag) return;
      const x = event.clientX - canvas.getBoundingClientRect().left;
      if (Math.abs(x - drag.x) > 3) drag.moved = true;
      if (drag.moved) { const i = this.stepAt(x); this.onSelect(Math.min(drag.i, i), Math.max(drag.i, i)); }
    });
    window.addEventListener("mouseup", () => {
      if (drag && !drag.moved) this.onSeek(this.detail.t[drag.i], drag.i);
      drag = null;
    });
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const t = this.timeAt(event.offsetX), factor = Math.exp(event.deltaY * 0.0015);
      this.v0 = t - (t - this.v0) * factor; this.v1 = t + (this.v1 - t) * factor;
      this.onView();
    }, { passive: false });
  }

  timeAt(x) { return this.v0 + (x - LEFT) / (this.width - LEFT - 8) * (this.v1 - this.v0); }
  xAt(t) { return LEFT + (t - this.v0) / (this.v1 - this.v0) * (this.width - LEFT - 8); }
  stepAt(x) { return nearestIndex(this.detail.t, this.timeAt(x)); }

  setDetail(detail) {
    this.detail = detail; this.anchor = null;
    if (detail) {
      const t0 = detail.t[0], t1 = detail.t[detail.t.length - 1];
      this.v0 = t0; this.v1 = Math.min(t1, t0 + 60) + 1e-3;
    }
  }

  follow(t) {        // keep the cursor in view, within the larva's track
    if (!this.detail) return;
    const d = this.detail, first = d.t[0], last = d.t[d.t.length - 1];
    t = Math.min(Math.max(t, first), last);
    const span = this.v1 - this.v0;
    if (t < this.v0 || t > this.v1) {
      this.v0 = Math.max(first - 0.05 * span, t - 0.2 * span); this.v1 = this.v0 + span;
    }
  }

  draw({ colors, names, cursor, selection, segments, width }) {
    this.width = width;
    const hasPrevious = this.detail && this.detail.previous;
    const height = hasPrevious ? 168 : 150;
    const c = setupCanvas(this.canvas, width, height);
    c.fillStyle = "#1b1f26"; c.fillRect(0, 0, width, height);
    const d = this.detail;
    if (!d) { c.fillStyle = "#9aa3b0"; c.font = "12px sans-serif"; c.fillText("select a larva", LEFT, 40); return; }
    const dt = d.t.length > 1 ? (d.t[d.t.length - 1] - d.t[0]) / (d.t.length - 1) : 0.1;
    const first = Math.max(0, lowerBound(d.t, this.v0) - 1), last = Math.min(d.t.length, lowerBound(d.t, this.v1) + 1);
    const x = (i) => this.xAt(d.t[i]), w = (i) => Math.max(1, this.xAt(d.t[i] + dt) - this.xAt(d.t[i]));
    const rows = { tags: [4, 20], edited: [26, 5] };
    let y = 34;
    if (hasPrevious) { rows.previous = [y, 12]; y += 18; }
    rows.p = [y, height - y - 24];
    c.fillStyle = "#9aa3b0"; c.font = "10px sans-serif";
    c.fillText("tags", 6, rows.tags[0] + 14); c.fillText("edited", 6, rows.edited[0] + 6);
    if (hasPrevious) c.fillText("before", 6, rows.previous[0] + 10);
    c.fillText(d.probabilities ? "probability" : "(no prob.)", 6, rows.p[0] + 12);
    c.save(); c.beginPath(); c.rect(LEFT, 0, width - LEFT - 8, height); c.clip();
    for (let i = first; i < last; i++) {
      const code = d.labels[i];
      c.fillStyle = code >= 0 ? colors[code] : UNLABELLED;
      c.fillRect(x(i), rows.tags[0], w(i), rows.tags[1]);
      if (d.edited[i]) { c.fillStyle = "#ffffff"; c.fillRect(x(i), rows.edited[0], w(i), rows.edited[1]); }
      if (hasPrevious) {
        const before = d.previous[i];
        c.fillStyle = before >= 0 ? colors[before] : UNLABELLED;
        c.fillRect(x(i), rows.previous[0], w(i), rows.previous[1]);
        if (before !== code) { c.fillStyle = "#ffd54a"; c.fillRect(x(i), rows.previous[0] + rows.previous[1], w(i), 2); }
      }
      if (d.probabilities) {
        let top = rows.p[0] + rows.p[1];
        const row = d.probabilities[i];
        for (let k = 0; k < row.length; k++) {
          const h = (row[k] || 0) * rows.p[1];
          if (h <= 0) continue;
          c.fillStyle = colors[k]; c.fillRect(x(i), top - h, w(i), h); top -= h;
        }
      }
    }
    for (const s of segments || []) {     // review segments: a mark above, the current one boxed
      if (s.end < this.v0 || s.start > this.v1) continue;
      const x0 = this.xAt(s.start), x1 = this.xAt(s.end);
      c.fillStyle = "#ffd54a"; c.fillRect(x0, 0, Math.max(2, x1 - x0), 3);
      if (s.current) { c.strokeStyle = "#ffd54a"; c.lineWidth = 2; c.strokeRect(x0, rows.tags[0] - 2, x1 - x0, rows.tags[1] + 4); }
    }
    if (selection) {
      const x0 = x(selection[0]), x1 = x(selection[1]) + w(selection[1]);
      c.fillStyle = "rgba(255,255,255,0.18)"; c.fillRect(x0, 0, x1 - x0, height - 22);
      c.fillStyle = "#ffffff"; c.fillRect(x0, 0, 1, height - 22); c.fillRect(x1, 0, 1, height - 22);
    }
    c.fillStyle = "#ffffff"; c.fillRect(this.xAt(cursor), 0, 1.5, height - 22);
    c.restore();
    timeAxis(c, LEFT, width - 8, this.v0, this.v1, height - 20);
  }
}
