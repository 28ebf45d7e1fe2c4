"""Model cards and training class frequencies of trained and fine-tuned instances."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from taggingbackends.cli import write_simulation  # noqa: E402
from taggingbackends.simulate import SimulationConfig, simulate  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    for seed in (1, 2):
        write_simulation(simulate(SimulationConfig(n_larvae=5, duration=20, seed=seed)), root / f"s{seed}", "trxmat")
    return root


def test_trained_instance_has_card_and_frequencies(data, tmp_path):
    from maggotuba.backend import TrainOptions, train_instance
    from maggotuba.model_card import CARD_FILE

    out = tmp_path / "mine"
    result = train_instance([data], out, TrainOptions(labels=["run", "cast", "stop"], iterations=(3, 3), seed=1))
    config = json.loads((out / "clf_config.json").read_text())
    counts = np.array(config["training_data"]["class_counts"], dtype=float)
    frequencies = config["training_class_frequencies"]
    assert list(frequencies) == ["run", "cast", "stop"]
    assert np.allclose(list(frequencies.values()), counts / counts.sum())
    effective = counts * np.array(config["class_weights"])
    assert np.allclose(list(config["training_effective_priors"].values()), effective / effective.sum())
    card = (out / CARD_FILE).read_text()
    digest = hashlib.sha1((out / "tagger.safetensors").read_bytes()).hexdigest()
    for expected in ("# Model card: mine", "Trained by `tagging-backend train`", "`run`, `cast`, `stop`",
                     "20 points every 0.1 s", "2 file(s), 10 larvae", "groundtruth.label",
                     "balancing: `auto`", "[3, 3]", f"`tagger.safetensors` SHA-1 `{digest}`",
                     "torch ", "taggingbackends ", "## Validation (held-out larvae)"):
        assert expected in card, expected
    for path in (data / "s1" / "groundtruth.label", data / "s2" / "groundtruth.label"):
        assert hashlib.sha1(path.read_bytes()).hexdigest() in card
    per_class = result["validation"]["per_class"]
    assert set(per_class) == {"run", "cast", "stop"}
    assert f"| run | {per_class['run']['precision']:.3f} |" in card

    tuned = tmp_path / "tuned"
    train_instance([data], tuned, TrainOptions(iterations=(0, 2)), start_from=out)
    assert "Fine-tuned from" in (tuned / CARD_FILE).read_text()
    assert "training_class_frequencies" in json.loads((tuned / "clf_config.json").read_text())


def test_shipped_default_stores_its_training_frequencies():
    from maggotuba.backend import resolve_model

    config = json.loads((resolve_model(None) / "clf_config.json").read_text())
    counts = np.array(config["training_data"]["class_counts"])
    frequencies = np.array(list(config["training_class_frequencies"].values()))
    assert list(config["training_class_frequencies"]) == config["labels"]
    assert np.allclose(frequencies, counts / counts.sum())
    # auto balancing: inverse-frequency loss weights make the effective priors uniform
    assert np.allclose(list(config["training_effective_priors"].values()), 1 / 7, atol=1e-5)
    assert (resolve_model(None) / "model_card.md").is_file()
