"""Calibrated probabilities and the per-step ``uncertain`` flag (issue 12, lever 6)."""

from __future__ import annotations

import json
import re
import shutil

import h5py
import numpy as np
import pytest

pytest.importorskip("torch")

from maggotuba.backend import SHIPPED  # noqa: E402
from maggotuba.instances import load_tagger  # noqa: E402
from maggotuba.predict import Prediction, predict_run, stored_temperature, uncertain_steps  # noqa: E402
from maggotuba.features import CLAMPED, FULL, GAPPED  # noqa: E402
from taggingbackends.data.labels import Labels  # noqa: E402
from taggingbackends.errors import TaggingError  # noqa: E402
from taggingbackends.simulate import SimulationConfig, simulate  # noqa: E402

from tagging_helpers import predict_in_process  # noqa: E402
from taggingbackends.cli import write_simulation  # noqa: E402


@pytest.fixture(scope="module")
def run():
    return simulate(SimulationConfig(n_larvae=3, duration=20.0, seed=4)).run


@pytest.fixture(scope="module")
def saved():
    return load_tagger(SHIPPED / "models" / "default")


def _copy_with_temperature(tmp_path, temperature):
    model = tmp_path / "calibrated"
    shutil.copytree(SHIPPED / "models" / "default", model)
    document = json.loads((model / "clf_config.json").read_text())
    document["calibration"] = {"temperature": temperature, "fitted_on": "test"}
    (model / "clf_config.json").write_text(json.dumps(document))
    return model


def test_stored_temperature_reads_only_valid_values():
    class Fake:
        metadata = {}
    fake = Fake()
    for value, expected in [({"temperature": 2.5}, 2.5), ({"temperature": -1}, None),
                            ({"temperature": "x"}, None), ({}, None), (None, None)]:
        fake.metadata = {"calibration": value}
        assert stored_temperature(fake) == expected


def test_temperature_keeps_the_argmax_and_lowers_confidence(saved, run):
    raw = predict_run(saved, run, post_processing=[])
    hot = predict_run(saved, run, post_processing=[], temperature=3.0)
    assert np.array_equal(raw.classes, hot.classes)
    assert hot.probabilities.max(axis=1).mean() < raw.probabilities.max(axis=1).mean() - 0.01
    assert np.allclose(hot.probabilities.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(TaggingError, match="temperature"):
        predict_run(saved, run, temperature=0.0)


def test_uncertain_steps_threshold_and_gaps(run):
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45], [0.4, 0.35], [0.95, 0.05]], dtype=np.float32)
    quality = np.array([FULL, FULL, CLAMPED, GAPPED], dtype=np.int8)
    prediction = Prediction(run=run, labels=["a", "b"], classes=np.zeros(4, np.int16),
                            probabilities=probabilities, quality=quality)
    assert uncertain_steps(prediction, 0.5).tolist() == [False, False, True, True]
    assert uncertain_steps(prediction, 0.6).tolist() == [False, True, True, True]
    assert uncertain_steps(prediction, 0.0).tolist() == [False, False, False, True]
    with pytest.raises(TaggingError, match="uncertain-below"):
        uncertain_steps(prediction, 1.5)


def test_predict_writes_the_flag_and_the_temperature(tmp_path):
    write_simulation(simulate(SimulationConfig(n_larvae=3, duration=20.0, seed=5)), tmp_path, "trxmat")
    model = _copy_with_temperature(tmp_path, 2.0)
    predict_in_process(tmp_path / "trx.mat", "-m", str(model), "-o", "{dir}/calibrated.label")
    predict_in_process(tmp_path / "trx.mat", "-m", str(model), "-o", "{dir}/raw.label", "--no-calibration",
                       "--uncertain-below", "0.99")
    with h5py.File(tmp_path / "calibrated.probabilities.h5") as f:
        calibrated, flag, quality = f["probabilities"][:], f["uncertain"][:], f["quality"][:]
        doubt = json.loads(f.attrs["calibration"])
    with h5py.File(tmp_path / "raw.probabilities.h5") as f:
        raw, raw_flag = f["probabilities"][:], f["uncertain"][:]
        raw_doubt = json.loads(f.attrs["calibration"])
    assert doubt["temperature"] == 2.0 and raw_doubt["temperature"] is None
    assert flag.dtype == bool and flag.shape == (calibrated.shape[0],)
    assert np.array_equal(flag, (calibrated.max(axis=1) < 0.5) | (quality == GAPPED))
    assert calibrated.max(axis=1).mean() < raw.max(axis=1).mean()
    assert raw_flag.sum() > flag.sum()              # 0.99 flags far more than 0.5
    assert doubt["uncertain_steps"] == int(flag.sum())
    provenance = Labels.load(tmp_path / "calibrated.label").metadata["provenance"]
    assert provenance["calibration"]["temperature"] == 2.0
    assert provenance["calibration"]["uncertain_share"] == pytest.approx(flag.mean(), abs=1e-3)


def test_predict_says_the_share_of_uncertain_steps(tmp_path, capsys):
    from taggingbackends.cli import main

    write_simulation(simulate(SimulationConfig(n_larvae=2, duration=15.0, seed=6)), tmp_path, "trxmat")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "trx.mat"), "--uncertain-below", "1.0"])
    assert exit_info.value.code in (0, None)
    said = capsys.readouterr()
    found = re.search(r"(\d+\.\d) % of steps uncertain", " ".join((said.out + said.err).split()))
    assert found and float(found.group(1)) > 90.0      # nearly every step is below probability 1
