"""``tagging-backend adapt``: EM estimation of class base rates, and the command end to end
(instance with card and provenance, stored priors used by predict, determinism, overwrite
guard, bad input)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from maggotuba.adapt import estimate_priors, floor_priors, pseudo_labels, AdaptSettings  # noqa: E402
from taggingbackends.cli import main, write_simulation  # noqa: E402
from taggingbackends.data.labels import Labels  # noqa: E402
from taggingbackends.simulate import SimulationConfig, simulate  # noqa: E402


# ------------------------------------------------------------------ EM (unit)
def synthetic_posteriors(true_priors, training, n=20000, separation=1.5, seed=0):
    """Posteriors of the exact Bayes classifier trained at ``training`` priors on 1-D
    Gaussian classes (means 0, s, 2s, ...), for samples drawn at ``true_priors``."""
    rng = np.random.default_rng(seed)
    k = len(true_priors)
    classes = rng.choice(k, size=n, p=true_priors)
    x = rng.normal(classes * separation, 1.0)
    log_likelihood = -0.5 * (x[:, None] - np.arange(k)[None, :] * separation) ** 2
    joint = np.exp(log_likelihood) * np.asarray(training)[None, :]
    return joint / joint.sum(axis=1, keepdims=True)


def test_em_recovers_known_priors_where_the_mean_posterior_does_not():
    truth = np.array([0.70, 0.20, 0.07, 0.03])
    training = np.full(4, 0.25)
    posteriors = synthetic_posteriors(truth, training)
    estimate = estimate_priors(posteriors, training, floor=0.0)
    assert estimate.converged
    assert np.abs(estimate.priors - truth).max() < 0.02
    naive = posteriors.mean(axis=0)   # what the unadjusted classifier says: pulled towards training
    assert np.abs(naive - truth).max() > 0.05


def test_em_starts_from_non_uniform_training_priors():
    truth = np.array([0.25, 0.25, 0.25, 0.25])
    training = np.array([0.55, 0.25, 0.15, 0.05])
    estimate = estimate_priors(synthetic_posteriors(truth, training, seed=1), training, floor=0.0)
    assert np.abs(estimate.priors - truth).max() < 0.02


def test_prior_floor_keeps_absent_classes_alive():
    training = np.full(3, 1 / 3)
    posteriors = synthetic_posteriors(np.array([0.6, 0.4, 0.0]), training, separation=4.0, seed=2)
    estimate = estimate_priors(posteriors, training, floor=0.01)
    assert estimate.priors.min() >= 0.01 - 1e-12 and abs(estimate.priors.sum() - 1) < 1e-9
    assert np.allclose(floor_priors(np.array([1.0, 0.0]), 0.1), [0.9, 0.1])


def test_pseudo_labels_need_confidence_and_several_larvae_and_are_capped():
    posteriors = np.array([[0.95, 0.05]] * 50 + [[0.05, 0.95]] * 10 + [[0.6, 0.4]] * 5)
    larvae = np.array([0] * 25 + [1] * 25 + [2] * 10 + [3] * 5)
    chosen = pseudo_labels(posteriors, larvae, AdaptSettings(confidence=0.9, per_class_cap=20, min_larvae=2))
    assert chosen.confident.tolist() == [50, 10] and chosen.larvae.tolist() == [2, 1]
    assert chosen.kept.tolist() == [20, 0]          # class 1 seen in one larva only: dropped
    assert np.all(chosen.classes == 0) and len(set(chosen.rows)) == 20 and chosen.rows.max() < 50


# ------------------------------------------------------------ command, end to end
def run(args, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("adapt_data")
    files = []
    for k, seed in enumerate((5, 6)):
        result = simulate(SimulationConfig(n_larvae=4, duration=25.0, seed=seed))
        files.append(write_simulation(result, base / f"rec{k}", "trxmat")[0])
    return files


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_adapt_writes_an_instance_that_predict_uses(recordings, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["adapt", *map(str, recordings), "-m", "default", "-O", "mylab", "--seed", "3"], capsys)
    assert code == 0, err
    instance = tmp_path / "models" / "mylab"
    assert "wrote models/mylab" in out and "estimated base rates" in out
    config = json.loads((instance / "clf_config.json").read_text())
    priors = config["adapted_priors"]
    assert list(priors) == config["labels"] and abs(sum(priors.values()) - 1) < 1e-4
    assert min(priors.values()) >= 0.001 - 1e-6
    adaptation = config["adaptation"]
    assert [f["sha1"] for f in adaptation["inputs"]] == [sha1(p) for p in recordings]
    assert adaptation["seed"] == 3 and adaptation["source_instance"]["name"] == "default"
    assert set(adaptation["pseudo_labels"]["kept"]) == set(config["labels"])
    assert sum(adaptation["pseudo_labels"]["kept"].values()) > 0
    card = (instance / "model_card.md").read_text()
    assert card.startswith("# Model card: mylab") and "## Adaptation (no labels)" in card
    assert not list(instance.glob("*.pt")) and not list(instance.glob("*.pkl"))
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]

    # predict -m mylab: natural priors by default (the estimate measured worse, docs/maggotuba.md);
    # --priors adapted uses the stored estimate, and --priors none still works
    code, _, err = run(["-q", "predict", str(recordings[0]), "-m", "mylab", "-o", str(tmp_path / "n.label")], capsys)
    assert code == 0, err
    assert Labels.load(tmp_path / "n.label", verify=False).metadata["provenance"]["priors"]["priors"] == "natural"
    code, _, err = run(["-q", "predict", str(recordings[0]), "-m", "mylab", "-o", str(tmp_path / "a.label"),
                        "--priors", "adapted"], capsys)
    assert code == 0, err
    record = Labels.load(tmp_path / "a.label", verify=False).metadata["provenance"]["priors"]
    assert record["priors"] == "adapted"
    assert record["target"] == pytest.approx(priors, abs=1e-5)
    code, _, err = run(["-q", "predict", str(recordings[0]), "-m", "mylab", "-o", str(tmp_path / "b.label"),
                        "--priors", "none"], capsys)
    assert code == 0, err
    assert Labels.load(tmp_path / "b.label", verify=False).metadata["provenance"]["priors"]["priors"] == "none"

    # an existing instance is not replaced without --overwrite ...
    weights = sha1(instance / "tagger.safetensors")
    code, _, err = run(["adapt", *map(str, recordings), "-O", "mylab", "--seed", "3"], capsys)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert sha1(instance / "tagger.safetensors") == weights
    # ... and with it, the same seed gives the same weights (determinism)
    code, _, err = run(["adapt", *map(str, recordings), "-O", "mylab", "--seed", "3", "--overwrite"], capsys)
    assert code == 0, err
    assert sha1(instance / "tagger.safetensors") == weights
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]


def test_priors_only_keeps_the_weights(recordings, tmp_path, capsys):
    code, _, err = run(["adapt", str(recordings[1]), "-O", str(tmp_path / "p"), "--priors-only"], capsys)
    assert code == 0, err
    from maggotuba.backend import resolve_model

    source = resolve_model("default")
    assert sha1(tmp_path / "p" / "tagger.safetensors") == sha1(source / "tagger.safetensors")
    config = json.loads((tmp_path / "p" / "clf_config.json").read_text())
    assert "self_training" not in config["adaptation"] and config["adapted_priors"]


def test_broken_input_is_one_line_naming_the_file(recordings, tmp_path, capsys):
    broken = tmp_path / "broken.mat"
    broken.write_bytes(b"MATLAB 5.0 MAT-file, but cut short" + bytes(50))
    code, out, err = run(["adapt", str(recordings[0]), str(broken), "-O", str(tmp_path / "x")], capsys)
    assert code == 1
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "broken.mat" in lines[0]
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_replaces_an_instance_only_once_the_new_one_is_complete(tmp_path):
    from taggingbackends.errors import OutputExistsError
    from taggingbackends.project import new_model_instance

    final = tmp_path / "models" / "m"
    with new_model_instance(final) as work:
        (work / "clf_config.json").write_text('{"v": 1}')
    with pytest.raises(RuntimeError):
        with new_model_instance(final, overwrite=True) as work:
            (work / "clf_config.json").write_text('{"v": 2}')
            raise RuntimeError("killed")
    assert (final / "clf_config.json").read_text() == '{"v": 1}'       # the old one survives a failure
    with new_model_instance(final, overwrite=True) as work:
        (work / "clf_config.json").write_text('{"v": 3}')
    assert (final / "clf_config.json").read_text() == '{"v": 3}'
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["m"]   # no leftovers
    other = tmp_path / "models" / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(OutputExistsError):                              # not a model instance: never replaced
        with new_model_instance(other, overwrite=True):
            pass
    assert (other / "readme.txt").read_text() == "mine"


def test_model_card_names_the_final_instance_not_its_staging_folder():
    from maggotuba.backend import final_instance_name

    assert final_instance_name(Path("models/.mylab.partial-a1b2c3")) == "mylab"
    assert final_instance_name(Path("models/my.lab.v2")) == "my.lab.v2"
    assert final_instance_name(Path("models/.hidden")) == ".hidden"
