"""`report`: one self-contained HTML page; its images are real PNGs, its numbers the inputs'."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from report_fixtures import TAGGER_LABELS, cli, predicted_run, realistic_evaluation
from taggingbackends.data.bouts import label_bouts
from taggingbackends.data.labels import Labels, TrackLabels
from taggingbackends.data.predicted import LabelInput
from taggingbackends.report import behaviour_over_time, colour_map, number, wilson

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABEL_FIGURES = ("ethogram", "fractions", "time-budget", "bout-durations", "transitions")


class Page(HTMLParser):
    """Tags, image sources, figure ids and table cells with data attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.ids: list[str] = []
        self.cells: list[dict] = []
        self.links: list[str] = []
        self._cell: dict | None = None
        self._table = ""
        self.title = ""
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script", "a") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))
        if tag == "table":
            self._table = attrs.get("id", "")
        if tag == "td" and "data-value" in attrs:
            self._cell = {**attrs, "text": "", "table": self._table}
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
        self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_title:
            self.title += data


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    predicted = predicted_run(folder)
    evaluation = folder / "evaluation.json"
    evaluation.write_text(json.dumps(realistic_evaluation()))
    return predicted, evaluation


@pytest.fixture(scope="module")
def page(inputs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out") / "report.html"
    assert cli("report", *inputs, "-o", out, "--title", "Dish <1> & co") == 0
    return out, out.read_text(encoding="utf-8")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_page_is_one_self_contained_document(page):
    _, text = page
    parsed = Page(text)
    assert text.startswith("<!DOCTYPE html>") and parsed.tags.count("html") == 1
    assert parsed.title == "Dish <1> & co" and "Dish &lt;1&gt; &amp; co" in text
    assert "script" not in parsed.tags
    assert all(link.startswith("data:") for link in parsed.links + parsed.images)
    for figure in LABEL_FIGURES + ("evaluation-1-confusion", "evaluation-1-per-class-bars",
                                   "evaluation-1-bout-bars"):
        assert figure in parsed.ids
    assert "provenance" in parsed.ids


def test_every_image_is_a_png_with_content(page):
    images = Page(page[1]).images
    assert len(images) == len(LABEL_FIGURES) + 3
    for src in images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        width, height = png_size(data)
        assert width >= 300 and height >= 150
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[:2] == (height, width)
        assert pixels[..., :3].std() > 0.01  # not a blank canvas


def expected_value(cell: dict, evaluation: dict):
    """The number of the evaluation JSON that a cell of the page says it shows."""
    metric, label = cell.get("data-metric"), cell.get("data-label")
    if "data-truth" in cell:
        names = evaluation["confusion"]["labels"]
        return evaluation["confusion"]["counts"][names.index(cell["data-truth"])][
            names.index(cell["data-predicted"])]
    if "data-average" in cell and metric.startswith("bouts."):
        return evaluation["bouts"]["macro"][metric[6:]]
    if "data-average" in cell:
        return evaluation[cell["data-average"]][metric]
    if metric.startswith("bouts."):
        return evaluation["bouts"]["per_class"][label][metric[6:]]
    if metric.startswith("steps."):
        return evaluation["steps"][metric[6:]]
    if metric == "accuracy":
        return evaluation["accuracy"]
    return evaluation["per_class"][label][metric]


def check_evaluation_cells(text: str, evaluation: dict) -> list[dict]:
    """Every number cell of the first evaluation section equals the JSON's value."""
    cells = [c for c in Page(text).cells if c["table"].startswith("evaluation-1-")]
    for c in cells:
        expected = expected_value(c, evaluation)
        assert json.loads(c["data-value"]) == expected, c
        assert c["text"] == number(expected), c
    return cells


def test_evaluation_numbers_equal_the_json(page, inputs):
    evaluation = json.loads(inputs[1].read_text())
    cells = check_evaluation_cells(page[1], evaluation)
    n = len(TAGGER_LABELS)
    assert len(cells) == 1 + 4 + n * 4 + 2 * 3 + n * 7 + 2 + n * n
    f1 = [c for c in cells if c.get("data-metric") == "f1" and c.get("data-label") == "cast_large"]
    assert f1[0]["text"] == f"{evaluation['per_class']['cast_large']['f1']:.3f}"
    roll = [c for c in cells if c.get("data-metric") == "recall" and c.get("data-label") == "roll_large"]
    assert roll[0]["data-value"] == "null" and roll[0]["text"] == "–"


def test_numbers_equal_those_of_evaluate_json(inputs, tmp_path):
    """Wired end to end once the evaluate command is merged: evaluate --json, then report."""
    pytest.importorskip("taggingbackends.evaluation", reason="the evaluate command is not in this tree yet")
    predicted = inputs[0]
    truth = predicted.with_name("groundtruth.label")
    out = tmp_path / "evaluation.json"
    assert cli("evaluate", predicted, "--truth", truth, "--map", "simulator", "--json", out) == 0
    assert cli("report", predicted, out, "-o", tmp_path / "r.html") == 0
    evaluation = json.loads(out.read_text())
    cells = check_evaluation_cells((tmp_path / "r.html").read_text(), evaluation)
    assert len([c for c in cells if c.get("data-metric") == "f1"]) == len(evaluation["labels"]) + 2  # + averages
    assert evaluation["accuracy"] < 1  # the fixture's tagger errs: the numbers are not all 1.000


def test_behaviour_table_numbers_come_from_the_bouts(page, inputs):
    labels = Labels.load(inputs[0])
    bouts = label_bouts(labels)
    total = sum(b.duration for b in bouts)
    cells = {(c["data-metric"], c["data-label"]): c for c in Page(page[1]).cells
             if c.get("data-metric") in ("time_fraction", "bouts", "median_bout_s")}
    for name in TAGGER_LABELS:
        mine = [b.duration for b in bouts if b.label == name]
        assert json.loads(cells["bouts", name]["data-value"]) == len(mine)
        fraction = json.loads(cells["time_fraction", name]["data-value"])
        assert fraction == pytest.approx(sum(mine) / total)
        median = json.loads(cells["median_bout_s", name]["data-value"])
        assert median == (pytest.approx(float(np.median(mine))) if mine else None)


def test_same_inputs_give_the_same_images(inputs, tmp_path):
    for name in ("a.html", "b.html"):
        assert cli("report", inputs[0], "-o", tmp_path / name) == 0
    a, b = (Page((tmp_path / n).read_text()).images for n in ("a.html", "b.html"))
    assert a == b and len(a) == len(LABEL_FIGURES)


def test_label_text_is_escaped(tmp_path):
    labels = Labels(["<script>alert(1)</script>", "run"], metadata={"id": 'run "1" <b>'})
    labels.tracks[1] = TrackLabels(np.arange(20) * 0.1, ["run"] * 10 + ["<script>alert(1)</script>"] * 10)
    labels.dump(tmp_path / "odd.label")
    assert cli("report", tmp_path, "-o", tmp_path / "r.html") == 0
    text = (tmp_path / "r.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>" not in text


def test_fractions_over_time_and_wilson_band():
    labels = Labels(["run", "cast"], metadata={"id": "r"})
    t = np.arange(10) * 0.1
    labels.tracks[1] = TrackLabels(t, ["run"] * 10)
    labels.tracks[2] = TrackLabels(t, ["run"] * 5 + ["cast"] * 5)
    labels.tracks[3] = TrackLabels(t[:5], [[]] * 5)  # never labelled: counts in no bin
    edges, mean, low, high, larvae = behaviour_over_time([LabelInput(Path("x"), labels)], ["run", "cast"], 0.5)
    assert edges[:2].tolist() == [0.0, 0.5]
    assert larvae.tolist()[:2] == [2, 2]
    assert mean[0].tolist() == [1.0, 0.0] and mean[1].tolist() == [0.5, 0.5]
    lo, hi = wilson(np.array([0.5]), np.array([10]))
    assert (round(float(lo[0]), 4), round(float(hi[0]), 4)) == (0.2366, 0.7634)
    assert np.all(low <= mean + 1e-12) and np.all(mean <= high + 1e-12)


def test_colours_follow_the_label_file_then_families():
    colours = colour_map(["run_large", "cast_large", "x", "y"], {"cast_large": "#123456", "x": "nonsense"})
    assert colours["cast_large"] == "#123456" and colours["run_large"] == "#1f77b4"
    assert len(set(colours.values())) == 4


def test_errors_are_one_line_and_nothing_is_written(inputs, tmp_path):
    bad = tmp_path / "evaluation.json"
    bad.write_text('{"kind": "evaluation", "labels": ["a"], "per_class": {}, '
                   '"confusion": {"labels": ["a"], "counts": [[1, 2]]}}')
    for args in ([bad], [tmp_path / "missing.label"]):
        done = subprocess.run([sys.executable, "-m", "taggingbackends.cli", "report", *map(str, args),
                               "-o", str(tmp_path / "r.html")], capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), done.stderr
        assert not (tmp_path / "r.html").exists()
    (tmp_path / "r.html").write_text("keep")
    assert cli("report", inputs[0], "-o", tmp_path / "r.html") == 1
    assert (tmp_path / "r.html").read_text() == "keep"


def test_an_evaluation_alone_makes_a_page(inputs, tmp_path):
    sorted_keys = tmp_path / "sorted.json"  # "kind" far from the start, as json.dump(sort_keys=True) puts it
    sorted_keys.write_text(json.dumps(json.loads(inputs[1].read_text()), sort_keys=True, indent=2))
    assert cli("report", sorted_keys, "-o", tmp_path / "e.html") == 0
    parsed = Page((tmp_path / "e.html").read_text())
    assert "labels" not in parsed.ids and "ethogram" not in parsed.ids
    assert {"evaluation-1-confusion", "evaluation-1-per-class", "evaluation-1-bouts"} <= set(parsed.ids)
    assert len(parsed.images) == 3
