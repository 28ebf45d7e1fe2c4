"""A third-party backend plugs in through the `taggingbackends.backends` entry point,
exactly as an installed package would (a dist-info folder on the path), and is used
by `backends` and `predict --backend`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taggingbackends.data.labels import Labels

CLI = [sys.executable, "-m", "taggingbackends.cli"]

#: A complete, tiny backend: a step is "run" when the spine centre moves faster than
#: half a body length per second, else "stop". Enough to check the plumbing for real.
PLUGIN = '''
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taggingbackends.data.labels import Labels, TrackLabels, run_metadata
from taggingbackends.errors import TaggingError
from taggingbackends.formats import load


def resolve_model(name=None, project=None):
    if name not in (None, "speed"):
        raise TaggingError(f"model instance {name!r} not found (known: speed)")
    return Path(__file__).parent


def load_model(directory, device="cpu"):
    return {"threshold": 0.5}


@dataclass
class PredictOptions:
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 1
    edges: str = "label"
    post_processing: object = None
    decode: bool = False


def predict_file(saved, path, output, options, model_name="speed"):
    run = load(path)
    labels = Labels(["run", "stop"], metadata=run_metadata(run), tracking=[path])
    steps = 0
    for track in run:
        centre = track.spine[:, track.spine.shape[1] // 2]
        length = np.linalg.norm(np.diff(track.spine, axis=1), axis=2).sum(axis=1)
        speed = np.linalg.norm(np.gradient(centre, track.t, axis=0), axis=1) / np.maximum(length, 1e-9)
        entries = ["run" if s > saved["threshold"] else "stop" for s in speed]
        labels.tracks[track.larva_id] = TrackLabels(track.t.copy(), entries)
        steps += len(entries)
    labels.dump(output, encode=not options.decode)
    return {"larvae": run.n_tracks, "steps": steps}
'''


@pytest.fixture
def site(tmp_path):
    """A folder that looks like site-packages holding an installed `speedtagger` backend."""
    site = tmp_path / "site"
    (site / "speedtagger").mkdir(parents=True)
    (site / "speedtagger" / "__init__.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    info = site / "speedtagger-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: speedtagger\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[taggingbackends.backends]\nspeed = speedtagger\n", encoding="utf-8")
    return site


def run_cli(site: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


def test_third_party_backend_is_listed_and_tags(site, tmp_path):
    listed = run_cli(site, "backends")
    assert listed.returncode == 0, listed.stderr
    assert "speed" in listed.stdout and "speedtagger" in listed.stdout

    data = tmp_path / "data"
    made = run_cli(site, "simulate", data, "-n", "4", "--duration", "20", "--format", "trxmat", "--seed", "3")
    assert made.returncode == 0, made.stderr
    tagged = run_cli(site, "predict", data / "trx.mat", "--backend", "speed", "--decode")
    assert tagged.returncode == 0, tagged.stderr
    labels = Labels.load(data / "predicted.label")
    assert labels.names == ["run", "stop"]
    truth = Labels.load(data / "groundtruth.label")
    assert sorted(labels.tracks) == sorted(truth.tracks)
    used = {entry for track in labels.tracks.values() for entry in track.labels}
    assert used == {"run", "stop"}  # a real rule, not a constant

    unknown = run_cli(site, "predict", data / "trx.mat", "--backend", "nosuch", "--overwrite")
    assert unknown.returncode == 1 and "'nosuch' is not installed (installed: " in unknown.stderr
    assert "speed" in unknown.stderr and unknown.stderr.count("\n") == 1
    bad_model = run_cli(site, "predict", data / "trx.mat", "--backend", "speed", "-m", "other", "--overwrite")
    assert bad_model.returncode == 1 and "'other' not found" in bad_model.stderr
