"""The web app's HTTP API (starlette TestClient): token, Host, Origin, path escapes, saving
with backups, edits round trip through the file on disk, per-larva data, retrain."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from starlette.testclient import TestClient

from taggingbackends.cli import write_simulation
from taggingbackends.data.labels import Labels
from taggingbackends.simulate import SimulationConfig, simulate
from taggingbackends.webapp.retrain import Retrainer, collect_edit_files, training_labels
from taggingbackends.webapp.server import create_app
from taggingbackends.webapp.session import Session

TOKEN = "test-token-0123456789"
BASE = "http://127.0.0.1:8765"


@pytest.fixture()
def data(tmp_path):
    """A tiny simulated run with a 'prediction' (the ground truth under another name)."""
    result = simulate(SimulationConfig(n_larvae=3, duration=8.0, seed=3))
    write_simulation(result, tmp_path, "trxmat")
    predicted = Labels.load(tmp_path / "groundtruth.label")
    predicted.tracking = [tmp_path / "trx.mat"]
    predicted.dump(tmp_path / "predicted.label")
    return tmp_path


@pytest.fixture()
def client(data):
    session = Session.open(data / "predicted.label")
    app = create_app(session, TOKEN, Retrainer(session, iterations=(2, 2)), port=8765)
    with TestClient(app, base_url=BASE) as test_client:
        test_client.headers.update({"X-Token": TOKEN})
        test_client.session_object = session
        yield test_client


def larva_ids(client) -> list[int]:
    return [larva["id"] for larva in client.get("/api/session").json()["larvae"]]


# ------------------------------------------------------------------- guard
def test_token_required_everywhere(client):
    bare = {"X-Token": ""}
    assert client.get("/", headers=bare).status_code == 403
    assert client.get("/?token=wrong", headers=bare).status_code == 403
    page = client.get(f"/?token={TOKEN}", headers=bare)
    assert page.status_code == 200 and f"/s/{TOKEN}/app.js" in page.text
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert client.get(f"/s/{TOKEN}/app.js", headers=bare).status_code == 200
    assert client.get("/s/wrong/app.js", headers=bare).status_code == 403
    assert client.get(f"/s/{TOKEN}/nothing.js", headers=bare).status_code == 404
    assert client.get("/api/session", headers=bare).status_code == 403
    assert client.get("/api/session", headers={"X-Token": "wrong"}).status_code == 403
    assert client.get(f"/api/session?token={TOKEN}", headers=bare).status_code == 403
    assert client.get("/api/session").status_code == 200


def test_state_changes_need_the_header(client, data):
    bare = {"X-Token": ""}
    assert client.post(f"/api/save?token={TOKEN}", json={}, headers=bare).status_code == 403
    assert client.post(f"/?token={TOKEN}", headers=bare).status_code == 403
    assert not (data / "predicted.edited.label").exists()


@pytest.mark.parametrize("host", ["evil.example.com", "localhost.evil.com", "127.0.0.2:8765", ""])
def test_bad_host_refused(client, host):
    response = client.get("/api/session", headers={"Host": host})
    assert response.status_code in (400, 403)


def test_localhost_host_accepted_cross_origin_refused(client):
    assert client.get("/api/session", headers={"Host": "localhost:8765"}).status_code == 200
    assert client.post("/api/undo", headers={"Origin": "http://evil.example.com"}).status_code == 403
    assert client.post("/api/undo", headers={"Origin": "http://127.0.0.1:9999"}).status_code == 403


# -------------------------------------------------------------- data served
def test_session_larva_frames_ethogram(client):
    summary = client.get("/api/session").json()
    assert summary["labels_file"] == "predicted.label" and summary["save_file"] == "predicted.edited.label"
    assert summary["names"] and len(summary["colors"]) == len(summary["names"])
    assert summary["has_outline"] and not summary["dirty"]
    larva = summary["larvae"][0]
    detail = client.get(f"/api/larva/{larva['id']}", params={"shapes": "1"}).json()
    n = len(detail["t"])
    assert n == larva["n"] and len(detail["labels"]) == n and len(detail["edited"]) == n
    assert np.asarray(detail["spine"]).shape[1:] == (11, 2) and len(detail["outline"]) == n
    assert detail["probabilities"] is None   # this 'prediction' has no sidecar
    assert "spine" not in client.get(f"/api/larva/{larva['id']}").json()   # the page draws from frames
    assert client.get("/api/larva/99999").status_code == 404
    assert client.get("/api/larva/abc").status_code == 400
    frames = client.get("/api/frames", params={"t0": summary["t0"], "t1": summary["t0"] + 2}).json()
    assert {track["id"] for track in frames["tracks"]} <= set(larva_ids(client))
    assert client.get("/api/frames", params={"t0": 0, "t1": 1000}).status_code == 400
    rows = client.get("/api/ethogram").json()["rows"]
    assert [row["id"] for row in rows] == larva_ids(client)
    start, end, code, p, edited = rows[0]["bouts"][0]
    assert start < end and 0 <= code < len(summary["names"]) and p == 1.0 and edited == 0
    queue = client.get("/api/review").json()
    assert queue["segments"] and "no probabilities" in queue["ranked_by"]


# ------------------------------------------------------------------- edits
def test_edits_round_trip_through_the_file(client, data):
    larva = larva_ids(client)[0]
    answer = client.post("/api/edit", json={"larva": larva, "first": 3, "last": 6, "label": "roll"}).json()
    names = client.get("/api/session").json()["names"]
    assert answer["labels"][3:7] == [names.index("roll")] * 4 and answer["edited"][3:7] == [1] * 4
    assert answer["dirty"] and answer["can_undo"]
    cleared = client.post("/api/edit", json={"larva": larva, "first": 7, "last": 7, "label": None}).json()
    assert cleared["labels"][7] == -1
    undone = client.post("/api/undo").json()
    assert undone["labels"][7] != -1 and undone["can_redo"] and undone["dirty"]
    assert client.post("/api/redo").json()["labels"][7] == -1
    client.post("/api/undo")
    assert not client.post("/api/undo").json()["dirty"]     # back to the file as opened
    assert client.post("/api/undo").status_code == 409
    client.post("/api/redo")
    assert client.post("/api/redo").json()["dirty"]
    assert client.post("/api/edit", json={"larva": larva, "first": 0, "last": 10**6, "label": "run"}).status_code == 400
    assert client.post("/api/edit", json={"larva": larva, "first": 0, "last": 1, "label": "dance"}).status_code == 400
    assert client.post("/api/edit", content=b"not json").status_code == 400

    saved = client.post("/api/save", json={}).json()
    assert saved == {**saved, "saved": "predicted.edited.label", "backup": None, "dirty": False}
    on_disk = Labels.load(data / "predicted.edited.label")
    entries = on_disk.tracks[larva].labels
    assert entries[3:7] == [["roll", "edited"]] * 4 and entries[7] == []
    assert "edited" in on_disk.secondarylabels
    assert on_disk.dependencies[0]["filename"] == "trx.mat"
    assert on_disk.metadata["edited_with"]["command"] == "view"
    assert Labels.load(data / "predicted.label").tracks[larva].labels[3] != ["roll", "edited"]  # prediction kept
    # a new session on the prediction resumes the saved edits
    again = Session.open(data / "predicted.label")
    assert any("resuming" in note for note in again.notes)
    assert again.labels.tracks[larva].labels[3:7] == [["roll", "edited"]] * 4


def test_save_keeps_a_backup_and_leaves_no_temporary_file(client, data):
    larva = larva_ids(client)[1]
    client.post("/api/edit", json={"larva": larva, "first": 0, "last": 2, "label": "cast"})
    client.post("/api/save", json={})
    first = (data / "predicted.edited.label").read_bytes()
    client.post("/api/edit", json={"larva": larva, "first": 0, "last": 2, "label": "back"})
    answer = client.post("/api/save", json={}).json()
    assert answer["backup"] == "predicted.edited.label.bak"
    assert (data / "predicted.edited.label.bak").read_bytes() == first
    assert Labels.load(data / "predicted.edited.label").tracks[larva].labels[0] == ["back", "edited"]
    assert not [p for p in os.listdir(data) if p.endswith(".tmp")]


# ------------------------------------------------------------- path escapes
@pytest.mark.parametrize("name", ["../escape.label", "/tmp/escape.label", "sub/escape.label", "..",
                                  ".hidden.label", "escape.txt", "trx.mat", "..\\escape.label", 3])
def test_save_refuses_paths_outside(client, data, name):
    before = sorted(os.listdir(data))
    response = client.post("/api/save", json={"name": name})
    assert response.status_code == 403, response.text
    assert sorted(os.listdir(data)) == before
    assert not (data.parent / "escape.label").exists()


def test_save_refuses_symlinks_and_silent_overwrites(client, data, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "victim.label"
    outside.write_text("precious")
    (data / "link.label").symlink_to(outside)
    assert client.post("/api/save", json={"name": "link.label", "overwrite": True}).status_code == 403
    assert outside.read_text() == "precious"
    (data / "predicted.edited.label.bak").symlink_to(outside)
    client.post("/api/edit", json={"larva": larva_ids(client)[0], "first": 0, "last": 0, "label": "run"})
    (data / "predicted.edited.label").write_text("{}")  # make the default target exist: a backup is due
    assert client.post("/api/save", json={}).status_code == 403
    assert outside.read_text() == "precious"
    prediction = (data / "predicted.label").read_bytes()
    refused = client.post("/api/save", json={"name": "predicted.label"})
    assert refused.status_code == 409 and "overwrite" in refused.json()["error"]
    assert (data / "predicted.label").read_bytes() == prediction
    (data / "predicted.edited.label.bak").unlink()
    ok = client.post("/api/save", json={"name": "mine.label"}).json()
    assert ok["saved"] == "mine.label" and (data / "mine.label").is_file()


# ------------------------------------------------------------------ retrain
def test_retrain_needs_saved_edits(client):
    client.post("/api/edit", json={"larva": larva_ids(client)[0], "first": 0, "last": 0, "label": "run"})
    assert client.post("/api/retrain", json={}).status_code == 409   # unsaved
    client.post("/api/undo")
    client.post("/api/save", json={})
    started = client.post("/api/retrain", json={"iterations": [1, 1]}).json()
    assert started["state"] == "running" and started["iterations"] == [1, 1]
    client.app.app.state.retrainer.join(60)
    status = client.get("/api/retrain").json()
    assert status["state"] == "failed" and "no saved label file with edited steps" in status["message"]


def test_training_labels_keep_only_edits(data):
    labels = Labels.load(data / "predicted.label")
    larva = sorted(labels.tracks)[0]
    labels.tracks[larva].labels[2] = ["cast", "edited"]
    labels.dump(data / "predicted.edited.label")
    kept = training_labels(labels, "edited")
    assert list(kept.tracks) == [larva]
    assert kept.tracks[larva].labels[2] == ["cast", "edited"]
    assert sum(1 for e in kept.tracks[larva].labels if e) == 1
    assert len(training_labels(labels, "all").tracks) == len(labels.tracks)
    found = collect_edit_files(data)
    assert [f.path.name for f in found] == ["predicted.edited.label"] and found[0].steps == 1


def test_retrain_end_to_end(data):
    """Predict with the shipped tagger, correct two larvae, save, retrain (1+1 iterations), and
    get the new predictions with the corrections kept and the changes listed."""
    from tagging_helpers import predict_in_process

    predict_in_process(data / "trx.mat", "--overwrite")
    session = Session.open(data / "predicted.label")
    assert session.probabilities is not None and session.model == "default"
    app = create_app(session, TOKEN, Retrainer(session, iterations=(5, 5)), port=8765)
    with TestClient(app, base_url=BASE, headers={"X-Token": TOKEN}) as client:
        ids = larva_ids(client)
        for larva in ids[:2]:
            client.post("/api/edit", json={"larva": larva, "first": 10, "last": 40, "label": "cast_large"})
        assert client.post("/api/save", json={}).status_code == 200
        started = client.post("/api/retrain", json={"iterations": [1, 1], "scope": "edited"})
        assert started.status_code == 200, started.text
        assert client.post("/api/retrain", json={}).status_code == 409   # one at a time
        app.app.state.retrainer.join(300)
        status = client.get("/api/retrain").json()
        assert status["state"] == "done", status
        result = status["result"]
        assert result["edited_larvae"] == 2 and result["edited_steps"] == 62
        assert result["predicted"] == "predicted.retrained.label"
        assert (data / "models" / "default-edits-1" / "clf_config.json").is_file()
        assert Labels.load(data / "predicted.retrained.label").metadata["provenance"]["model"]["instance"] \
            == "default-edits-1"
        detail = client.get(f"/api/larva/{ids[0]}").json()
        assert detail["previous"] is not None and detail["edited"][10:41] == [1] * 31
        assert detail["probabilities"] is not None
        assert result["changes"]["steps"] == sum(len(t) for t in session.labels.tracks.values())
        assert client.get("/api/session").json()["dirty"]   # new predictions not saved yet


def test_labels_elsewhere_are_saved_beside_the_labels(data, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("labels")
    labels = Labels.load(data / "predicted.label")
    labels.tracking = [data / "trx.mat"]
    labels.dump(elsewhere / "mine.label")
    session = Session.open(data / "trx.mat", elsewhere / "mine.label")
    larva = sorted(session.labels.tracks)[0]
    session.edit(larva, 0, 1, "cast")
    assert session.save()["saved"] == "mine.edited.label"
    saved = Labels.load(elsewhere / "mine.edited.label")
    assert saved.tracks[larva].labels[0] == ["cast", "edited"]
    assert saved.dependency_paths()[0].resolve() == (data / "trx.mat").resolve()
    assert not (data / "mine.edited.label").exists()
