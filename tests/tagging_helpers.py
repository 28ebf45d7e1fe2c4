"""Small data every end-to-end test of the tagging loop starts from: simulated larvae
written as trx.mat, tagged in-process by the shipped default (labels + probabilities)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taggingbackends.cli import main, write_simulation
from taggingbackends.simulate import SimulationConfig, simulate


def predict_in_process(tracking: Path, *extra: str) -> None:
    """``tagging-backend -q predict TRACKING [EXTRA...]`` in this process; fails the test on error."""
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "predict", str(tracking), *extra])
    assert exit_info.value.code in (0, None)


def simulate_and_predict(directory: Path, *, larvae: int, duration: float, seed: int) -> Path:
    """``directory`` with trx.mat, groundtruth.label, predicted.label and its sidecar."""
    write_simulation(simulate(SimulationConfig(n_larvae=larvae, duration=duration, seed=seed)),
                     directory, "trxmat")
    predict_in_process(directory / "trx.mat")
    return directory
