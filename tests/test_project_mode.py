"""Backend project mode as upstream users know it (seeds 000/001): BackendExplorer,
train/predict on data/raw/<instance>, sandboxes, 8 concurrent predictions, locks,
interrupted runs, merge, and the upstream flags."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from taggingbackends.data.labels import Labels
from taggingbackends.errors import OutputExistsError, TaggingError
from taggingbackends.explorer import BackendExplorer, check_token, is_backend_project
from taggingbackends.main import parse_arguments
from taggingbackends.project import new_model_instance, script_arguments

CLI = [sys.executable, "-m", "taggingbackends.cli"]


def cli(*args, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, **kwargs)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Two small simulated recordings (trx.mat + groundtruth.label)."""
    root = tmp_path_factory.mktemp("recordings")
    for seed, name in ((1, "a"), (2, "b")):
        result = cli("simulate", root / name, "-n", "4", "--duration", "20", "--seed", seed,
                     "--format", "trxmat", "--balanced")
        assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def reference(recordings, tmp_path_factory):
    """Direct-mode predictions of each recording with the shipped default (the truth for
    concurrent and project-mode runs: prediction is deterministic)."""
    out = tmp_path_factory.mktemp("reference")
    labels = {}
    for name in ("a", "b"):
        result = cli("predict", recordings / name / "trx.mat", "-o", out / f"{name}.label")
        assert result.returncode == 0, result.stderr
        labels[name] = Labels.load(out / f"{name}.label", verify=False)
    return labels


def same_labels(a: Labels, b: Labels) -> bool:
    return sorted(a.tracks) == sorted(b.tracks) and all(
        np.array_equal(a.tracks[k].t, b.tracks[k].t) and a.tracks[k].labels == b.tracks[k].labels
        for k in a.tracks)


# ------------------------------------------------------------ explorer and script API
def test_explorer_paths_and_files(tmp_path):
    (tmp_path / "models" / "m1").mkdir(parents=True)
    (tmp_path / "models" / ".m2.partial-x").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "My-Tagger"\n')
    explorer = BackendExplorer(tmp_path, model_instance="models/m1")
    assert explorer.model_instance == "m1" and explorer.token == "m1"
    assert explorer.package == "my_tagger" and is_backend_project(tmp_path)
    assert explorer.raw_data_dir() == tmp_path / "data" / "raw" / "m1" and explorer.raw_data_dir().is_dir()
    (explorer.raw_data_dir() / "x" / "trx.mat").parent.mkdir()
    (explorer.raw_data_dir() / "x" / "trx.mat").write_bytes(b"")
    (explorer.raw_data_dir() / ".hidden").write_bytes(b"")
    assert explorer.list_input_files() == [explorer.raw_data_dir() / "x" / "trx.mat"]
    assert list(explorer.list_input_files(group_by_directories=True)) == [explorer.raw_data_dir() / "x"]
    assert explorer.list_model_instances() == ["m1"]
    sandboxed = BackendExplorer(tmp_path, model_instance="m1", sandbox="job-7")
    assert sandboxed.processed_data_dir(create=False) == tmp_path / "data" / "processed" / "job-7"
    assert sandboxed.model_dir() == tmp_path / "models" / "m1"
    for bad in ("../x", "a/b", "", "..", "/abs"):
        with pytest.raises(TaggingError):
            check_token(bad)
    with pytest.raises(TaggingError, match="--model-instance or --sandbox"):
        BackendExplorer(tmp_path).raw_data_dir()


def test_script_arguments_round_trip(tmp_path):
    explorer = BackendExplorer(tmp_path, model_instance="m1", sandbox="s1")
    args = explorer.to_args() + script_arguments({"sample_size": 100, "labels": ["run", "cast"],
                                                  "include_all": None, "debug": True, "skip": False,
                                                  "frame_interval": 0.1})
    again, kwargs = parse_arguments(args)
    assert (again.project_dir, again.model_instance, again.sandbox) == (tmp_path.resolve(), "m1", "s1")
    assert kwargs == {"sample_size": 100, "labels": "run,cast", "debug": True, "frame_interval": 0.1}
    with pytest.raises(TaggingError):
        parse_arguments(["positional"])


def test_lock_refuses_a_second_holder(tmp_path):
    explorer = BackendExplorer(tmp_path, model_instance="m1")
    with explorer.lock():
        with pytest.raises(TaggingError, match="--sandbox"):
            with BackendExplorer(tmp_path, model_instance="m1").lock():
                pass
        with BackendExplorer(tmp_path, model_instance="m1", sandbox="other").lock():
            pass  # another sandbox: another lock
    with explorer.lock():
        pass  # released


def test_new_model_instance_is_atomic(tmp_path):
    final = tmp_path / "models" / "m1"
    with pytest.raises(RuntimeError):
        with new_model_instance(final) as work:
            (work / "half.json").write_text("{")
            raise RuntimeError("killed")
    assert not final.exists() and not any((tmp_path / "models").iterdir())
    with new_model_instance(final) as work:
        (work / "clf_config.json").write_text("{}")
    assert (final / "clf_config.json").is_file()
    with pytest.raises(OutputExistsError):
        with new_model_instance(final):
            pass


# ------------------------------------------------------------------ upstream flow
def test_upstream_train_then_predict_in_a_backend_project(recordings, tmp_path):
    """Seed 001: data in data/raw/<tagger>, `train --model-instance`, clear it, put a tracking
    file there, `predict --model-instance` → data/processed/<tagger>/predicted.label."""
    raw = tmp_path / "data" / "raw" / "mytagger"
    shutil.copytree(recordings / "a", raw / "a")
    shutil.copytree(recordings / "b", raw / "b")
    trained = cli("train", "--model-instance", "mytagger", "--iterations", "2,2", "--labels", "run,cast",
                  "--debug", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    config = json.loads((tmp_path / "models" / "mytagger" / "clf_config.json").read_text())
    assert config["labels"] == ["run", "cast"]
    interim = list((tmp_path / "data" / "interim" / "mytagger").glob("larva_dataset_*.hdf5"))
    assert len(interim) == 1  # the dataset is kept for --skip-make-dataset
    again = cli("train", "--model-instance", "mytagger", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    reuse = cli("train", "--model-instance", "second", "--sandbox", "mytagger", "--skip-make-dataset",
                "--iterations", "1,1", "--labels", "run,cast", cwd=tmp_path)
    assert reuse.returncode == 0, reuse.stderr
    second = json.loads((tmp_path / "models" / "second" / "clf_config.json").read_text())
    assert second["training_data"]["dataset"] == str(interim[0])  # reused, not rebuilt
    assert sorted(second["training_data"]["sources"]) == sorted(config["training_data"]["sources"])
    tuned = cli("finetune", "--original-model-instance", "mytagger", "--model-instance", "tuned",
                "--sandbox", "mytagger", "--iterations", "1,1", cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr
    tuned_config = json.loads((tmp_path / "models" / "tuned" / "clf_config.json").read_text())
    assert Path(tuned_config["pretrained_model"]).name == "mytagger" and tuned_config["labels"] == ["run", "cast"]

    shutil.rmtree(raw)
    raw.mkdir()
    shutil.copy(recordings / "a" / "trx.mat", raw / "trx.mat")
    predicted = cli("predict", "--model-instance", "mytagger", "--skip-make-dataset", cwd=tmp_path)  # seed 001
    assert predicted.returncode == 0, predicted.stderr
    out = tmp_path / "data" / "processed" / "mytagger" / "predicted.label"
    labels = Labels.load(out, verify=False)
    assert labels.names == ["run", "cast"]
    assert labels.metadata["provenance"]["model"]["instance"] == "mytagger"
    assert cli("predict", "--model-instance", "mytagger", cwd=tmp_path).returncode == 1  # exists
    assert cli("predict", "--model-instance", "mytagger", "--overwrite", cwd=tmp_path).returncode == 0


def test_train_positional_name_as_larvatagger(recordings, tmp_path):
    result = cli("train", recordings / "a", "quick", "--iterations", "1,1", "--labels", "run,cast",
                 "--models-dir", tmp_path / "models")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "quick" / "clf_config.json").is_file()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
    missing = cli("train", recordings / "a", "--iterations", "1,1")
    assert missing.returncode == 2 and "model-instance" in missing.stderr


def test_missing_raw_directory_is_one_line(tmp_path):
    result = cli("predict", "--model-instance", "default", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "data/raw/default" in result.stderr


# ------------------------------------------------------------------- concurrency
def test_eight_concurrent_sandboxed_predictions(recordings, reference, tmp_path):
    """Upstream breaks when several predictions share a backend ('On HPC clusters'):
    here 8 processes on one project, each with its own --sandbox, all complete and correct."""
    jobs = {}
    for k in range(8):
        name = "ab"[k % 2]
        raw = tmp_path / "data" / "raw" / f"job{k}" / "run1"
        raw.mkdir(parents=True)
        shutil.copy(recordings / name / "trx.mat", raw / "trx.mat")
        jobs[k] = name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*CLI, "predict", "--model-instance", "default", "--sandbox", f"job{k}"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in jobs]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    for k, (out, err, code) in zip(jobs, results):
        assert code == 0, err
        label = tmp_path / "data" / "processed" / f"job{k}" / "run1" / "predicted.label"
        assert same_labels(Labels.load(label, verify=False), reference[jobs[k]]), k
    leftovers = [p for p in (tmp_path / "data").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_same_instance_without_sandbox_is_refused_not_corrupted(recordings, tmp_path):
    raw = tmp_path / "data" / "raw" / "default"
    raw.mkdir(parents=True)
    shutil.copy(recordings / "a" / "trx.mat", raw / "trx.mat")
    with BackendExplorer(tmp_path, model_instance="default").lock():  # another run is busy
        busy = cli("predict", "--model-instance", "default", cwd=tmp_path)
    assert busy.returncode == 1 and "--sandbox" in busy.stderr
    assert not (tmp_path / "data" / "processed" / "default" / "predicted.label").exists()
    assert cli("predict", "--model-instance", "default", cwd=tmp_path).returncode == 0


def test_interrupted_run_leaves_no_partial_output(recordings, reference, tmp_path):
    """SIGTERM (what a scheduler sends) in the middle of a multi-file run: files already
    written are complete, the others absent, no temporary file remains."""
    inputs = []
    for k in range(6):
        directory = tmp_path / f"r{k}"
        directory.mkdir()
        shutil.copy(recordings / "ab"[k % 2] / "trx.mat", directory / "trx.mat")
        inputs.append(directory / "trx.mat")
    proc = subprocess.Popen([*CLI, "predict", *map(str, inputs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (tmp_path / "r0" / "predicted.label").exists():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    written = [k for k in range(6) if (tmp_path / f"r{k}" / "predicted.label").exists()]
    assert 0 in written
    for k in written:
        assert same_labels(Labels.load(tmp_path / f"r{k}" / "predicted.label", verify=False),
                           reference["ab"[k % 2]])
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------------- merge
def test_merge_manual_edits_into_predictions(recordings, reference, tmp_path):
    manual = Labels.load(recordings / "a" / "groundtruth.label", verify=False)
    larva = sorted(manual.tracks)[0]
    manual.tracks[larva].labels[3] = ["hunch", "edited"]
    manual.secondarylabels = ["edited"]
    shutil.copy(recordings / "a" / "trx.mat", tmp_path / "trx.mat")
    manual.dump(tmp_path / "manual.label")
    reference["a"].dump(tmp_path / "predicted.label")
    result = cli("merge", tmp_path / "predicted.label", tmp_path / "manual.label", "--no-verify")
    assert result.returncode == 0, result.stderr
    merged = Labels.load(tmp_path / "merged.label", verify=False)
    t = manual.tracks[larva].t[3]
    position = int(np.argmin(np.abs(merged.tracks[larva].t - t)))
    assert merged.tracks[larva].labels[position] == ["hunch", "edited"]
    changed = sum(a != b for k in merged.tracks
                  for a, b in zip(merged.tracks[k].labels, reference["a"].tracks[k].labels))
    assert changed == 1
    again = cli("merge", tmp_path / "predicted.label", tmp_path / "manual.label", "--no-verify")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_backends_lists_maggotuba(tmp_path):
    result = cli("backends", cwd=tmp_path)
    assert result.returncode == 0 and "maggotuba" in result.stdout
