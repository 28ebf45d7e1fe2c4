"""`tagging-backend new`: the project generator, and the example backend it makes
trained and run as ``tagging-backend`` runs it (scripts from the project root, src/
on PYTHONPATH, the project not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import taggingbackends.newproject as newproject
from taggingbackends.cli import write_simulation
from taggingbackends.data.labels import Labels
from taggingbackends.errors import OutputExistsError, TaggingError
from taggingbackends.explorer import BackendExplorer, is_backend_project
from taggingbackends.fileio import sha1sum
from taggingbackends.newproject import create_project
from taggingbackends.simulate import SimulationConfig, simulate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAME, PACKAGE = "Demo-Tagger", "demo_tagger"
TRAINING_SEEDS, HOLDOUT_SEED = (1, 2), 3


def run_script(project: Path, step: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``src/<package>/models/<step>.py`` as ``tagging-backend`` does."""
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    script = project / "src" / PACKAGE / "models" / f"{step}.py"
    return subprocess.run([sys.executable, str(script), "--project-dir", str(project), *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def simulate_into(directory: Path, seed: int) -> None:
    write_simulation(simulate(SimulationConfig(n_larvae=6, duration=40.0, seed=seed)), directory, "trxmat")


def agreement(predicted: Labels, truth: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Aligned (true, predicted) primary labels of every step of every larva."""
    expected, got = [], []
    for larva in truth:
        assert np.array_equal(predicted[larva].t, truth[larva].t)
        expected += truth[larva].labels
        got += [entry if isinstance(entry, str) else "" for entry in predicted[larva].labels]
    return np.array(expected), np.array(got)


def f1(expected: np.ndarray, got: np.ndarray, label: str) -> float:
    hits = np.sum((expected == label) & (got == label))
    return 2 * hits / max(np.sum(expected == label) + np.sum(got == label), 1)


# ------------------------------------------------------------------ generator
def test_layout_and_rendering(tmp_path):
    project = create_project(NAME, tmp_path)
    assert project == tmp_path / NAME and is_backend_project(project)
    for path in ("README.md", "LICENSE", "pyproject.toml", ".gitignore", "test/__init__.py",
                 f"test/test_{PACKAGE}.py", "data/raw/.gitkeep", "data/interim/.gitkeep",
                 "data/processed/.gitkeep", "models/.gitkeep", "pretrained_models/.gitkeep",
                 *(f"src/{PACKAGE}/{p}" for p in (
                     "__init__.py", "features/__init__.py", "features/build_features.py", "models/__init__.py",
                     "models/classifier.py", "models/train_model.py", "models/predict_model.py"))):
        assert (project / path).is_file(), path
    files = [p for p in project.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix == ".tmpl" or "__package__" in str(p)]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "{{" not in text, path
        if path.suffix == ".py":
            compile(text, str(path), "exec")
    document = tomllib.loads((project / "pyproject.toml").read_text())
    assert document["project"]["name"] == NAME
    assert any(dep.startswith("scikit-learn") for dep in document["project"]["dependencies"])
    assert '__version__ = "0.1.0"' in (project / "src" / PACKAGE / "__init__.py").read_text()
    explorer = BackendExplorer(project, model_instance="m1")
    assert explorer.package == PACKAGE and explorer.list_model_instances() == []
    assert explorer.script("train_model") and explorer.script("predict_model") and explorer.script("build_features")
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]    # no temporary directory left


@pytest.mark.parametrize("name", ["", "1tagger", "my tagger", "a/b", "-x", "_x", "tagger!", "é",
                                  "class", "json", "NumPy", "taggingbackends", "x" * 101])
def test_invalid_names_are_refused(tmp_path, name):
    with pytest.raises(TaggingError) as info:
        create_project(name, tmp_path)
    assert "\n" not in str(info.value) and "project name" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_directory(tmp_path):
    (tmp_path / NAME).mkdir()
    create_project(NAME, tmp_path)                                  # an empty directory is fine
    (tmp_path / NAME / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        create_project(NAME, tmp_path)
    assert (tmp_path / NAME / "mine.txt").read_text() == "keep me"
    create_project(NAME, tmp_path, overwrite=True)
    assert not (tmp_path / NAME / "mine.txt").exists() and (tmp_path / NAME / "pyproject.toml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError):
        create_project("file", tmp_path)


def test_interrupted_creation_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "old.txt").write_text("old")
    real = newproject.render_template
    calls = []

    def failing(text, values):
        calls.append(text)
        if len(calls) % 5 == 0:
            raise KeyboardInterrupt
        return real(text, values)

    monkeypatch.setattr(newproject, "render_template", failing)
    with pytest.raises(KeyboardInterrupt):
        create_project(NAME, tmp_path, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        create_project("Other", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]
    assert [p.name for p in (tmp_path / NAME).iterdir()] == ["old.txt"]


# ------------------------------------------------------------ example backend
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A new project with simulated labelled data in data/raw/m1/, trained as model m1,
    and a held-out recording in data/raw/holdout/."""
    project = create_project(NAME, tmp_path_factory.mktemp("projects"))
    for seed in TRAINING_SEEDS:
        simulate_into(project / "data" / "raw" / "m1" / f"s{seed}", seed)
    simulate_into(project / "data" / "raw" / "holdout" / f"s{HOLDOUT_SEED}", HOLDOUT_SEED)
    result = run_script(project, "train_model", "--model-instance", "m1", "--seed", "0")
    assert result.returncode == 0, result.stderr
    return project, result


def test_training_writes_a_json_model(trained):
    project, result = trained
    assert "trained on" in result.stdout and len(result.stdout.strip().splitlines()) == 1
    model = project / "models" / "m1" / "model.json"
    document = json.loads(model.read_text())
    assert document["labels"] == ["run", "cast", "back", "hunch", "roll", "stop", "small_motion"]
    assert "roll" not in document["classes"] and {"run", "cast", "stop"} <= set(document["classes"])
    assert np.shape(document["coef"]) == (len(document["classes"]), len(document["feature_names"]))
    assert document["info"]["taggingbackends"] and document["counts"]["run"] > 0
    assert BackendExplorer(project).list_model_instances() == ["m1"]


@pytest.mark.parametrize("token, min_accuracy, min_f1", [("m1", 0.85, 0.8), ("holdout", 0.8, 0.7)])
def test_prediction_agrees_with_ground_truth(trained, token, min_accuracy, min_f1):
    project, _ = trained
    args = ["--model-instance", "m1"] + (["--sandbox", token] if token != "m1" else [])
    result = run_script(project, "predict_model", *args)
    assert result.returncode == 0, result.stderr
    raw, processed = project / "data" / "raw" / token, project / "data" / "processed" / token
    outputs = sorted(processed.rglob("*.label"))
    assert [p.relative_to(processed).parent for p in outputs] == sorted(p.relative_to(raw) for p in raw.iterdir())
    expected, got = [], []
    for output in outputs:
        predicted = Labels.load(output)                 # also verifies the dependency's SHA-1
        truth = Labels.load(raw / output.relative_to(processed).parent / "groundtruth.label")
        assert output.name == "predicted.label" and predicted.run_id == truth.run_id
        assert [p.resolve() for p in predicted.dependency_paths()] == \
            [(raw / output.relative_to(processed).parent / "trx.mat").resolve()]
        provenance = predicted.metadata["provenance"]
        assert provenance["software"] == NAME and provenance["model_instance"] == "m1"
        assert provenance["model_sha1"] == sha1sum(project / "models" / "m1" / "model.json")
        e, g = agreement(predicted, truth)
        expected.append(e)
        got.append(g)
    expected, got = np.concatenate(expected), np.concatenate(got)
    accuracy = float(np.mean(expected == got))
    majority = max(np.mean(expected == name) for name in set(expected))
    run_cast_f1 = (f1(expected, got, "run") + f1(expected, got, "cast")) / 2
    print(f"{token}: accuracy {accuracy:.3f} (majority {majority:.3f}), macro-F1 run/cast {run_cast_f1:.3f}, "
          f"F1 stop {f1(expected, got, 'stop'):.3f}")
    assert accuracy > min_accuracy and accuracy > majority + 0.1
    assert run_cast_f1 > min_f1


def test_predict_refuses_to_overwrite(trained):
    project, _ = trained
    first = run_script(project, "predict_model", "--model-instance", "m1", "--sandbox", "again")
    assert first.returncode == 1 and "no tracking files" in first.stderr     # data/raw/again is empty
    simulate_into(project / "data" / "raw" / "again" / "x", 9)
    assert run_script(project, "predict_model", "--model-instance", "m1", "--sandbox", "again").returncode == 0
    second = run_script(project, "predict_model", "--model-instance", "m1", "--sandbox", "again")
    assert second.returncode == 1 and second.stderr.startswith("error:") and "--overwrite" in second.stderr
    third = run_script(project, "predict_model", "--model-instance", "m1", "--sandbox", "again", "--overwrite")
    assert third.returncode == 0, third.stderr


def test_predict_without_a_trained_model_is_a_one_line_error(trained):
    project, _ = trained
    result = run_script(project, "predict_model", "--model-instance", "untrained", "--sandbox", "holdout")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no trained model" in lines[0]
    assert not (project / "models" / "untrained").exists()


def test_train_without_data_is_a_one_line_error(trained):
    project, _ = trained
    result = run_script(project, "train_model", "--model-instance", "empty")
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_generated_project_tests_pass(tmp_path):
    project = create_project(NAME, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
