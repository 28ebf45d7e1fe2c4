"""`.label` I/O: golden text, decoding, dependencies, operations, broken files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from taggingbackends.data.labels import Labels, format_label_json, is_label_text, match_times
from taggingbackends.data.tracks import Run
from taggingbackends.errors import DependencyError, FormatError, OutputExistsError, ValidationError

DATA = Path(__file__).parent / "data" / "labels"
GOLDEN = DATA / "planarlarvae_golden.label"
GOLDEN_LABELS = ["crawl", "crawl", ["crawl", "small"], "stop", ["crawl", "small"],
                 ["crawl", "small"], "crawl"]
GOLDEN_TIMES = [66.675, 66.755, 66.856, 66.949, 67.039, 67.115, 67.196]


def golden_labels() -> Labels:
    labels = Labels(["crawl", "small", "stop"])
    labels["20150701_105504", 512] = dict(zip(GOLDEN_TIMES, GOLDEN_LABELS))
    return labels


def test_writer_reproduces_planarlarvae_golden_text(tmp_path):
    out = tmp_path / "golden.label"
    golden_labels().dump(out)
    assert out.read_text(encoding="utf-8") == GOLDEN.read_text(encoding="utf-8")


def test_golden_file_decodes(tmp_path):
    labels = Labels.load(GOLDEN)
    assert labels.run_id == "20150701_105504"
    assert labels.names == ["crawl", "small", "stop"]
    track = labels[512]
    assert track.t.tolist() == GOLDEN_TIMES
    assert track.labels == GOLDEN_LABELS
    assert is_label_text(GOLDEN.read_text())


def test_decoded_output_and_round_trip(tmp_path):
    out = tmp_path / "decoded.label"
    golden_labels().dump(out, encode=False)
    document = json.loads(out.read_text())
    assert document["data"][0]["labels"][2] == ["crawl", "small"]
    again = Labels.load(out)
    assert again[512].labels == GOLDEN_LABELS


def test_timestamps_rounded_to_ms_and_metadata_order(tmp_path):
    labels = Labels(["run"], metadata={"filename": "x", "protocol": "p", "tracker": "t15",
                                       "camera": {"framerate": 30}, "id": "r"})
    labels[3] = {1.23456: "run", 2.0004: "run"}
    out = tmp_path / "a.label"
    labels.dump(out)
    text = out.read_text()
    assert text.startswith('{\n   "metadata": {\n')
    document = json.loads(text)
    assert list(document["metadata"]) == ["id", "tracker", "protocol", "filename", "camera"]
    assert document["data"][0]["t"] == [1.235, 2.0]
    assert list(document) == ["metadata", "units", "labels", "data"]


def test_multi_run_wrapper_records_and_attributes(tmp_path):
    runs = Labels.load_all(DATA / "decoded_multi.label")
    assert list(runs) == ["20200101_000000", "20200101_000001"]
    first = runs["20200101_000000"]
    assert first.colors == ["#000000", "#ff0000"]
    assert first.secondarylabels == ["edited"]
    assert first.attributes == {"genotype": "attP2"}
    assert first.metadata["camera"] == {"framerate": 25}
    track = first[1]
    assert track.labels == ["run", ["cast", "edited"], []]
    assert track.records == {"score": [0.1, 0.2, 0.3]}
    assert track.attributes == {"note": "kept"}
    assert runs["20200101_000001"][2].labels == ["run"]
    with pytest.raises(FormatError, match="holds 2 runs"):
        Labels.load(DATA / "decoded_multi.label")
    assert Labels.load(DATA / "decoded_multi.label", run="20200101_000001").names == ["run"]
    # write back (wrapper) and read again: same content
    out = tmp_path / "multi.label"
    Labels.dump_all(list(runs.values()), out)
    again = Labels.load_all(out)
    assert again["20200101_000000"][1].labels == track.labels
    assert again["20200101_000000"][1].records == track.records
    # a single run written encoded, with secondary labels
    single = tmp_path / "single.label"
    first.dump(single)
    raw = json.loads(single.read_text())
    assert raw["data"][0]["labels"] == [1, [2, 3], []]
    assert raw["genotype"] == "attP2"
    assert Labels.load(single)[1].labels == track.labels


def test_dependencies_written_and_verified(tmp_path):
    tracking = tmp_path / "trx.mat"
    tracking.write_bytes(b"tracking bytes")
    labels = Labels(["run"], metadata={"id": "r"}, tracking=[tracking])
    labels[1] = {0.0: "run"}
    out = tmp_path / "predicted.label"
    labels.dump(out)
    document = json.loads(out.read_text())
    assert document["dependencies"] == [
        {"filename": "trx.mat", "sha1": hashlib.sha1(b"tracking bytes").hexdigest()}]
    Labels.load(out)  # checksum matches
    tracking.write_bytes(b"changed")
    with pytest.raises(DependencyError, match="trx.mat has SHA-1"):
        Labels.load(out)
    assert Labels.load(out, verify=False)[1].labels == ["run"]


def test_dependency_check_can_be_skipped_by_environment(tmp_path, monkeypatch):
    tracking = tmp_path / "trx.mat"
    tracking.write_bytes(b"a")
    labels = Labels(["run"], metadata={"id": "r"}, tracking=[tracking])
    labels[1] = {0.0: "run"}
    labels.dump(tmp_path / "x.label")
    tracking.write_bytes(b"b")
    monkeypatch.setenv("TAGGINGBACKENDS_NO_VERIFY", "1")
    Labels.load(tmp_path / "x.label")


def test_single_dependency_object_accepted(tmp_path):
    path = tmp_path / "dep.label"
    path.write_text('{"metadata": {"id": "r"}, "labels": ["a"], '
                    '"dependencies": {"filename": "absent.spine", "sha1": "00"}, '
                    '"data": [{"id": "4", "t": [0.5], "labels": ["a"]}]}')
    labels = Labels.load(path)
    assert labels.dependencies == [{"filename": "absent.spine", "sha1": "00"}]


def test_overwrite_refused_when_asked(tmp_path):
    out = tmp_path / "x.label"
    golden_labels().dump(out)
    with pytest.raises(OutputExistsError):
        golden_labels().dump(out, overwrite=False)


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"),
    (b"{\"metadata\": {\"id\": \"x\"}, \"data\": [", "invalid JSON"),
    ("{\"metadata\": {\"id\": \"é\"}}".encode("latin-1"), "not UTF-8"),
    (b"[1, 2]", "top level is not a JSON object"),
    (b'{"metadata": {"id": "x"}, "labels": ["a"], "data": [{"id": "1", "t": [0, 1], "labels": [1]}]}',
     "2 timestamps but 1 labels"),
    (b'{"metadata": {"id": "x"}, "labels": ["a"], "data": [{"id": "1", "t": [0], "labels": [5]}]}',
     "outside 1..1"),
    (b'{"metadata": {"id": "x"}, "labels": ["a"], "data": [{"id": "1", "t": [1, 0], "labels": [1, 1]}]}',
     "not strictly increasing"),
    (b'{"metadata": {"id": "x"}, "labels": ["a"], "secondarylabels": ["a"], "data": []}',
     "both primary and secondary"),
])
def test_broken_label_files(tmp_path, content, problem):
    path = tmp_path / "broken.label"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=problem) as info:
        Labels.load(path)
    assert "broken.label" in str(info.value)


def test_directory_is_not_a_label_file(tmp_path):
    with pytest.raises(FormatError, match="is a directory"):
        Labels.load(tmp_path)


def _manual_and_predicted():
    pred = Labels(["run", "cast"], metadata={"id": "r"})
    pred[1] = {0.0: "run", 0.1: "run", 0.2: "cast"}
    manual = Labels(["run", "cast", "hunch"], secondarylabels=["edited"], metadata={"id": "r"})
    manual[1] = {0.0: "cast", 0.1: ["hunch", "edited"], 0.2: ["run", "edited"]}
    manual[2] = {5.0: ["run", "edited"]}
    return pred, manual


def test_merge_takes_edited_steps_only():
    pred, manual = _manual_and_predicted()
    merged = pred.merge(manual)
    assert merged[1].labels == ["run", ["hunch", "edited"], ["run", "edited"]]
    assert merged[2].labels == [["run", "edited"]]
    assert merged.names == ["run", "cast", "hunch"]
    assert merged.secondarylabels == ["edited"]
    assert pred[1].labels == ["run", "run", "cast"]  # input untouched


def test_merge_with_custom_predicate():
    pred, manual = _manual_and_predicted()
    merged = pred.merge(manual, predicate=lambda entry: bool(entry))
    assert merged[1].labels[0] == "cast"


def test_set_default_label_expands_to_tracking_run():
    run = Run.from_tracks("r", [1, 2], [np.array([0.0, 0.1, 0.2]), np.array([1.0, 1.1])],
                          [np.zeros((3, 11, 2)), np.ones((2, 11, 2))])
    labels = Labels(["run"], metadata={"id": "r"})
    labels[1] = {0.1: "run", 0.2: []}
    labels.set_default_label(run, "new behavior")
    assert labels[1].labels == ["new behavior", "run", "new behavior"]
    assert labels[2].labels == ["new behavior", "new behavior"]
    assert labels.names == ["run", "new behavior"]


def test_append_label_and_crop():
    labels = Labels(["run", "cast"], metadata={"id": "r"})
    labels[1] = {0.0: "run", 0.1: [], 0.2: "cast", 0.3: "run"}
    labels.append_label("original", ignore=["cast"])
    assert labels[1].labels == [["run", "original"], [], "cast", ["run", "original"]]
    assert labels.secondarylabels == ["original"]
    with pytest.raises(ValidationError):
        labels.append_label("run")
    cropped = labels.crop(0.1, 0.2)
    assert cropped[1].t.tolist() == [0.1, 0.2]
    assert labels.crop(10, 11).tracks == {}


def test_from_run_and_tag_matrix_round_trip():
    tags = np.array([[1, 0], [1, 1], [0, 0]], dtype=bool)
    run = Run.from_tracks("r", [7], [np.array([0.0, 0.1, 0.2])], [np.zeros((3, 11, 2))],
                          tags=[tags], tag_names=("run", "run_large"))
    labels = Labels.from_run(run)
    assert labels[7].labels == ["run", ["run", "run_large"], []]
    matrix, names = labels.tag_matrix(run)
    assert names == ["run", "run_large"]
    assert np.array_equal(matrix, tags)
    defaulted = Labels.from_run(run, default_label="unknown")
    assert defaulted[7].labels[2] == "unknown"


def test_match_times_tolerance():
    pos, ok = match_times(np.array([0.0, 0.1, 0.2]), np.array([0.1004, 0.15, 0.2]))
    assert pos.tolist()[0] == 1 and ok.tolist() == [True, False, True]


def test_format_deeper_containers_compact():
    text = format_label_json({"metadata": {"id": "x", "camera": {"a": {"b": 1}}}})
    assert '"camera": {\n' in text and '"a": {"b":1}' in text
