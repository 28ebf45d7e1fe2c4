"""`export`: steps/bouts/summary tables (CSV, Parquet), trx.mat flag fields, NWB epochs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from report_fixtures import cli, write_sidecar
from taggingbackends.cli import write_simulation
from taggingbackends.data.bouts import label_bouts
from taggingbackends.data.labels import Labels, TrackLabels
from taggingbackends.data.predicted import read_label_inputs, sidecar_path
from taggingbackends.export import PROVENANCE_KEY
from taggingbackends.formats import load
from taggingbackends.formats.trxmat import write_trxmat
from taggingbackends.simulate import SimulationConfig, simulate

PREDICTED_NAMES = ["back_large", "cast_large", "run_large", "stop_large", "small_motion"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Simulated larvae as trx.mat with ground truth, and a 'predicted' label file (the truth
    renamed into the tagger's names, a few steps unlabelled) with a probabilities sidecar."""
    folder = tmp_path_factory.mktemp("demo")
    result = simulate(SimulationConfig(n_larvae=3, duration=12.0, seed=4))
    write_simulation(result, folder, "trxmat")
    truth = Labels.load(folder / "groundtruth.label")
    rename = {"run": "run_large", "cast": "cast_large", "back": "back_large", "stop": "stop_large",
              "hunch": "cast_large", "roll": "cast_large", "small_motion": "small_motion"}
    predicted = Labels(PREDICTED_NAMES, metadata={"id": truth.run_id}, tracking=[folder / "trx.mat"])
    rng = np.random.default_rng(0)
    larva_ids, times, probabilities = [], [], []
    for larva, track in truth.tracks.items():
        entries = [rename[e] for e in track.labels]
        entries[0] = []  # an unlabelled step
        predicted.tracks[larva] = TrackLabels(track.t.copy(), entries)
        p = rng.dirichlet(np.ones(len(PREDICTED_NAMES)), size=len(track)).astype(np.float32)
        larva_ids.append(np.full(len(track), larva))
        times.append(track.t)
        probabilities.append(p)
    predicted.dump(folder / "predicted.label")
    write_sidecar(folder / "predicted.label", larva_ids, times, probabilities, PREDICTED_NAMES, truth.run_id)
    return folder


def test_steps_parquet_has_every_step_label_and_probability(demo, tmp_path):
    out = tmp_path / "steps.parquet"
    assert cli("export", demo / "predicted.label", "--to", "parquet", "--table", "steps", "-o", out) == 0
    table = pq.read_table(out)
    labels = Labels.load(demo / "predicted.label")
    assert table.num_rows == labels.n_steps
    assert table.column_names[:5] == ["run", "larva", "t", "label", "secondary_labels"]
    assert [c for c in table.column_names if c.startswith("p_")] == [f"p_{n}" for n in PREDICTED_NAMES]
    rows = table.to_pylist()
    with h5py.File(sidecar_path(demo / "predicted.label")) as f:
        larva_ids, times, probabilities = f["larva_id"][()], f["t"][()], f["probabilities"][()]
    for k in (0, 7, len(rows) - 1):
        row = rows[k]
        hit = np.flatnonzero((larva_ids == row["larva"]) & (np.abs(times - row["t"]) < 1e-9))[0]
        assert [row[f"p_{n}"] for n in PREDICTED_NAMES] == probabilities[hit].tolist()
        track = labels.tracks[row["larva"]]
        entry = track.labels[int(np.flatnonzero(track.t == row["t"])[0])]
        assert row["label"] == (entry if entry else None)
    metadata = json.loads(table.schema.metadata[PROVENANCE_KEY])
    assert metadata["command"] == "export" and metadata["table"] == "steps"
    assert metadata["inputs"][0]["runs"] == [labels.run_id]


def test_steps_csv_joins_secondary_labels_and_reads_back(tmp_path):
    labels = Labels(["run", "cast"], secondarylabels=["edited"], metadata={"id": "r1"})
    labels.tracks[2] = TrackLabels([0.0, 0.1, 0.2], ["run", ["cast", "edited"], []])
    labels.dump(tmp_path / "manual.label")
    out = tmp_path / "steps.csv"
    assert cli("export", tmp_path / "manual.label", "--to", "csv", "-o", out) == 0
    # pyarrow writes null as an empty field and "" as a quoted empty string
    options = pacsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
    table = pacsv.read_csv(out, convert_options=options)
    assert table.column_names == ["run", "larva", "t", "label", "secondary_labels"]  # no sidecar
    assert table.column("label").to_pylist() == ["run", "cast", None]
    assert table.column("secondary_labels").to_pylist() == ["", "edited", ""]
    assert table.column("run").to_pylist() == ["r1"] * 3


def test_bouts_table_matches_the_shared_bout_definition(demo, tmp_path):
    out = tmp_path / "bouts.parquet"
    assert cli("export", demo / "predicted.label", "--to", "parquet", "--table", "bouts", "-o", out) == 0
    rows = pq.read_table(out).to_pylist()
    labels = Labels.load(demo / "predicted.label")
    bouts = label_bouts(labels)
    assert [(r["larva"], r["behaviour"], r["start"], r["end"], r["n_steps"]) for r in rows] == \
        [(b.larva, b.label, b.start, b.end, b.n_steps) for b in bouts]
    assert all(abs(r["duration"] - (r["end"] - r["start"])) < 1e-12 for r in rows)
    # mean probability of the bout's behaviour over its steps, from the sidecar
    item = read_label_inputs([demo / "predicted.label"])[0]
    first = bouts[0]
    track = labels.tracks[first.larva]
    p = item.probabilities.aligned(first.larva, track.t)[first.first:first.last + 1,
                                                          PREDICTED_NAMES.index(first.label)]
    assert rows[0]["mean_probability"] == pytest.approx(float(p.mean()))


def test_summary_fractions_sum_to_one_and_rates_count_bouts(demo, tmp_path):
    out = tmp_path / "summary.csv"
    assert cli("export", demo / "predicted.label", "--to", "csv", "--table", "summary", "-o", out) == 0
    rows = pacsv.read_csv(out).to_pylist()
    labels = Labels.load(demo / "predicted.label")
    assert len(rows) == len(labels.tracks) * len(PREDICTED_NAMES)  # zero rows included
    bouts = label_bouts(labels)
    for larva in labels.tracks:
        mine = [r for r in rows if r["larva"] == larva]
        assert sum(r["time_fraction"] for r in mine) == pytest.approx(1.0)
        for r in mine:
            n = sum(1 for b in bouts if b.larva == larva and b.label == r["behaviour"])
            assert r["bouts"] == n
            assert r["bout_rate_per_min"] == pytest.approx(60 * n / r["labelled_s"])


def test_trxmat_export_reimports_to_the_same_tags_and_keeps_other_fields(demo, tmp_path):
    out = tmp_path / "tagged.mat"
    assert cli("export", demo / "predicted.label", "--to", "trxmat", "-o", out) == 0
    with h5py.File(out) as f:
        assert "tagging_provenance" in f and "x_contour" in f["trx"]
        assert "run" not in f["trx"] and "run_large" in f["trx"]
    assert cli("import", out, tmp_path / "back.label") == 0
    original, back = Labels.load(demo / "predicted.label"), Labels.load(tmp_path / "back.label")
    assert sorted(back.tracks) == sorted(original.tracks)
    for larva, track in original.tracks.items():
        assert back.tracks[larva].labels == track.labels
    # the tracking data are those of the original file
    a, b = load(demo / "trx.mat"), load(out)
    assert np.array_equal(a.t, b.t) and np.array_equal(a.spine, b.spine)


def test_trxmat_export_replaces_old_jbm_flags_in_a_v5_file(demo, tmp_path):
    run = load(demo / "trx.mat")
    old = run.with_tags(np.ones((run.n_steps, 2), dtype=bool), ("run", "hunch"))
    write_trxmat(old, tmp_path / "trx.mat", version="5")
    labels = Labels.load(demo / "groundtruth.label")
    labels.tracking = [tmp_path / "trx.mat"]
    labels.dump(tmp_path / "truth.label")
    assert cli("export", tmp_path / "truth.label", "--to", "trxmat", "-o", tmp_path / "out.mat") == 0
    assert (tmp_path / "out.mat").read_bytes().startswith(b"MATLAB 5.0 MAT-file")
    tagged = load(tmp_path / "out.mat")
    assert set(tagged.tag_names) == set(labels.names)  # the old flags are gone
    reread = Labels.from_run(tagged)
    for larva, track in labels.tracks.items():
        assert reread.tracks[larva].labels == track.labels


def test_trxmat_export_from_other_tracking_formats_writes_a_new_file(tmp_path):
    result = simulate(SimulationConfig(n_larvae=2, duration=6.0, seed=2))
    write_simulation(result, tmp_path, "chore")
    assert cli("export", tmp_path / "groundtruth.label", "--to", "trxmat", "-o", tmp_path / "trx.mat") == 0
    truth, tagged = Labels.load(tmp_path / "groundtruth.label"), Labels.from_run(load(tmp_path / "trx.mat"))
    for larva, track in truth.tracks.items():
        assert tagged.tracks[larva].labels == track.labels


def test_nwb_export_reads_back_with_pynwb(demo, tmp_path):
    pynwb = pytest.importorskip("pynwb", reason="the nwb extra (pynwb) is not installed")
    out = tmp_path / "run.nwb"
    assert cli("export", demo / "predicted.label", "--to", "nwb", "-o", out) == 0
    bouts = label_bouts(Labels.load(demo / "predicted.label"))
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwbfile = io.read()
        frame = nwbfile.intervals["behavior"].to_dataframe()
        assert json.loads(nwbfile.notes)["provenance"]["command"] == "export"
        assert nwbfile.session_id == Labels.load(demo / "predicted.label").run_id
    assert len(frame) == len(bouts)
    assert frame["behavior"].tolist() == [b.label for b in bouts]
    assert np.allclose(frame["start_time"], [b.start for b in bouts])
    assert np.allclose(frame["stop_time"], [b.end for b in bouts])
    assert frame["mean_probability"].between(0, 1).all()


def test_run_formats_need_a_template_for_several_runs(demo, tmp_path):
    copy = tmp_path / "copy.label"
    copy.write_bytes((demo / "predicted.label").read_bytes())
    assert cli("export", demo / "predicted.label", copy, "--to", "nwb", "-o", tmp_path / "one.nwb") == 1
    assert not (tmp_path / "one.nwb").exists()


def test_a_bad_label_name_stops_a_batch_before_its_first_file(demo, tmp_path, capsys):
    good = tmp_path / "a" / "predicted.label"
    good.parent.mkdir()
    labels = Labels.load(demo / "predicted.label")
    labels.tracking = [demo / "trx.mat"]
    labels.dump(good)
    labels.names.append("new behavior")
    labels.metadata["id"] = "other"
    bad = tmp_path / "b" / "predicted.label"
    bad.parent.mkdir()
    labels.dump(bad)
    assert cli("export", good, bad, "--to", "trxmat", "-o", "{dir}/tagged.mat") == 1
    assert "'new behavior' is not a valid MATLAB field name" in capsys.readouterr().err
    assert not (good.parent / "tagged.mat").exists()


def test_refuses_to_overwrite_without_flag(demo, tmp_path, capsys):
    out = tmp_path / "bouts.csv"
    out.write_text("precious")
    assert cli("export", demo / "predicted.label", "--to", "csv", "--table", "bouts", "-o", out) == 1
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert cli("export", demo / "predicted.label", "--to", "csv", "--table", "bouts", "-o", out,
               "--overwrite") == 0
    assert out.read_text().startswith('"run","larva","behaviour"')
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("content, problem", [
    ("not json at all", "invalid JSON"),
    ('{"metadata": {"id": "x"}, "data": [{"id": "1", "t": [0, 1], "labels": [1]}]}', "invalid label file"),
])
def test_bad_input_is_a_one_line_error(tmp_path, content, problem):
    bad = tmp_path / "bad.label"
    bad.write_text(content)
    done = subprocess.run([sys.executable, "-m", "taggingbackends.cli", "export", str(bad), "--to", "csv",
                           "-o", str(tmp_path / "out.csv")], capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.label" in lines[0]
    assert problem in lines[0]
    assert not (tmp_path / "out.csv").exists()


def test_bad_options_and_mismatched_sidecar(demo, tmp_path, capsys):
    assert cli("export", demo / "predicted.label", "--to", "xlsx", "-o", tmp_path / "x") == 2
    assert cli("export", demo / "predicted.label", "--to", "nwb", "--table", "bouts", "-o", tmp_path / "x") == 2
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "predicted.label").write_bytes((demo / "predicted.label").read_bytes())
    with h5py.File(folder / "predicted.probabilities.h5", "w") as f:
        f["larva_id"], f["t"], f["probabilities"] = np.zeros(1, int), np.zeros(1), np.zeros((1, 1))
        f.attrs["labels"], f.attrs["run_id"] = ["run"], "another_run"
    capsys.readouterr()
    assert cli("export", folder, "--to", "csv", "-o", tmp_path / "x.csv", "--no-verify") == 1
    assert "another_run" in capsys.readouterr().err


def test_a_multi_run_label_file_gives_one_table_with_both_runs(tmp_path):
    runs = []
    for run_id, entries in (("r1", ["run", "run", "cast"]), ("r2", ["cast", "cast", "cast"])):
        labels = Labels(["run", "cast"], metadata={"id": run_id})
        labels.tracks[1] = TrackLabels([0.0, 0.1, 0.2], entries)
        runs.append(labels)
    Labels.dump_all(runs, tmp_path / "both.label")
    out = tmp_path / "bouts.parquet"
    assert cli("export", tmp_path / "both.label", "--to", "parquet", "--table", "bouts", "-o", out) == 0
    rows = pq.read_table(out).to_pylist()
    assert [(r["run"], r["behaviour"], r["n_steps"]) for r in rows] == [("r1", "run", 2), ("r1", "cast", 1),
                                                                        ("r2", "cast", 3)]
    assert all(r["mean_probability"] is None for r in rows)  # no sidecar
