"""`predict --cluster slurm` through a real single-node Slurm (Debian slurmctld, slurmd,
slurm-client, munge), started here by hand: munged as the `munge` user with its own key
and socket under /run/munge, slurmctld and slurmd with a slurm.conf in a temporary
directory (proctrack/linuxproc, task/none, no accounting, the node line from `slurmd -C`),
ready when `srun true` runs; every daemon stopped by its pid at the end."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("dask_jobqueue")

from taggingbackends.cli import write_simulation  # noqa: E402
from taggingbackends.data.labels import Labels  # noqa: E402
from taggingbackends.simulate import SimulationConfig, simulate  # noqa: E402

CLI = [sys.executable, "-m", "taggingbackends.cli"]
BINARIES = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "squeue", "scancel")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "starting munged and the Slurm daemons needs root"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm/munge not installed (missing: {', '.join(missing)}; .ci/run installs them)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no `munge` user (install the munge package)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line() -> str:
    """This machine as Slurm sees it (`slurmd -C`), so that --mem requests can be met."""
    first = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    return first + " State=UNKNOWN"


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def slurm():
    """A running one-node Slurm; yields the environment that points the clients at it."""
    work = Path(tempfile.mkdtemp(prefix="tb-slurm-"))
    munge = pwd.getpwnam("munge")
    run_munge = Path("/run/munge")
    run_munge.mkdir(mode=0o755, exist_ok=True)
    os.chown(run_munge, munge.pw_uid, munge.pw_gid)
    tag = f"tb-{os.getpid()}"
    key, sock = run_munge / f"{tag}.key", run_munge / f"{tag}.socket"
    key.write_bytes(os.urandom(1024))
    os.chown(key, munge.pw_uid, munge.pw_gid)
    key.chmod(0o400)
    daemons: list[subprocess.Popen] = []
    logs = {name: open(work / f"{name}.out", "w") for name in ("munged", "slurmctld", "slurmd")}
    try:
        daemons.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={run_munge / (tag + '.pid')}", f"--log-file={run_munge / (tag + '.log')}",
             f"--seed-file={run_munge / (tag + '.seed')}"],
            user="munge", stdout=logs["munged"], stderr=subprocess.STDOUT))
        wait_until(sock.exists, 15, "munged did not create its socket")
        for name in ("state", "spool"):
            (work / name).mkdir()
        conf = work / "slurm.conf"
        host = socket.gethostname()
        conf.write_text(f"""\
ClusterName=tbtest
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation={work / 'state'}
SlurmdSpoolDir={work / 'spool'}
SlurmctldPidFile={work / 'slurmctld.pid'}
SlurmdPidFile={work / 'slurmd.pid'}
SlurmctldLogFile={work / 'slurmctld.log'}
SlurmdLogFile={work / 'slurmd.log'}
{node_line()}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        env = {**os.environ, "SLURM_CONF": str(conf)}
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                        stdout=logs["slurmctld"], stderr=subprocess.STDOUT))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env,
                                        stdout=logs["slurmd"], stderr=subprocess.STDOUT))

        def srun_works() -> bool:
            try:
                return subprocess.run(["srun", "--immediate=5", "-t", "1", "true"], env=env,
                                      capture_output=True, timeout=20).returncode == 0
            except subprocess.TimeoutExpired:
                return False

        try:
            wait_until(srun_works, 60, "srun true did not run within 60 s")
        except TimeoutError:
            tails = {p.name: p.read_text()[-1500:] for p in work.glob("*.log") if p.exists()}
            tails.update({p.name: p.read_text()[-1500:] for p in work.glob("*.out")})
            pytest.fail(f"Slurm did not start: {json.dumps(tails, indent=1)}")
        yield env
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
    finally:
        for daemon in reversed(daemons):  # by their pids, never by name
            daemon.send_signal(signal.SIGTERM)
        for daemon in reversed(daemons):
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        for handle in logs.values():
            handle.close()
        for path in run_munge.glob(f"{tag}.*"):
            path.unlink()
        shutil.rmtree(work, ignore_errors=True)


def test_predict_on_slurm(slurm, tmp_path):
    """Four files tagged by dask workers running as 2 Slurm jobs; every output checked
    against a run in this process."""
    names = [f"run{k}" for k in range(4)]
    for seed, name in enumerate(names, start=1):
        write_simulation(simulate(SimulationConfig(n_larvae=3, duration=8.0, seed=seed)), tmp_path / name, "trxmat")
    logs = tmp_path.parent / f"{tmp_path.name}-logs"  # beside the inputs, not among them
    logs.mkdir()
    result = subprocess.run(
        [*CLI, "predict", str(tmp_path), "--cluster", "slurm", "--jobs", "2", "--cores", "1", "--memory", "2GB",
         "--walltime", "00:10:00", f"--job-extra=--output={logs}/%j.out",
         "--summary", str(tmp_path / "summary.json")],
        capture_output=True, text=True, env=slurm, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["totals"]["done"] == len(names) and summary["totals"]["failed"] == 0
    worker_pids = {r["input"]: r for r in summary["files"]}
    assert len(worker_pids) == len(names)
    reference = tmp_path / "reference"
    for name in names:
        single = subprocess.run([*CLI, "predict", str(tmp_path / name / "trx.mat"), "-o",
                                 str(reference / f"{name}.label")], capture_output=True, text=True)
        assert single.returncode == 0, single.stderr
        got = Labels.load(tmp_path / name / "predicted.label")  # dependencies verify
        want = Labels.load(reference / f"{name}.label", verify=False)
        assert {k: t.labels for k, t in got.tracks.items()} == {k: t.labels for k, t in want.tracks.items()}
        assert (tmp_path / name / "predicted.probabilities.h5").is_file()
    assert list(logs.glob("*.out")), "the dask workers ran as Slurm jobs"


def test_job_array_recipe_with_shards(slurm, tmp_path):
    """docs/batch.md's job-array recipe, as written: `sbatch --array=0-1` of a script running
    `predict --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`; the two shards are
    disjoint and cover every input."""
    names = [f"run{k}" for k in range(3)]
    for seed, name in enumerate(names, start=11):
        write_simulation(simulate(SimulationConfig(n_larvae=2, duration=6.0, seed=seed)), tmp_path / name, "trxmat")
    (tmp_path / "summaries").mkdir()
    script = tmp_path / "tag.sh"
    script.write_text(f"""#!/bin/bash
#SBATCH --array=0-1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:10:00
#SBATCH --output={tmp_path}/summaries/%A_%a.out
{sys.executable} -m taggingbackends.cli predict {tmp_path} --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" \\
    --workers "$SLURM_CPUS_PER_TASK" --summary "{tmp_path}/summaries/$SLURM_ARRAY_TASK_ID.json"
""")
    submitted = subprocess.run(["sbatch", "--wait", str(script)], capture_output=True, text=True, env=slurm,
                               timeout=240)
    logs = "".join(p.read_text() for p in (tmp_path / "summaries").glob("*.out"))
    assert submitted.returncode == 0, submitted.stderr + logs
    shards = [json.loads((tmp_path / "summaries" / f"{i}.json").read_text()) for i in (0, 1)]
    tagged = [sorted(Path(r["input"]).parent.name for r in shard["files"]) for shard in shards]
    assert tagged == [["run0", "run2"], ["run1"]]
    for name in names:
        assert Labels.load(tmp_path / name / "predicted.label").n_steps > 0
