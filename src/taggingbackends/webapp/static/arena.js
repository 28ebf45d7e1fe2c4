// The arena: every larva at the current time, outline, spine and head, coloured by its tag.
// Drag to pan, wheel to zoom, click a larva to select it.

export class Arena {
  constructor(canvas, { onSelect }) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.onSelect = onSelect;
    this.scale = 1; this.ox = 0; this.oy = 0;     // screen = world * scale + offset (CSS pixels)
    this.shapes = [];                              // what was drawn last: {id, points} for hit tests
    this.bounds = null;
    this.attach();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const { width, height } = this.canvas.getBoundingClientRect();
    this.width = Math.max(1, Math.floor(width)); this.height = Math.max(1, Math.floor(height));
    this.canvas.width = Math.floor(this.width * ratio); this.canvas.height = Math.floor(this.height * ratio);
    this.context.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  fit(bounds) {
    this.bounds = bounds;
    const [x0, y0, x1, y1] = bounds;
    const margin = 0.05 * Math.max(x1 - x0, y1 - y0, 1e-6);
    const w = x1 - x0 + 2 * margin, h = y1 - y0 + 2 * margin;
    this.scale = Math.min(this.width / w, this.height / h);
    this.ox = (this.width - (x1 - x0) * this.scale) / 2 - x0 * this.scale;
    this.oy = (this.height - (y1 - y0) * this.scale) / 2 - y0 * this.scale;
  }

  // centre the view on a larva (world spine points), zooming in until it is at least 80 px long
  focus(spine) {
    const ok = spine.filter(([x, y]) => x !== null && y !== null);
    if (!ok.length) return;
    const [mx, my] = ok[Math.floor(ok.length / 2)];
    const length = Math.hypot(ok[0][0] - ok[ok.length - 1][0], ok[0][1] - ok[ok.length - 1][1]);
    if (length > 0 && length * this.scale < 80) this.scale = 80 / length;
    this.ox = this.width / 2 - mx * this.scale; this.oy = this.height / 2 - my * this.scale;
  }

  toScreen(x, y) { return [x * this.scale + this.ox, y * this.scale + this.oy]; }

  attach() {
    let drag = null;
    this.canvas.addEventListener("mousedown", (event) => {
      drag = { x: event.offsetX, y: event.offsetY, ox: this.ox, oy: this.oy, moved: false };
    });
    window.addEventListener("mousemove", (event) => {
      if (!drag) return;
      const rect = this.canvas.getBoundingClientRect();
      const dx = event.clientX - rect.left - drag.x, dy = event.clientY - rect.top - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) { this.ox = drag.ox + dx; this.oy = drag.oy + dy; this.onView && this.onView(); }
    });
    window.addEventListener("mouseup", (event) => {
      if (drag && !drag.moved && event.target === this.canvas) {
        const hit = this.hit(event.offsetX, event.offsetY);
        if (hit !== null) this.onSelect(hit);
      }
      drag = null;
    });
    this.canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const factor = Math.exp(-event.deltaY * 0.0015);
      const x = event.offsetX, y = event.offsetY;
      this.ox = x - (x - this.ox) * factor; this.oy = y - (y - this.oy) * factor;
      this.scale *= factor;
      this.onView && this.onView();
    }, { passive: false });
  }

  hit(x, y) {
    let best = null, bestDistance = 12;   // pixels
    for (const shape of this.shapes) {
      for (let i = 0; i < shape.points.length; i += 2) {
        const d = Math.hypot(shape.points[i] - x, shape.points[i + 1] - y);
        if (d < bestDistance) { bestDistance = d; best = shape.id; }
      }
    }
    return best;
  }

  // larvae: [{id, spine: [[x, y], ...], outline: [x0, y0, ...] | null, color, selected}]
  draw(larvae, head) {
    const c = this.context;
    c.fillStyle = "#15181d";
    c.fillRect(0, 0, this.width, this.height);
    this.shapes = [];
    const ordered = [...larvae].sort((a, b) => (a.selected ? 1 : 0) - (b.selected ? 1 : 0));
    for (const larva of ordered) {
      const points = [];
      for (const [x, y] of larva.spine) {
        if (x === null || y === null) continue;
        const [sx, sy] = this.toScreen(x, y);
        points.push(sx, sy);
      }
      if (points.length < 4) continue;
      this.shapes.push({ id: larva.id, points });
      if (larva.outline && larva.outline.length >= 6) {
        c.beginPath();
        for (let i = 0; i < larva.outline.length; i += 2) {
          const [sx, sy] = this.toScreen(larva.outline[i], larva.outline[i + 1]);
          if (i === 0) c.moveTo(sx, sy); else c.lineTo(sx, sy);
        }
        c.closePath();
        c.globalAlpha = 0.28; c.fillStyle = larva.color; c.fill();
        c.globalAlpha = 0.9; c.lineWidth = 1; c.strokeStyle = larva.color; c.stroke();
        c.globalAlpha = 1;
      }
      if (larva.selected) this.polyline(points, "#ffffff", 8);
      this.polyline(points, larva.color, 3);
      const h = head === "last" ? points.length - 2 : 0;
      const length = Math.hypot(points[0] - points[points.length - 2], points[1] - points[points.length - 1]);
      const radius = Math.max(1.5, Math.min(4, 0.12 * length));   // small larvae keep a visible spine
      c.beginPath(); c.arc(points[h], points[h + 1], radius, 0, 2 * Math.PI);
      c.fillStyle = larva.color; c.fill();
      c.lineWidth = radius > 2.5 ? 1.5 : 1; c.strokeStyle = "#ffffff"; c.stroke();
      if (larva.selected) {
        c.fillStyle = "#ffffff"; c.font = "12px sans-serif";
        c.fillText(`#${larva.id}`, points[h] + 8, points[h + 1] - 8);
      }
    }
  }

  polyline(points, color, width) {
    const c = this.context;
    c.beginPath(); c.moveTo(points[0], points[1]);
    for (let i = 2; i < points.length; i += 2) c.lineTo(points[i], points[i + 1]);
    c.lineWidth = width; c.lineCap = "round"; c.lineJoin = "round"; c.strokeStyle = color; c.stroke();
  }
}
