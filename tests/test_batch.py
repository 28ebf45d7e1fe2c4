"""Batch tagging on dask (taggingbackends.batch): a real LocalCluster on small generated
files with a corrupt one, a worker SIGKILLed mid-batch, a driver SIGKILLed and the
command rerun (resume), the reader/tagger pipeline, streaming inputs, shards, provenance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("distributed")

from taggingbackends.batch import (DONE, FAILED, SKIPPED, DaskRunner, Execution, TaggingSpec,  # noqa: E402
                                   existing_output_action, has_pipeline_workers, model_fingerprint,
                                   options_record, parse_shard, plan_jobs, run_batch)
from taggingbackends.cli import write_simulation  # noqa: E402
from taggingbackends.cli.options import iter_tracking_inputs  # noqa: E402
from taggingbackends.data.labels import Labels  # noqa: E402
from taggingbackends.errors import OutputExistsError, TaggingError  # noqa: E402
from taggingbackends.simulate import SimulationConfig, simulate  # noqa: E402

CLI = [sys.executable, "-m", "taggingbackends.cli"]
GOOD = [f"run{k}" for k in range(5)]


def default_spec(**changes) -> TaggingSpec:
    from maggotuba.backend import resolve_model

    values = dict(backend=None, model_dir=str(resolve_model(None).resolve()), model_name="default",
                  options=dict(device="cpu", precision="fp32", batch_size=2048, edges="label",
                               post_processing=None, decode=False))
    values.update(changes)
    return TaggingSpec(**values)


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """Five tiny recordings (3 larvae, 8 s) and a truncated trx.mat in the middle."""
    root = tmp_path_factory.mktemp("screen")
    for seed, name in enumerate(GOOD, start=1):
        result = simulate(SimulationConfig(n_larvae=3, duration=8.0, seed=seed))
        write_simulation(result, root / name, "trxmat")
    (root / "run2b").mkdir()
    (root / "run2b" / "trx.mat").write_bytes((root / "run2" / "trx.mat").read_bytes()[:3000])
    return root


@pytest.fixture(scope="module")
def reference(screen, tmp_path_factory):
    """Single-process predictions of every good file (the truth for every dask run)."""
    out = tmp_path_factory.mktemp("reference")
    inputs = [screen / name / "trx.mat" for name in GOOD]
    outputs = {str(p): str(out / f"{p.parent.name}.label") for p in inputs}
    totals = run_batch(inputs, "", default_spec(), Execution(in_process=True), outputs=outputs)
    assert totals.done == len(GOOD)
    return {Path(p).parent.name: out / Path(o).name for p, o in outputs.items()}


def copy_screen(screen: Path, target: Path) -> Path:
    shutil.copytree(screen, target, ignore=shutil.ignore_patterns("predicted*"))
    return target


def assert_same_prediction(label: Path, reference: Path) -> None:
    """Labels equal, probabilities equal to float32 rounding (worker processes use one
    BLAS thread, the reference process several)."""
    got, want = Labels.load(label, verify=False), Labels.load(reference, verify=False)
    assert sorted(got.tracks) == sorted(want.tracks)
    for larva in want.tracks:
        assert np.array_equal(got.tracks[larva].t, want.tracks[larva].t)
        assert got.tracks[larva].labels == want.tracks[larva].labels, (label, larva)
    sidecar = label.with_name(label.name.replace(".label", ".probabilities.h5"))
    reference_sidecar = reference.with_name(reference.name.replace(".label", ".probabilities.h5"))
    with h5py.File(sidecar) as a, h5py.File(reference_sidecar) as b:
        np.testing.assert_allclose(a["probabilities"][:], b["probabilities"][:], atol=1e-5)
        assert np.array_equal(a["label"][:], b["label"][:])


# ------------------------------------------------------------------ dask, for real
def test_killed_worker_and_corrupt_file(screen, reference, tmp_path):
    """LocalCluster, 2 worker processes: one is SIGKILLed while it tags a file; the
    scheduler reruns that file elsewhere, every good output is complete and equal to the
    single-process reference, the truncated file is reported, each worker loads the model once."""
    from distributed import Client, LocalCluster

    root = copy_screen(screen, tmp_path / "screen")
    jobs = list(plan_jobs(iter_tracking_inputs([root]), "{dir}/predicted.label", "default"))
    assert len(jobs) == len(GOOD) + 1
    records, killed = [], {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        runner = DaskRunner(client, default_spec(), window=4)
        for record in runner.run(jobs):
            records.append(record)
            if not killed:
                busy, deadline = {}, time.monotonic() + 10
                while not busy and time.monotonic() < deadline:
                    busy = {address: keys for address, keys in client.processing().items() if keys}
                    time.sleep(0.01)
                address, keys = next(iter(busy.items()))
                pid = client.run(os.getpid, workers=[address])[address]
                killed = {"pid": pid, "keys": list(keys)}
                os.kill(pid, signal.SIGKILL)
    by_input = {Path(r["input"]).parent.name: r for r in records}
    assert len(records) == len(GOOD) + 1 and sorted(by_input) == sorted(GOOD + ["run2b"])
    assert by_input["run2b"]["status"] == FAILED and "truncated" in by_input["run2b"]["reason"]
    assert "run2b/trx.mat" in by_input["run2b"]["reason"]
    interrupted = [r for r in records if f"tag-{r['index']}-" in " ".join(map(str, killed["keys"]))]
    assert interrupted, "the killed worker was tagging a file"
    for record in interrupted:  # redone elsewhere, not lost
        assert record["status"] in (DONE, FAILED) and record["pid"] != killed["pid"]
    for name in GOOD:
        assert by_input[name]["status"] == DONE, by_input[name]
        assert_same_prediction(root / name / "predicted.label", reference[name])
    loads = {}
    for record in records:
        loads[record["pid"]] = loads.get(record["pid"], 0) + record["model_loaded"]
    assert all(count <= 1 for count in loads.values()), loads  # once per worker process
    assert [p for p in root.rglob("*.tmp")] == []


def test_cli_batch_then_driver_killed_then_resume(screen, reference, tmp_path):
    """`predict DIR --workers 2`: the whole job (driver and workers) is SIGKILLed after two
    files; rerunning the same command (no --overwrite) skips every finished output (same
    bytes, same mtime), tags the rest, reports the corrupt file and exits 1."""
    root = copy_screen(screen, tmp_path / "screen")
    command = [*CLI, "predict", str(root), "--workers", "2", "--summary", str(tmp_path / "summary.json")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(root.glob("*/predicted.label"))) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # as a scheduler kills a job: every process at once
    proc.communicate(timeout=60)
    finished = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.glob("*/predicted.label")}
    assert 2 <= len(finished) < len(GOOD), "killed mid-batch"
    assert not (tmp_path / "summary.json").exists()  # no half summary under the final name

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stderr  # the truncated file
    assert "run2b/trx.mat" in again.stderr and "truncated" in again.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {Path(r["input"]).parent.name: r["status"] for r in summary["files"]}
    for path, (mtime, content) in finished.items():
        assert status[path.parent.name] == SKIPPED
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
    assert summary["totals"]["done"] == len(GOOD) - len(finished)
    assert summary["totals"]["failed"] == 1 and status["run2b"] == FAILED
    for name in GOOD:
        assert_same_prediction(root / name / "predicted.label", reference[name])


def test_pipeline_readers_feed_one_tagger(screen, reference, tmp_path):
    """The --device cuda layout on CPUs: reader workers parse files, one tagging worker
    (resource `tagger`, the GPU's place) tags them; the outputs are the same."""
    root = copy_screen(screen, tmp_path / "screen")
    shutil.rmtree(root / "run2b")
    records = []
    totals = run_batch(iter_tracking_inputs([root]), "{dir}/predicted.label", default_spec(),
                       Execution(workers=2, pipeline=True), on_record=records.append)
    assert totals.done == len(GOOD) and totals.failed == 0
    taggers = {r["pid"] for r in records}
    assert len(taggers) == 1  # every file tagged by the one tagging worker
    for name in GOOD:
        assert_same_prediction(root / name / "predicted.label", reference[name])


def test_cli_on_an_existing_scheduler(screen, reference, tmp_path):
    """`--scheduler ADDRESS`: the files are tagged by that cluster's worker, not by a new one."""
    from distributed import Client, LocalCluster

    root = tmp_path / "two"
    for name in GOOD[:2]:
        shutil.copytree(screen / name, root / name, ignore=shutil.ignore_patterns("predicted*"))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      resources={"reader": 1, "tagger": 1}) as cluster, Client(cluster) as client:
        worker_pid = next(iter(client.run(os.getpid).values()))
        assert has_pipeline_workers(client)  # --device cuda would split reading and tagging here
        result = subprocess.run([*CLI, "predict", str(root), "--scheduler", cluster.scheduler_address,
                                 "--summary", str(tmp_path / "summary.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["totals"]["done"] == 2
    assert {r["worker"].rsplit(":", 1)[1] for r in summary["files"]} == {str(worker_pid)}
    for name in GOOD[:2]:
        assert_same_prediction(root / name / "predicted.label", reference[name])


# ------------------------------------------------------------ resume and guards
def test_resume_decisions(screen, reference, tmp_path):
    """Up to date → skip; other options, changed input → redo; edited → refuse; a file
    that is not a prediction → refuse without --overwrite."""
    spec = default_spec()
    fingerprint = model_fingerprint(spec)
    data = tmp_path / "run0"
    shutil.copytree(screen / "run0", data)
    out, tracking = data / "predicted.label", data / "trx.mat"
    assert run_batch([tracking], "{dir}/predicted.label", spec, Execution()).done == 1  # in process
    assert existing_output_action(out, tracking, fingerprint, overwrite=False,
                                  overwrite_edited=False) == ("skip", "up to date")
    changed = dict(fingerprint, options=options_record(dict(spec.options, edges="skip")))
    action, note = existing_output_action(out, tracking, changed, overwrite=False, overwrite_edited=False)
    assert action == "tag" and "edges" in note
    other_model = dict(fingerprint, weights_sha1="0" * 40)
    assert "model weights" in existing_output_action(out, tracking, other_model, overwrite=False,
                                                     overwrite_edited=False)[1]
    # the input changed (another recording under the same name)
    shutil.copy(screen / "run1" / "trx.mat", tracking)
    action, note = existing_output_action(out, tracking, fingerprint, overwrite=False, overwrite_edited=False)
    assert action == "tag" and "changed" in note
    # a prediction a user edited afterwards is never replaced without --overwrite-edited
    edited = Labels.load(out, verify=False)
    edited.append_label("edited")
    edited.dump(out)
    with pytest.raises(OutputExistsError, match="--overwrite-edited"):
        existing_output_action(out, tracking, fingerprint, overwrite=True, overwrite_edited=False)
    # a label file that is not a prediction (ground truth) needs --overwrite
    shutil.copy(screen / "run0" / "groundtruth.label", out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        existing_output_action(out, tracking, fingerprint, overwrite=False, overwrite_edited=False)
    assert existing_output_action(out, tracking, fingerprint, overwrite=True, overwrite_edited=False)[0] == "tag"


def test_streamed_inputs_globs_shards_and_collisions(screen, tmp_path):
    found = list(iter_tracking_inputs([screen]))
    assert found == sorted(found) and len(found) == len(GOOD) + 1
    pattern = list(iter_tracking_inputs([Path(f"{screen}/run[0-2]*/trx.mat")]))
    assert [p.parent.name for p in pattern] == ["run0", "run1", "run2", "run2b"]
    with pytest.raises(TaggingError, match="no file matches"):
        list(iter_tracking_inputs([screen / "nothing*"]))
    shards = [[j.index for j in plan_jobs(found, "{dir}/p.label", "m", parse_shard(f"{i}/3"))] for i in range(3)]
    assert sorted(sum(shards, [])) == list(range(len(found))) and shards[0] == [0, 3]
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    jobs = list(plan_jobs(found[:2], str(tmp_path / "{model}.label"), "m"))
    assert jobs[0].error is None and "would both be written" in jobs[1].error
    with pytest.raises(TaggingError, match="would both be written"):
        run_batch(found[:2], str(tmp_path / "x.label"), default_spec(), Execution(in_process=True))
    assert not (tmp_path / "x.label").exists()


def test_cli_rejects_bad_batch_flags(screen, capsys):
    from taggingbackends.cli import main

    for flags in (["--shard", "5/2"], ["--cluster", "pbs"], ["--workers", "0"],
                  ["--cluster", "slurm", "--scheduler", "tcp://x:1"]):
        with pytest.raises(SystemExit) as exit:
            main(["predict", str(screen), *flags])
        assert exit.value.code == 2, flags
    with pytest.raises(SystemExit) as exit:  # an empty shard, an empty folder: one line, exit 1
        main(["predict", str(screen / "run0" / "trx.mat"), "--shard", "1/2"])
    assert exit.value.code == 1 and "no tracking files found" in capsys.readouterr().err
