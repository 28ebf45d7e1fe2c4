"""One self-contained HTML page about tags: what the larvae did, and how good the tagger is.

For label files (predicted or manual; several runs are pooled):

* **ethogram**: one row per larva, time along x, each bout drawn in its behaviour's colour
  (the label file's colours when it declares them);
* **behaviour over time**: per time bin, the mean over larvae of the fraction of each
  larva's labelled steps in the behaviour, with a 95 % Wilson band (n = larvae labelled in
  the bin): the curve biologists read around a stimulus;
* **time budget**: the share of all labelled time spent in each behaviour;
* **bout durations** per behaviour (box plots, log scale);
* **transitions**: the probability that a bout of one behaviour is directly followed by a
  bout of another (adjacent steps of one larva; unlabelled gaps break the chain).

For an evaluation JSON (``tagging-backend evaluate --json``, schema in the evaluate
module): the row-normalised confusion matrix, per-class precision/recall/F1 bars and
every number as HTML tables whose cells carry ``data-metric``, ``data-label`` and
``data-value`` (the exact value) attributes, so that a test or a script can read them.

Plots are PNG images drawn with matplotlib's Agg canvas and embedded as base64 ``data:``
URIs: the page needs no network and no other file. All text from inputs is escaped.
Bouts come from :mod:`taggingbackends.data.bouts`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .data.bouts import Bout, track_bouts
from .data.labels import primary
from .data.predicted import LabelInput, behaviour_names, label_colours, label_files, read_label_inputs
from .errors import FormatError, TaggingError

WILSON_Z = 1.959964  # 95 %
MAX_ETHOGRAM_LARVAE = 200
BASE_COLOURS = {  # behaviours without a declared colour (suffixes _large/_strong/_weak ignored)
    "run": "#1f77b4", "crawl": "#1f77b4", "cast": "#d62728", "bend": "#8c564b", "back": "#2ca02c",
    "hunch": "#9467bd", "roll": "#ff7f0e", "stop": "#7f7f7f", "small_motion": "#bcbd22",
    "small": "#bcbd22",
}
SPARE_COLOURS = ("#17becf", "#e377c2", "#aec7e8", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                 "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939")
EVALUATION_KEYS = ("labels", "per_class", "confusion")


# ------------------------------------------------------------------- inputs
@dataclass
class ReportInputs:
    """Label runs and evaluations to report on."""

    runs: list[LabelInput] = field(default_factory=list)
    evaluations: list[tuple[Path, dict]] = field(default_factory=list)


def read_report_inputs(paths: Iterable[Path], verify: bool = True) -> ReportInputs:
    """Sort ``paths`` into evaluation JSON files and label files (directories: label files)."""
    inputs = ReportInputs()
    label_paths: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file() and _is_evaluation(path):
            inputs.evaluations.append((path, load_evaluation(path)))
        else:
            label_paths.extend(label_files([path]))
    if label_paths:
        inputs.runs = read_label_inputs(label_paths, verify=verify)
    return inputs


def _is_evaluation(path: Path) -> bool:
    """A ``.json`` file holding an object with ``"kind": "evaluation"`` (wherever the key
    is: writers may sort keys). Label files are JSON too; they have no such key."""
    if path.suffix.lower() != ".json":
        return False
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # read again as a label file, which says what is wrong
    return isinstance(document, dict) and document.get("kind") == "evaluation"


def load_evaluation(path: Path) -> dict:
    """Read and check an evaluation JSON (the keys the report draws)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise FormatError(path, f"is not UTF-8 text (byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise FormatError(path, f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if not isinstance(document, dict) or document.get("kind") != "evaluation":
        raise FormatError(path, 'is not an evaluation (no "kind": "evaluation")')
    missing = [key for key in EVALUATION_KEYS if key not in document]
    if missing:
        raise FormatError(path, f"evaluation lacks {', '.join(missing)}")
    confusion = document["confusion"]
    names = confusion.get("labels") if isinstance(confusion, dict) else None
    counts = np.asarray(confusion.get("counts", []) if isinstance(confusion, dict) else [], dtype=float)
    if not isinstance(names, list) or counts.shape != (len(names), len(names)):
        raise FormatError(path, f"confusion counts of shape {counts.shape} do not match "
                                f"{len(names) if isinstance(names, list) else 'no'} labels")
    if not isinstance(document["per_class"], dict):
        raise FormatError(path, "per_class is not an object of classes")
    return document


# ---------------------------------------------------------------- colours
def colour_map(names: Sequence[str], declared: dict[str, str] | None = None) -> dict[str, str]:
    """One colour per behaviour: declared (label file) first, then by behaviour family,
    then spare colours; never two behaviours with one colour unless declared so."""
    from matplotlib.colors import is_color_like

    declared = {k: v for k, v in (declared or {}).items() if is_color_like(v)}
    colours: dict[str, str] = {}
    for name in names:
        if name in declared:
            colours[name] = declared[name]
    spare = iter([c for c in SPARE_COLOURS if c not in colours.values()] * 4)
    for name in names:
        if name in colours:
            continue
        family = BASE_COLOURS.get(_family(name))
        colours[name] = family if family and family not in colours.values() else next(spare)
    return colours


def _family(name: str) -> str:
    for suffix in ("_large", "_strong", "_weak"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# ----------------------------------------------------------------- figures
def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_data(figure) -> str:
    """The figure as a base64 PNG (no timestamp metadata: same input, same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class LarvaRow:
    source: str          # the run id, or file/run where one run id comes from several files
    larva: int
    bouts: list[Bout]
    t0: float
    t1: float


def larva_rows(runs: Sequence[LabelInput]) -> list[LarvaRow]:
    """Every larva of every run with its bouts, in run then larva order."""
    rows = []
    run_ids = [item.run_id for item in runs]
    for item in runs:
        source = item.run_id if run_ids.count(item.run_id) == 1 else f"{item.path.stem}/{item.run_id}"
        for larva in sorted(item.labels.tracks):
            track = item.labels.tracks[larva]
            if len(track):
                rows.append(LarvaRow(source, larva, track_bouts(larva, track),
                                     float(track.t[0]), float(track.t[-1])))
    return rows


def ethogram_figure(rows: Sequence[LarvaRow], colours: dict[str, str], several_runs: bool):
    """Bouts as coloured bars, one row per larva (first MAX_ETHOGRAM_LARVAE rows)."""
    from matplotlib.patches import Patch

    shown = rows[:MAX_ETHOGRAM_LARVAE]
    figure = _new_figure(11, min(2.2 + 0.18 * len(shown), 16))
    axes = figure.add_subplot()
    for y, row in enumerate(shown):
        axes.plot([row.t0, row.t1], [y, y], color="#dddddd", linewidth=0.6, zorder=0)
        by_label: dict[str, list] = {}
        for bout in row.bouts:
            by_label.setdefault(bout.label, []).append((bout.start, bout.duration))
        for label, spans in by_label.items():
            axes.broken_barh(spans, (y - 0.42, 0.84), facecolors=colours.get(label, "#000000"),
                             linewidth=0)
    axes.set_ylim(len(shown) - 0.5, -0.5)
    if len(shown) <= 60:
        axes.set_yticks(range(len(shown)),
                        [f"{r.source}:{r.larva}" if several_runs else str(r.larva) for r in shown], fontsize=7)
    axes.set_ylabel("larva")
    axes.set_xlabel("time (s)")
    used = [name for name in colours if any(b.label == name for r in shown for b in r.bouts)]
    axes.legend(handles=[Patch(color=colours[n], label=n) for n in used], loc="upper left",
                bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return figure


def behaviour_over_time(runs: Sequence[LabelInput], behaviours: Sequence[str], bin_s: float | None):
    """Bin edges, mean fraction (bins × behaviours), Wilson bounds and larvae per bin.

    Each larva counts once per bin (the fraction of its labelled steps there in each
    behaviour), so a larva tracked at a higher rate does not weigh more."""
    larva_t, larva_c, larva_i = [], [], []
    index = {name: k for k, name in enumerate(behaviours)}
    n_larvae = 0
    for item in runs:
        for larva in sorted(item.labels.tracks):
            track = item.labels.tracks[larva]
            codes = np.array([index.get(primary(e), -1) if primary(e) is not None else -1
                              for e in track.labels], dtype=np.int64)
            keep = codes >= 0
            larva_t.append(track.t[keep])
            larva_c.append(codes[keep])
            larva_i.append(np.full(int(keep.sum()), n_larvae, dtype=np.int64))
            n_larvae += 1
    t = np.concatenate(larva_t) if larva_t else np.zeros(0)
    if t.size == 0:
        return None
    codes, owner = np.concatenate(larva_c), np.concatenate(larva_i)
    t0, t1 = float(t.min()), float(t.max())
    width = bin_s or nice_bin(t1 - t0)
    edges = t0 + width * np.arange(int(math.floor((t1 - t0) / width)) + 2)
    bins = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    n_bins, k = len(edges) - 1, len(behaviours)
    counts = np.bincount((owner * n_bins + bins) * k + codes, minlength=n_larvae * n_bins * k)
    counts = counts.reshape(n_larvae, n_bins, k).astype(np.float64)
    totals = counts.sum(axis=2)
    present = totals > 0
    larvae = present.sum(axis=0)
    fractions = np.divide(counts, totals[:, :, None], out=np.zeros_like(counts), where=present[:, :, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = fractions.sum(axis=0) / larvae[:, None]
    low, high = wilson(mean, larvae[:, None])
    return edges, mean, low, high, larvae


def nice_bin(span: float, target_bins: int = 120) -> float:
    """A round bin width (1, 2 or 5 × 10^k s) giving about ``target_bins`` bins."""
    if span <= 0:
        return 1.0
    raw = span / target_bins
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def wilson(p: np.ndarray, n: np.ndarray, z: float = WILSON_Z) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of proportions ``p`` over ``n`` (NaN where n = 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.asarray(n, dtype=np.float64)
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def fractions_figure(series, behaviours: Sequence[str], colours: dict[str, str]):
    """One small panel per behaviour: mean fraction over larvae with its band."""
    edges, mean, low, high, larvae = series
    centres = (edges[:-1] + edges[1:]) / 2
    columns = 2 if len(behaviours) > 3 else 1
    rows = math.ceil(len(behaviours) / columns)
    figure = _new_figure(11, 1.7 * rows + 0.8)
    grid = figure.subplots(rows, columns, sharex=True, squeeze=False)
    for k, name in enumerate(behaviours):
        axes = grid[k // columns][k % columns]
        colour = colours.get(name, "#000000")
        axes.fill_between(centres, low[:, k], high[:, k], color=colour, alpha=0.25, linewidth=0, step="mid")
        axes.plot(centres, mean[:, k], color=colour, linewidth=1.3, drawstyle="steps-mid")
        axes.set_ylim(0, max(0.05, float(np.nanmax(high[:, k])) * 1.05) if np.isfinite(high[:, k]).any() else 1)
        axes.set_title(name, fontsize=9, loc="left")
        axes.tick_params(labelsize=8)
    for k in range(len(behaviours), rows * columns):
        grid[k // columns][k % columns].set_visible(False)
    figure.supxlabel("time (s)", fontsize=9)
    figure.supylabel("fraction of larvae", fontsize=9)
    return figure


@dataclass
class BehaviourStats:
    name: str
    time_s: float
    fraction: float | None
    bouts: int
    median_bout_s: float | None
    rate_per_min: float | None
    mean_larva_fraction: float | None


def behaviour_stats(rows: Sequence[LarvaRow], behaviours: Sequence[str]) -> list[BehaviourStats]:
    """Pooled time budget and bout figures per behaviour (bout durations as in data.bouts)."""
    labelled = sum(b.duration for r in rows for b in r.bouts)
    per_larva_total = [sum(b.duration for b in r.bouts) for r in rows]
    stats = []
    for name in behaviours:
        durations = [b.duration for r in rows for b in r.bouts if b.label == name]
        shares = [sum(b.duration for b in r.bouts if b.label == name) / total
                  for r, total in zip(rows, per_larva_total) if total > 0]
        time = float(sum(durations))
        stats.append(BehaviourStats(
            name, time, time / labelled if labelled > 0 else None, len(durations),
            float(np.median(durations)) if durations else None,
            60.0 * len(durations) / labelled if labelled > 0 else None,
            float(np.mean(shares)) if shares else None))
    return stats


def time_budget_figure(stats: Sequence[BehaviourStats], colours: dict[str, str]):
    figure = _new_figure(7, 0.45 * len(stats) + 1.2)
    axes = figure.add_subplot()
    values = [s.fraction or 0.0 for s in stats]
    positions = np.arange(len(stats))
    axes.barh(positions, values, color=[colours.get(s.name, "#000000") for s in stats])
    for y, value in zip(positions, values):
        axes.text(value, y, f" {100 * value:.1f} %", va="center", fontsize=8)
    axes.set_yticks(positions, [s.name for s in stats])
    axes.invert_yaxis()
    axes.set_xlim(0, max(values + [0.01]) * 1.18)
    axes.set_xlabel("share of labelled time")
    return figure


def bout_duration_figure(rows: Sequence[LarvaRow], behaviours: Sequence[str], colours: dict[str, str]):
    data = [(name, [b.duration for r in rows for b in r.bouts if b.label == name and b.duration > 0])
            for name in behaviours]  # a one-step track's bout has no duration: not on a log axis
    data = [(name, values) for name, values in data if values]
    figure = _new_figure(max(5, 1.1 * len(data) + 2), 3.8)
    axes = figure.add_subplot()
    if not data:
        axes.text(0.5, 0.5, "no bouts", ha="center", va="center", transform=axes.transAxes)
        return figure
    boxes = axes.boxplot([v for _, v in data], patch_artist=True, showfliers=True,
                         flierprops={"markersize": 2})
    axes.set_xticks(range(1, len(data) + 1), [f"{n}\n(n={len(v)})" for n, v in data])
    for patch, (name, _) in zip(boxes["boxes"], data):
        patch.set_facecolor(colours.get(name, "#000000"))
        patch.set_alpha(0.7)
    axes.set_yscale("log")
    axes.set_ylabel("bout duration (s)")
    axes.tick_params(axis="x", labelsize=8)
    return figure


def transitions(rows: Sequence[LarvaRow], behaviours: Sequence[str]) -> np.ndarray:
    """Counts of bout → next bout of the same larva when they touch (no gap between)."""
    index = {name: k for k, name in enumerate(behaviours)}
    counts = np.zeros((len(behaviours), len(behaviours)), dtype=np.int64)
    for row in rows:
        for before, after in zip(row.bouts, row.bouts[1:]):
            if after.first == before.last + 1 and before.label in index and after.label in index:
                counts[index[before.label], index[after.label]] += 1
    return counts


def matrix_figure(values: np.ndarray, counts: np.ndarray, names: Sequence[str], xlabel: str,
                  ylabel: str, title: str):
    """A row-normalised heat map annotated with proportions and counts."""
    size = 1.0 + 0.75 * len(names)
    figure = _new_figure(size + 1.6, size + 0.6)
    axes = figure.add_subplot()
    shown = np.nan_to_num(np.asarray(values, dtype=float))
    image = axes.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if counts[i, j] == 0:
                continue  # empty cells stay blank: the eye goes to what happened
            axes.text(j, i, f"{shown[i, j]:.2f}\n{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                      color="white" if shown[i, j] > 0.6 else "black")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8)
    return figure


def row_normalised(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)


def metric_bars_figure(names: Sequence[str], series: dict[str, Sequence], title: str):
    """Grouped bars (one group per class, one bar per metric); missing values are gaps."""
    figure = _new_figure(max(6, 0.9 * len(names) + 2), 3.6)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    palette = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
    for m, (metric, values) in enumerate(series.items()):
        heights = [np.nan if v is None else float(v) for v in values]
        axes.bar(np.arange(len(names)) + (m - (len(series) - 1) / 2) * width, heights, width,
                 label=metric, color=palette[m % len(palette)])
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return figure


# --------------------------------------------------------------------- HTML
def esc(value) -> str:
    return html.escape(str(value), quote=True)


def number(value, digits: int = 3) -> str:
    """How a figure is shown: integers as is, floats with ``digits`` decimals, – for null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if not isinstance(value, (int, float, np.number)):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def exact(value) -> str:
    """The ``data-value`` of a cell: JSON of the value (``null`` for missing)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        value = None
    return json.dumps(value)


def cell(value, **attributes) -> str:
    """A ``<td>`` with ``data-*`` attributes and the exact value in ``data-value``."""
    attrs = "".join(f' data-{esc(k.replace("_", "-"))}="{esc(v)}"' for k, v in attributes.items())
    return f'<td{attrs} data-value="{esc(exact(value))}">{esc(number(value))}</td>'


def image(data: str, alt: str, figure_id: str) -> str:
    return (f'<figure id="{esc(figure_id)}"><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
            f"<figcaption>{esc(alt)}</figcaption></figure>")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1150px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.swatch{display:inline-block;width:.9em;height:.9em;
margin-right:.4em;vertical-align:middle;border:1px solid #999}.muted{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
"""


def labels_section(runs: Sequence[LabelInput], bin_s: float | None) -> str:
    """Ethogram, behaviour over time, time budget, bout durations, transitions, table."""
    behaviours = behaviour_names(runs)
    colours = colour_map(behaviours, label_colours(runs))
    rows = larva_rows(runs)
    n_steps = sum(item.labels.n_steps for item in runs)
    unlabelled = sum(1 for item in runs for track in item.labels.tracks.values()
                     for entry in track.labels if primary(entry) is None)
    parts = ['<section id="labels"><h2>Behaviour</h2>',
             f'<p id="labels-summary" data-runs="{len(runs)}" data-larvae="{len(rows)}" data-steps="{n_steps}">'
             f"{len(runs)} run(s), {len(rows)} larvae, {n_steps} time steps "
             f"({unlabelled} unlabelled).</p>"]
    stats = behaviour_stats(rows, behaviours)
    if any(row.bouts for row in rows):
        parts.extend(label_figures(runs, rows, behaviours, colours, stats, bin_s))
    else:
        parts.append('<p class="muted">No labelled step: nothing to plot.</p>')
    parts.append(behaviour_table(stats, colours))
    parts.append(inputs_table(runs))
    parts.append("</section>")
    return "\n".join(parts)


def label_figures(runs: Sequence[LabelInput], rows: Sequence[LarvaRow], behaviours: Sequence[str],
                  colours: dict[str, str], stats: Sequence[BehaviourStats], bin_s: float | None) -> list[str]:
    """The five figures of the label files, as HTML ``<figure>`` elements."""
    note = f" (first {MAX_ETHOGRAM_LARVAE} of {len(rows)} larvae)" if len(rows) > MAX_ETHOGRAM_LARVAE else ""
    parts = [image(png_data(ethogram_figure(rows, colours, len(runs) > 1)),
                   f"Ethogram: bouts of each larva over time{note}", "ethogram")]
    series = behaviour_over_time(runs, behaviours, bin_s)
    width = series[0][1] - series[0][0]
    parts.append(image(png_data(fractions_figure(series, behaviours, colours)),
                       f"Fraction of larvae in each behaviour over time ({width:g} s bins; band: 95 % "
                       "Wilson interval over the larvae labelled in the bin)", "fractions"))
    parts.append(image(png_data(time_budget_figure(stats, colours)),
                       "Time budget: share of all labelled time in each behaviour", "time-budget"))
    parts.append(image(png_data(bout_duration_figure(rows, behaviours, colours)),
                       "Bout durations per behaviour (box: quartiles; whiskers: 1.5 IQR)", "bout-durations"))
    counts = transitions(rows, behaviours)
    parts.append(image(png_data(matrix_figure(row_normalised(counts), counts, behaviours, "next bout",
                                              "bout", "P(next behaviour | behaviour), with counts")),
                       "Transitions between consecutive bouts of a larva", "transitions"))
    return parts


def behaviour_table(stats: Sequence[BehaviourStats], colours: dict[str, str]) -> str:
    head = ("<tr><th>behaviour</th><th>time (s)</th><th>share of time</th><th>mean share per larva</th>"
            "<th>bouts</th><th>median bout (s)</th><th>bouts per min</th></tr>")
    body = []
    for s in stats:
        body.append(f'<tr data-label="{esc(s.name)}"><td><span class="swatch" style="background:'
                    f'{esc(colours.get(s.name, "#000"))}"></span>{esc(s.name)}</td>'
                    + cell(s.time_s, metric="time_s", label=s.name)
                    + cell(s.fraction, metric="time_fraction", label=s.name)
                    + cell(s.mean_larva_fraction, metric="mean_larva_fraction", label=s.name)
                    + cell(s.bouts, metric="bouts", label=s.name)
                    + cell(s.median_bout_s, metric="median_bout_s", label=s.name)
                    + cell(s.rate_per_min, metric="bouts_per_min", label=s.name) + "</tr>")
    return f'<table id="behaviour-table">{head}{"".join(body)}</table>'


def inputs_table(runs: Sequence[LabelInput]) -> str:
    body = "".join(
        f"<tr><td>{esc(item.path)}</td><td>{esc(item.run_id)}</td>"
        f"<td>{len(item.labels)}</td><td>{item.labels.n_steps}</td>"
        f"<td>{'yes' if item.probabilities is not None else 'no'}</td></tr>" for item in runs)
    return ('<table id="inputs"><tr><th>label file</th><th>run</th><th>larvae</th><th>steps</th>'
            f"<th>probabilities</th></tr>{body}</table>")


def evaluation_section(path: Path, evaluation: dict, number_in_page: int, colours: dict[str, str]) -> str:
    """Confusion matrix, per-class bars and every figure of an evaluation as tables."""
    section_id = f"evaluation-{number_in_page}"
    names = [str(n) for n in evaluation["labels"]]
    per_class = evaluation["per_class"]
    confusion = evaluation["confusion"]
    confusion_names = [str(n) for n in confusion["labels"]]
    counts = np.asarray(confusion["counts"], dtype=np.int64)
    normalised = np.asarray(confusion.get("normalised") or row_normalised(counts), dtype=float)
    parts = [f'<section class="evaluation" id="{section_id}" data-source="{esc(path)}">',
             f"<h2>Evaluation: {esc(path.name)}</h2>"]
    renamed = evaluation.get("label_map")
    if isinstance(renamed, dict) and renamed:
        parts.append('<p class="muted">True labels renamed before comparison: '
                     + ", ".join(f"{esc(k)} → {esc(v)}" for k, v in renamed.items()) + ".</p>")
    parts.append(overall_table(evaluation, section_id))
    parts.append(image(png_data(matrix_figure(normalised, counts, confusion_names, "predicted", "true",
                                              "Row-normalised confusion matrix, with counts")),
                       "Confusion matrix (rows: truth; columns: prediction)", f"{section_id}-confusion"))
    metrics = {m: [(per_class.get(n) or {}).get(m) for n in names] for m in ("precision", "recall", "f1")}
    parts.append(image(png_data(metric_bars_figure(names, metrics, "Per-class step metrics")),
                       "Per-class precision, recall and F1 (time steps)", f"{section_id}-per-class-bars"))
    parts.append(per_class_table(names, per_class, colours, section_id))
    parts.append(averages_table(evaluation, section_id))
    bouts = evaluation.get("bouts") or {}
    if isinstance(bouts.get("per_class"), dict) and bouts["per_class"]:
        bout_metrics = {m: [(bouts["per_class"].get(n) or {}).get(m) for n in names]
                        for m in ("precision", "recall")}
        parts.append(image(png_data(metric_bars_figure(names, bout_metrics, "Per-class bout agreement")),
                           "Bout-level precision and recall (a true bout is found when a predicted bout "
                           "of its label overlaps it by at least half)", f"{section_id}-bout-bars"))
        parts.append(bouts_table(names, bouts, section_id))
    parts.append(confusion_table(confusion_names, counts, section_id))
    files = evaluation.get("files") or []
    if files:
        rows = "".join(f"<tr><td>{esc(f.get('predicted', ''))}</td><td>{esc(f.get('truth', ''))}</td>"
                       f"<td>{esc(f.get('run', ''))}</td><td>{esc(number(f.get('larvae')))}</td>"
                       f"<td>{esc(number(f.get('steps')))}</td></tr>" for f in files if isinstance(f, dict))
        parts.append(f'<table id="{section_id}-files"><tr><th>predicted</th><th>truth</th><th>run</th>'
                     f"<th>larvae</th><th>steps</th></tr>{rows}</table>")
    parts.append("</section>")
    return "\n".join(parts)


def overall_table(evaluation: dict, section_id: str) -> str:
    steps = evaluation.get("steps") or {}
    cells = [("accuracy", evaluation.get("accuracy"))] + [(f"steps.{k}", v) for k, v in steps.items()]
    head = "".join(f"<th>{esc(name)}</th>" for name, _ in cells)
    body = "".join(cell(value, metric=name) for name, value in cells)
    return f'<table id="{section_id}-overall"><tr>{head}</tr><tr>{body}</tr></table>'


def per_class_table(names: Sequence[str], per_class: dict, colours: dict[str, str], section_id: str) -> str:
    metrics = ("precision", "recall", "f1", "support")
    head = "<tr><th>class</th>" + "".join(f"<th>{m}</th>" for m in metrics) + "</tr>"
    body = []
    for name in names:
        values = per_class.get(name) or {}
        body.append(f'<tr data-label="{esc(name)}"><td><span class="swatch" style="background:'
                    f'{esc(colours.get(name, "#000"))}"></span>{esc(name)}</td>'
                    + "".join(cell(values.get(m), metric=m, label=name) for m in metrics) + "</tr>")
    return f'<table id="{section_id}-per-class">{head}{"".join(body)}</table>'


def averages_table(evaluation: dict, section_id: str) -> str:
    metrics = ("precision", "recall", "f1")
    head = "<tr><th>average</th>" + "".join(f"<th>{m}</th>" for m in metrics) + "</tr>"
    body = "".join(
        f'<tr data-average="{kind}"><td>{kind}</td>'
        + "".join(cell((evaluation.get(kind) or {}).get(m), metric=m, average=kind) for m in metrics) + "</tr>"
        for kind in ("macro", "weighted") if isinstance(evaluation.get(kind), dict))
    return f'<table id="{section_id}-averages">{head}{body}</table>'


def bouts_table(names: Sequence[str], bouts: dict, section_id: str) -> str:
    metrics = ("true", "predicted", "found", "precision", "recall", "onset_error_s", "offset_error_s")
    head = "<tr><th>class</th>" + "".join(f"<th>{m}</th>" for m in metrics) + "</tr>"
    body = []
    for name in names:
        values = bouts["per_class"].get(name) or {}
        body.append(f'<tr data-label="{esc(name)}"><td>{esc(name)}</td>'
                    + "".join(cell(values.get(m), metric=f"bouts.{m}", label=name) for m in metrics) + "</tr>")
    macro = bouts.get("macro") or {}
    if macro:
        body.append('<tr data-average="macro"><td>macro</td>' + "".join(
            cell(macro.get(m), metric=f"bouts.{m}", average="macro") if m in ("precision", "recall")
            else "<td></td>" for m in metrics) + "</tr>")
    return f'<table id="{section_id}-bouts">{head}{"".join(body)}</table>'


def confusion_table(names: Sequence[str], counts: np.ndarray, section_id: str) -> str:
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"
    body = "".join(
        f'<tr data-truth="{esc(truth)}"><th>{esc(truth)}</th>'
        + "".join(cell(int(counts[i, j]), truth=truth, predicted=pred) for j, pred in enumerate(names)) + "</tr>"
        for i, truth in enumerate(names))
    return f'<table id="{section_id}-confusion-counts">{head}{body}</table>'


def build_report(inputs: ReportInputs, title: str = "Behaviour report", bin_s: float | None = None,
                 provenance: dict | None = None) -> str:
    """The HTML page (a string) for label runs and/or evaluations."""
    if not inputs.runs and not inputs.evaluations:
        raise TaggingError("nothing to report: give label files, directories of them or an evaluation JSON")
    behaviours = behaviour_names(inputs.runs)
    for _, evaluation in inputs.evaluations:
        behaviours += [str(n) for n in evaluation["labels"] if str(n) not in behaviours]
    colours = colour_map(behaviours, label_colours(inputs.runs))
    body = []
    if inputs.runs:
        body.append(labels_section(inputs.runs, bin_s))
    for k, (path, evaluation) in enumerate(inputs.evaluations, 1):
        body.append(evaluation_section(path, evaluation, k, colours))
    footer = ""
    if provenance:
        footer = (f'<footer id="provenance"><h2>Provenance</h2><pre>'
                  f"{esc(json.dumps(provenance, indent=2, sort_keys=True, default=str))}</pre></footer>")
    record = provenance or {}
    generator = esc(f"{record.get('software', 'taggingbackends')} {record.get('version', '')}".strip())
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="generator" content="{generator}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n"
            + "\n".join(body) + f"\n{footer}\n</body></html>\n")
