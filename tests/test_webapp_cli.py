"""`tagging-backend view` and `tagging-backend retrain` from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tagging_helpers import simulate_and_predict
from taggingbackends.data.labels import Labels
from taggingbackends.webapp.session import Session


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "taggingbackends.cli", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    return simulate_and_predict(tmp_path_factory.mktemp("cli"), larvae=3, duration=8.0, seed=7)


def test_view_serves_on_localhost_with_a_token(predicted):
    process = subprocess.Popen([sys.executable, "-m", "taggingbackends.cli", "view", str(predicted / "trx.mat"),
                                "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("open http://127.0.0.1:"):
                url = line.split()[1]
        assert url is not None, process.stderr.read() if process.poll() is not None else "no URL printed"
        assert "token=" in url and len(url.split("token=")[1]) >= 40
        assert httpx.get(url).status_code == 200
        assert httpx.get(url.split("?")[0]).status_code == 403
        base = url.split("/?")[0]
        token = url.split("token=")[1]
        summary = httpx.get(f"{base}/api/session", headers={"X-Token": token}).json()
        assert summary["labels_file"] == "predicted.label"   # found beside the tracking file
        assert httpx.get(f"{base}/api/session", headers={"X-Token": token, "Host": "evil.com"}).status_code == 400
    finally:
        process.terminate()
        process.wait(20)
    assert not (predicted / "predicted.edited.label").exists()


def test_view_bad_input(tmp_path):
    result = cli("view", tmp_path / "missing.label", "--no-browser")
    assert result.returncode == 1 and "missing.label" in result.stderr and "Traceback" not in result.stderr


def test_retrain_cli(predicted, tmp_path):
    nothing = cli("retrain", predicted, "--iterations", "1,1")
    assert nothing.returncode == 1 and "no saved label file with edited steps" in nothing.stderr
    session = Session.open(predicted / "predicted.label")
    for larva in sorted(session.labels.tracks)[:2]:
        session.edit(larva, 5, 30, "hunch_large")
    session.save()
    model = tmp_path / "retrained"
    result = cli("retrain", predicted, "--iterations", "1,1", "--output-instance", model,
                 "--predict", predicted / "trx.mat")
    assert result.returncode == 0, result.stderr
    assert "52 edited steps of 2 larvae in 1 file(s)" in result.stdout.replace("\n", " ")
    assert (model / "clf_config.json").is_file()
    labels = Labels.load(predicted / "trx.retrained.label")
    assert labels.metadata["provenance"]["model"]["instance"] == "retrained"
    again = cli("retrain", predicted, "--iterations", "1,1", "--output-instance", model)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_retrain_defaults_to_the_fast_finetune(predicted, tmp_path):
    """Without --iterations, retrain (and the page's button) uses the backend's fast fine-tune."""
    import json

    session = Session.open(predicted / "predicted.label")
    for larva in sorted(session.labels.tracks)[:2]:
        session.edit(larva, 5, 30, "roll_large")
    session.save()
    model = tmp_path / "fast"
    result = cli("retrain", predicted, "--output-instance", model)
    assert result.returncode == 0, result.stderr
    config = json.loads((model / "clf_config.json").read_text())
    assert config["finetune"]["mode"] == "fast"
