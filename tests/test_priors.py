"""Prior shift: class probabilities re-weighted by target / training class frequencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

pytest.importorskip("torch")

from maggotuba.predict import (  # noqa: E402
    DEFAULT_PRIORS, PriorShift, natural_base_rates, resolve_priors,
)
from taggingbackends.data.labels import Labels  # noqa: E402
from taggingbackends.errors import TaggingError  # noqa: E402

CLI = [sys.executable, "-m", "taggingbackends.cli"]


def fake_model(labels=("a", "b"), priors=None, members=None, directory="m"):
    metadata = {} if priors is None else {"training_effective_priors": dict(zip(labels, priors))}
    return SimpleNamespace(config=SimpleNamespace(labels=list(labels)), metadata=metadata,
                           members=members, directory=Path(directory))


def test_bayes_rule_reweights_and_renormalises():
    shift = PriorShift("x", ("a", "b"), target=np.array([0.5, 0.5]), training=np.array([0.8, 0.2]))
    out = shift.apply(np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 0.0]], dtype=np.float32))
    # 0.5·0.5/0.8 : 0.5·0.5/0.2 = 0.3125 : 1.25 → 0.2 : 0.8; 0.9/0.8 : 0.1/0.2 = 1.125 : 0.5
    assert np.allclose(out[0], [0.2, 0.8]) and np.allclose(out[1], [1.125 / 1.625, 0.5 / 1.625])
    assert np.all(out[2] == 0) and out.dtype == np.float32
    same = PriorShift("none", ("a", "b"))
    probs = np.array([[0.3, 0.7]], dtype=np.float32)
    assert same.apply(probs) is probs and same.record() == {"priors": "none"}
    record = shift.record()
    assert record["target"] == {"a": 0.5, "b": 0.5} and record["training"] == {"a": 0.8, "b": 0.2}


def test_resolve_choices_and_files(tmp_path):
    model = fake_model(priors=[0.25, 0.75])
    uniform = resolve_priors("uniform", model)
    assert np.allclose(uniform.target, [0.5, 0.5]) and np.allclose(uniform.training, [0.25, 0.75])
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"a": 3, "b": 1, "other": 5}))
    assert np.allclose(resolve_priors(str(path), model).target, [0.75, 0.25])
    path.write_text(json.dumps({"a": 3}))
    with pytest.raises(TaggingError, match="no frequency for b"):
        resolve_priors(str(path), model)
    path.write_text(json.dumps({"a": 3, "b": -1}))
    with pytest.raises(TaggingError, match="positive"):
        resolve_priors(str(path), model)
    with pytest.raises(TaggingError, match="not natural, uniform, none"):
        resolve_priors(str(tmp_path / "missing.json"), model)
    with pytest.raises(TaggingError, match="no natural base rate for a, b"):
        resolve_priors("natural", model)
    assert not resolve_priors("none", model).active


def test_classes_absent_from_a_finetune_keep_finite_weights():
    """A tagger fine-tuned on a few corrections stores a zero training prior for the classes
    it never saw: Bayes' rule must not divide by it (it gave NaN probabilities and wrong
    labels after a retrain in the web app)."""
    model = fake_model(labels=("a", "b", "c"), priors=[0.5, 0.5, 0.0])
    shift = resolve_priors("uniform", model)
    assert np.all(np.isfinite(shift.training)) and shift.training.min() > 0
    assert "no training examples of c" in shift.record()["note"]
    out = shift.apply(np.array([[0.2, 0.2, 0.6], [0.7, 0.2, 0.1]], dtype=np.float32))
    assert np.all(np.isfinite(out)) and np.allclose(out.sum(axis=1), 1)
    assert out[0].argmax() == 2 and out[1].argmax() == 0


def test_models_that_cannot_shift_refuse_explicitly_and_fall_back_by_default():
    bare = fake_model()
    with pytest.raises(TaggingError, match="stores no training class priors"):
        resolve_priors("uniform", bare)
    with pytest.raises(TaggingError, match="bagging"):
        resolve_priors("uniform", fake_model(priors=[0.5, 0.5], members=[1, 2]))
    fallback = resolve_priors(None, bare)
    assert not fallback.active
    if DEFAULT_PRIORS != "none":
        assert "not applicable" in fallback.record()["note"]


def test_natural_base_rates_come_from_the_simulator():
    from taggingbackends.simulate import BEHAVIOURS, expected_occupancy

    rates = natural_base_rates()
    assert sum(rates[b] for b in BEHAVIOURS) == pytest.approx(1.0)
    assert rates["run_large"] == rates["run"] == expected_occupancy()["run"]
    assert 0.55 < rates["run"] < 0.7 and 0.2 < rates["cast"] < 0.3 and rates["hunch"] < 0.01


def test_shipped_default_natural_priors():
    from maggotuba.backend import load_model, resolve_model

    saved = load_model(resolve_model(None))
    shift = resolve_priors("natural", saved)
    assert shift.active and np.allclose(shift.training, 1 / 7, atol=1e-5)
    assert shift.target[saved.config.labels.index("run_large")] == pytest.approx(natural_base_rates()["run"])
    # uniform target on a uniformly balanced model changes nothing but float rounding
    probs = np.random.default_rng(0).dirichlet(np.ones(7), size=50).astype(np.float32)
    assert np.allclose(resolve_priors("uniform", saved).apply(probs), probs, atol=1e-5)


def test_predict_cli_records_priors_and_is_deterministic(tmp_path):
    data = tmp_path / "sim"
    assert subprocess.run([*CLI, "simulate", str(data), "-n", "3", "--duration", "20", "--format", "trxmat",
                           "--seed", "11"], capture_output=True).returncode == 0
    outputs = {}
    for choice in ("none", "natural", "natural"):
        out = tmp_path / f"{choice}{len(outputs)}.label"
        result = subprocess.run([*CLI, "predict", str(data / "trx.mat"), "--priors", choice, "-o", str(out)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        outputs[out] = choice
    (none, first, second) = list(outputs)
    natural = Labels.load(first)
    record = natural.metadata["provenance"]["priors"]
    assert record["priors"] == "natural" and record["target"]["run_large"] > 0.5
    assert Labels.load(none).metadata["provenance"]["priors"] == {"priors": "none"}
    assert natural.to_dict()["data"] == Labels.load(second).to_dict()["data"]
    with h5py.File(first.with_name(first.name.replace(".label", ".probabilities.h5"))) as f:
        assert json.loads(f.attrs["priors"])["priors"] == "natural"
        assert np.allclose(f["probabilities"][:].sum(axis=1), 1, atol=1e-5)
    bad = subprocess.run([*CLI, "predict", str(data / "trx.mat"), "--priors", "nonsense", "-o",
                          str(tmp_path / "x.label")], capture_output=True, text=True)
    assert bad.returncode == 1 and "not natural, uniform, none" in bad.stderr
    assert not (tmp_path / "x.label").exists()
