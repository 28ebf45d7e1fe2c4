"""Batch tagging: many tracking files, one command, on dask.distributed.

The driver (the ``tagging-backend predict`` process) streams the inputs, keeps a bounded
window of dask futures in flight and writes nothing but the progress, the final table and
the optional summary; workers tag one file per task and write its outputs themselves
(atomically), so results are written as they come and the driver's memory does not grow
with the number of files.

Where the work runs (:class:`Execution`):

* one input, no scheduler asked for: in the driver's own process (no dask at all);
* several: a :class:`distributed.LocalCluster` of worker processes with one thread each
  (``--workers N``, default: the cores this process may use);
* ``--scheduler ADDRESS``: the workers of an existing dask cluster;
* ``--cluster slurm``: workers started as Slurm jobs by :mod:`dask_jobqueue`;
* ``--device cuda`` on a local cluster: CPU "reader" workers parse the files and one GPU
  worker cuts windows and runs the network on them (:func:`read_run` → :func:`tag_file`),
  so that file parsing does not starve the GPU.

Each worker loads the model once (:func:`cached_model`), not once per file.

Fault tolerance: a file that cannot be tagged is reported with a one-line reason and the
batch goes on; a task whose worker dies is rerun elsewhere by the dask scheduler (up to its
``allowed-failures``); outputs are only ever renamed into place complete. Rerunning the same
command resumes: an existing output whose provenance matches the request (the input's
SHA-1, the model weights' SHA-1, the prediction options, the tool and backend versions) is
skipped; a stale prediction is redone; a file holding manual edits, or one that is not a
prediction at all, is never replaced without ``--overwrite-edited``/``--overwrite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import itertools
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from . import __version__
from .errors import OutputExistsError, TaggingError, one_line
from .fileio import sha1sum

#: Statuses of a file in a batch.
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
NOT_A_PREDICTION = "it is not a prediction of this tool"


# ------------------------------------------------------------------ what to run
@dataclass(frozen=True)
class TaggingSpec:
    """Everything a worker needs to tag a file, small enough to send with every task."""

    backend: Optional[str]
    model_dir: str
    model_name: str
    options: dict                       # the backend's PredictOptions fields
    overwrite: bool = False
    overwrite_edited: bool = False
    reader_options: dict = field(default_factory=dict)   # formats.load keyword arguments


@dataclass(frozen=True)
class Job:
    """One input and its output; ``error`` set when the driver already knows it fails."""

    index: int
    input: str
    output: str
    error: Optional[str] = None


@dataclass
class Execution:
    """Where the tasks run (see the module docstring)."""

    workers: Optional[int] = None       # local worker processes (default: usable cores)
    scheduler: Optional[str] = None     # address of a running dask scheduler
    cluster: Optional[str] = None       # "slurm"
    jobs: int = 1                       # Slurm jobs
    cores: Optional[int] = None         # worker processes (one thread each) per Slurm job
    memory: Optional[str] = None        # per Slurm job (default: jobqueue config, else 4GB)
    walltime: Optional[str] = None      # default: jobqueue config, else 01:00:00
    queue: Optional[str] = None
    job_extra: tuple = ()               # extra #SBATCH directives, e.g. "--gres=gpu:1"
    shard: Optional[tuple] = None       # (i, n): every n-th input starting at the i-th
    pipeline: Optional[bool] = None     # reader workers + one tagging worker (default: device is cuda)
    window: Optional[int] = None        # futures in flight (default: 2 per worker thread, ≥ 4)
    start_timeout: float = 600.0        # seconds to wait for a first worker (Slurm queues)
    in_process: Optional[bool] = None   # default: one input and no scheduler/cluster asked for

    def uses_dask_anyway(self) -> bool:
        return bool(self.scheduler or self.cluster)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parse_shard(text: str) -> tuple:
    """``"3/10"`` → ``(3, 10)``: the 4th of 10 shards (0-based, as ``$SLURM_ARRAY_TASK_ID``
    with ``--array=0-9``); ValueError if malformed."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError("--shard takes I/N, e.g. 0/10 (0 ≤ I < N)") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 ≤ I < N")
    return index, count


# ------------------------------------------------------------ provenance, resume
def options_record(options: Any) -> dict:
    """The prediction options as stored in an output's ``metadata.provenance.options``
    and compared on resume: JSON types, sorted keys, the device reduced to its kind
    (``cuda:1`` and ``cuda:0`` give the same labels, ``cpu`` and ``cuda`` may not)."""
    raw = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    record = {key: _plain(value) for key, value in sorted(raw.items())}
    if isinstance(record.get("device"), str):
        record["device"] = record["device"].split(":")[0]
    return record


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def backend_version(module) -> Optional[str]:
    """The version of the package a backend plug-in module belongs to."""
    top = importlib.import_module(module.__name__.split(".")[0])
    return getattr(module, "__version__", None) or getattr(top, "__version__", None)


def model_fingerprint(spec: TaggingSpec) -> dict:
    """What an up-to-date output's provenance must say (loads the model: weights hash)."""
    module = _backend(spec.backend)
    saved, _ = cached_model(spec.backend, spec.model_dir, spec.options.get("device", "cpu"))
    return {"version": __version__, "backend_version": backend_version(module),
            "weights_sha1": getattr(saved, "weights_sha1", None) or None,
            "options": options_record(module.PredictOptions(**spec.options)),
            "reader": options_record(spec.reader_options)}


def provenance_mismatch(labels, fingerprint: dict, input_path: Path) -> Optional[str]:
    """None if ``labels`` (an existing output) was predicted from this very input with
    this model, these options and this tool version; else what differs, in a few words."""
    provenance = labels.metadata.get("provenance")
    if not isinstance(provenance, dict) or provenance.get("software") != "taggingbackends" \
            or not isinstance(provenance.get("model"), dict):
        return NOT_A_PREDICTION
    model = provenance["model"]
    if fingerprint["weights_sha1"] is None:
        return "the model has no weights hash to compare"
    for what, stored, expected in (("the model weights", model.get("weights_sha1"), fingerprint["weights_sha1"]),
                                   ("the tool version", provenance.get("version"), fingerprint["version"]),
                                   ("the backend version", provenance.get("backend_version"),
                                    fingerprint["backend_version"])):
        if stored != expected:
            return f"{what} changed ({stored} → {expected})"
    stored_options = provenance.get("options")
    if stored_options != fingerprint["options"]:
        if not isinstance(stored_options, dict):
            return "it records no prediction options"
        changed = sorted(k for k in set(stored_options) | set(fingerprint["options"])
                         if stored_options.get(k) != fingerprint["options"].get(k))
        return "the options changed (" + ", ".join(changed) + ")"
    if options_record(provenance.get("reader") or {}) != fingerprint.get("reader", {}):
        return "the reader options changed"
    return _dependency_mismatch(labels, input_path)


def _dependency_mismatch(labels, input_path: Path) -> Optional[str]:
    base = labels.path.parent if labels.path is not None else Path(".")
    target = input_path.resolve()
    dependencies = [(base / d["filename"]).resolve() for d in labels.dependencies]
    if not any(d == target or target in d.parents for d in dependencies):
        return "it was predicted from another input"
    for dependency, record in zip(dependencies, labels.dependencies):
        if not dependency.is_file():
            return f"its input {record['filename']} is missing"
        if sha1sum(dependency) != record.get("sha1"):
            return f"the input {record['filename']} changed (SHA-1)"
    return None


def existing_output_action(output: Path, input_path: Path, fingerprint: dict, *,
                           overwrite: bool, overwrite_edited: bool) -> tuple:
    """``("tag", note)`` or ``("skip", note)`` for an output that may exist; raises
    OutputExistsError where replacing it needs a flag the user did not give."""
    from .data.labels import Labels, is_edited

    if not output.exists():
        return "tag", None
    try:
        labels = Labels.load(output, verify=False)
    except TaggingError:
        if overwrite:
            return "tag", "replaced (--overwrite)"
        raise OutputExistsError(f"{output}: already exists and is no label file "
                                "(pass --overwrite to replace it)") from None
    mismatch = provenance_mismatch(labels, fingerprint, input_path)
    if mismatch is None and not overwrite:
        return "skip", "up to date"
    edited = any(is_edited(e) for track in labels.tracks.values() for e in track.labels)
    if edited and not overwrite_edited:
        raise OutputExistsError(f"{output}: holds manually edited labels; pass --overwrite-edited "
                                "to replace them (or choose another --output)")
    if overwrite:
        return "tag", "replaced (--overwrite)"
    if mismatch == NOT_A_PREDICTION:
        raise OutputExistsError(f"{output}: already exists (pass --overwrite to replace it)")
    return "tag", f"redone: {mismatch}"


# ------------------------------------------------------------- the worker side
_MODELS: dict = {}


def _backend(name: Optional[str]):
    from .backends import get_backend

    return get_backend(name)


def cached_model(backend: Optional[str], model_dir: str, device: str) -> tuple:
    """(model, loaded_now): the model of this worker process, loaded on first use only."""
    key = (backend, model_dir, device)
    if key in _MODELS:
        return _MODELS[key], False
    _MODELS[key] = _backend(backend).load_model(Path(model_dir), device=device)
    return _MODELS[key], True


def _record(job: Job, **values) -> dict:
    record = {"index": job.index, "input": job.input, "output": job.output, "status": FAILED,
              "reason": None, "larvae": 0, "steps": 0, "seconds": 0.0, "pid": os.getpid(),
              "worker": f"{socket.gethostname()}:{os.getpid()}", "model_loaded": False}
    record.update(values)
    return record


def failure_reason(err: BaseException) -> str:
    """One line: a TaggingError's own message, else the exception type and its first line."""
    if isinstance(err, TaggingError):
        return one_line(err)
    return f"{type(err).__name__}: {one_line(err)}"


def read_run(spec: TaggingSpec, job: Job, fingerprint: dict):
    """Pipeline stage 1 (a CPU reader worker): decide whether the file needs tagging, and
    if so read it. Returns the Run, or a finished record (skipped, failed)."""
    tick = time.perf_counter()
    try:
        action, note = existing_output_action(Path(job.output), Path(job.input), fingerprint,
                                              overwrite=spec.overwrite, overwrite_edited=spec.overwrite_edited)
        if action == "skip":
            return _record(job, status=SKIPPED, reason=note, seconds=time.perf_counter() - tick)
        from .formats import load

        return load(Path(job.input), **spec.reader_options), note
    except Exception as err:  # one bad file is reported, the batch goes on
        return _record(job, reason=failure_reason(err), seconds=time.perf_counter() - tick)


def tag_file(spec: TaggingSpec, job: Job, fingerprint: Optional[dict] = None, loaded: Any = None) -> dict:
    """Tag one file with the backend plug-in (the dask task): returns a small record
    (status, reason, larvae, steps, seconds), never the predictions themselves.

    ``loaded``: what :func:`read_run` returned on a reader worker (pipeline mode)."""
    if isinstance(loaded, dict):  # skipped or failed while reading
        return loaded
    tick = time.perf_counter()
    record = _record(job)
    try:
        if loaded is None:  # decided before the model is needed: a skipped file costs a hash
            action, note = existing_output_action(Path(job.output), Path(job.input),
                                                  fingerprint or model_fingerprint(spec), overwrite=spec.overwrite,
                                                  overwrite_edited=spec.overwrite_edited)
            run = None
        else:
            (run, note), action = loaded, "tag"
        if action == "skip":
            record.update(status=SKIPPED, reason=note)
        else:
            record.update(_predict(spec, job, run), reason=note)
    except Exception as err:  # one bad file is reported, the batch goes on
        record.update(status=FAILED, reason=failure_reason(err))
    record["seconds"] = time.perf_counter() - tick
    return record


def _predict(spec: TaggingSpec, job: Job, run: Any = None) -> dict:
    """Run the backend's ``predict_file`` with this worker's model; the record's fields."""
    module = _backend(spec.backend)
    saved, loaded_now = cached_model(spec.backend, spec.model_dir, spec.options.get("device", "cpu"))
    extra = {"run": run} if run is not None else {}
    if spec.reader_options:  # (plug-ins without reader options still work when none are given)
        extra["reader"] = spec.reader_options
    result = module.predict_file(saved, Path(job.input), Path(job.output), module.PredictOptions(**spec.options),
                                 model_name=spec.model_name, **extra)
    fields = {"status": DONE, "model_loaded": loaded_now, "larvae": int(result.get("larvae", 0)),
              "steps": int(result.get("steps", 0))}
    if result.get("sidecar"):
        fields["sidecar"] = str(result["sidecar"])
    if isinstance(result.get("uncertain_share"), (int, float)):  # steps flagged uncertain in the sidecar
        fields["uncertain_share"] = float(result["uncertain_share"])
    if isinstance(result.get("summary"), dict):  # a backend's own per-file summary, if small
        fields["summary"] = result["summary"]
    elif isinstance(result.get("summary"), str):  # what was read and masked, in one line
        fields["read"] = result["summary"]
    return fields


def accepts_run(backend: Optional[str]) -> bool:
    """Whether a backend's ``predict_file`` takes a file already read (pipeline mode)."""
    return "run" in inspect.signature(_backend(backend).predict_file).parameters


# ------------------------------------------------------------------ the driver
def plan_jobs(inputs: Iterable[Path], template: str, model_name: str,
              shard: Optional[tuple] = None, outputs: Optional[dict] = None) -> Iterator[Job]:
    """Jobs for the inputs, lazily: outputs from the ``--output`` template (or the explicit
    ``outputs`` mapping, input path string → output path); a second input mapped onto an
    output already planned becomes a failed job (the first is kept). The set of planned
    outputs is the only thing kept per file (paths, a few MB per hundred thousand files)."""
    from .cli.options import collision_message, output_path

    planned: dict = {}
    for index, path in enumerate(inputs):
        if shard is not None and index % shard[1] != shard[0]:
            continue
        out = Path(outputs[str(path)]) if outputs is not None else output_path(path, template, model_name)
        key = str(out.resolve())
        if key in planned:
            yield Job(index, str(path), str(out), error=collision_message(Path(planned[key]), path, out))
            continue
        planned[key] = str(path)
        yield Job(index, str(path), str(out))


@dataclass
class Totals:
    """Running counts of a batch, and the failures (kept for the final table)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    larvae: int = 0
    steps: int = 0
    model_loads: int = 0
    failures: list = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    max_failures_kept: int = 1000

    def add(self, record: dict) -> None:
        status = record["status"]
        setattr(self, status, getattr(self, status) + 1)
        self.larvae += record.get("larvae", 0)
        self.steps += record.get("steps", 0)
        self.model_loads += bool(record.get("model_loaded"))
        if status == FAILED and len(self.failures) < self.max_failures_kept:
            self.failures.append((record["input"], record["reason"]))

    @property
    def files(self) -> int:
        return self.done + self.skipped + self.failed

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def as_dict(self) -> dict:
        seconds = self.seconds
        return {"files": self.files, "done": self.done, "skipped": self.skipped, "failed": self.failed,
                "larvae": self.larvae, "steps": self.steps, "seconds": round(seconds, 3),
                "files_per_second": round(self.files / seconds, 3) if seconds else None,
                "steps_per_second": round(self.steps / seconds, 1) if seconds else None,
                "model_loads": self.model_loads}


class SummaryWriter:
    """``--summary FILE.json``, streamed: one record per file as it finishes, the totals at
    the end, renamed into place when the batch ends (memory stays flat)."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self._handle = None
        self._tmp: Optional[Path] = None
        self._first = True

    def __enter__(self) -> "SummaryWriter":
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            self._handle = open(self._tmp, "w", encoding="utf-8")
            self._handle.write('{"files": [\n')
        return self

    def write(self, record: dict) -> None:
        if self._handle is None:
            return
        keep = {k: v for k, v in record.items() if k not in ("pid", "model_loaded", "index")}
        keep["seconds"] = round(keep.get("seconds", 0.0), 3)
        self._handle.write(("" if self._first else ",\n") + json.dumps(keep))
        self._first = False

    def finish(self, totals: dict, execution: dict) -> None:
        if self._handle is None:
            return
        self._handle.write("\n],\n" + f'"totals": {json.dumps(totals)},\n"execution": {json.dumps(execution)}\n}}\n')
        self._handle.close()
        self._handle = None
        os.replace(self._tmp, self.path)

    def __exit__(self, *exc) -> None:
        if self._handle is not None:  # interrupted: no half summary under the final name
            self._handle.close()
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()


def run_in_process(jobs: Iterable[Job], spec: TaggingSpec) -> Iterator[dict]:
    """Tag the jobs one after the other in this process (one input: no dask needed)."""
    fingerprint = None
    for job in jobs:
        if job.error:
            yield _record(job, reason=job.error)
            continue
        try:
            fingerprint = fingerprint or model_fingerprint(spec)
        except Exception as err:
            yield _record(job, reason=failure_reason(err))
            continue
        yield tag_file(spec, job, fingerprint)


class DaskRunner:
    """Submit jobs to a dask client with at most ``window`` futures in flight, yielding
    each record as its task finishes (in completion order)."""

    def __init__(self, client, spec: TaggingSpec, window: int, pipeline: bool = False):
        self.client, self.spec, self.window, self.pipeline = client, spec, window, pipeline
        self.in_flight: dict = {}   # future → job

    def _fingerprint(self):
        """Loaded once on a tagging worker (that worker keeps the model), sent to every task."""
        resources = {"tagger": 1} if self.pipeline else None
        return self.client.submit(model_fingerprint, self.spec, pure=False, resources=resources).result()

    def _submit(self, job: Job, fingerprint: dict):
        if self.pipeline:
            loaded = self.client.submit(read_run, self.spec, job, fingerprint, pure=False,
                                        resources={"reader": 1}, key=f"read-{job.index}-{os.urandom(4).hex()}")
            return self.client.submit(tag_file, self.spec, job, fingerprint, loaded, pure=False,
                                      resources={"tagger": 1}, key=f"tag-{job.index}-{os.urandom(4).hex()}")
        return self.client.submit(tag_file, self.spec, job, fingerprint, pure=False,
                                  key=f"tag-{job.index}-{os.urandom(4).hex()}")

    def run(self, jobs: Iterable[Job]) -> Iterator[dict]:
        from distributed import as_completed

        jobs = iter(jobs)
        first = next(jobs, None)
        if first is None:
            return
        jobs = itertools.chain([first], jobs)
        try:
            fingerprint = self._fingerprint()
        except Exception as err:  # the model cannot be loaded: every file would fail alike
            raise TaggingError(f"loading the model on a worker: {failure_reason(err)}") from err
        completed = as_completed()

        def refill() -> Iterator[dict]:
            while completed.count() < self.window:
                job = next(jobs, None)
                if job is None:
                    return
                if job.error:
                    yield _record(job, reason=job.error)
                    continue
                future = self._submit(job, fingerprint)
                self.in_flight[future] = job
                completed.add(future)

        yield from refill()
        for future in completed:
            job = self.in_flight.pop(future)
            yield self._collect(future, job)
            del future
            yield from refill()

    @staticmethod
    def _collect(future, job: Job) -> dict:
        if future.status == "finished":
            return future.result()
        try:
            error = future.exception()
        except Exception as err:  # cancelled, lost
            error = err
        from distributed import KilledWorker

        if isinstance(error, KilledWorker):
            return _record(job, reason="the workers tagging it died repeatedly (out of memory? "
                                       "a crash in a library?)")
        return _record(job, reason=failure_reason(error))

    def in_flight_outputs(self) -> list:
        return [Path(job.output) for job in self.in_flight.values()]


@contextlib.contextmanager
def dask_client(execution: Execution, n_inputs_hint: Optional[int], device: str):
    """A dask client for ``execution``: an existing scheduler, Slurm jobs, or a local
    cluster of single-threaded worker processes (readers + one tagger in pipeline mode)."""
    import logging

    from distributed import Client

    quiet = logging.ERROR
    if execution.scheduler:
        with Client(execution.scheduler, timeout="30s") as client:
            yield client
        return
    if execution.cluster == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise TaggingError("--cluster slurm needs dask-jobqueue: pip install 'taggingbackends[slurm]'") from None
        with SLURMCluster(**slurm_options(execution), silence_logs=quiet) as cluster:
            cluster.scale(jobs=execution.jobs)
            with Client(cluster) as client:
                _wait_for_workers(client, execution.start_timeout, "Slurm jobs (check squeue and "
                                  "the job logs)")
                yield client
        return
    workers = execution.workers or usable_cores()
    if n_inputs_hint is not None:
        workers = max(1, min(workers, n_inputs_hint))
    if _pipeline(execution, device):
        from distributed import Nanny, Scheduler, SpecCluster

        specs = {f"reader-{i}": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"reader": 1},
                                                            "silence_logs": quiet}}
                 for i in range(workers)}
        specs["tagger"] = {"cls": Nanny, "options": {"nthreads": 1, "resources": {"tagger": 1},
                                                     "silence_logs": quiet}}
        cluster_cm = SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                                 silence_logs=quiet)
    else:
        from distributed import LocalCluster

        cluster_cm = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=quiet)
    with cluster_cm as cluster, Client(cluster) as client:
        yield client


def slurm_options(execution: Execution) -> dict:
    """SLURMCluster arguments: what the user gave, else the site's dask-jobqueue
    configuration (``~/.config/dask/jobqueue.yaml``, ``jobqueue.slurm.*``: interface,
    prologue, account...), else our defaults (1 core, 4GB, 1 h); one single-threaded
    worker process per core."""
    import dask

    def configured(name: str, default):
        return dask.config.get(f"jobqueue.slurm.{name}", default=None) or default

    cores = execution.cores or configured("cores", 1)
    options = {"cores": cores, "processes": cores, "memory": execution.memory or configured("memory", "4GB"),
               "walltime": execution.walltime or configured("walltime", "01:00:00"),
               "scheduler_options": {"dashboard_address": ":0", **(configured("scheduler-options", {}) or {})}}
    if execution.queue:
        options["queue"] = execution.queue
    if execution.job_extra:
        options["job_extra_directives"] = [*(configured("job-extra-directives", []) or []), *execution.job_extra]
    return options


def _pipeline(execution: Execution, device: str) -> bool:
    if execution.pipeline is not None:
        return execution.pipeline
    return device.startswith("cuda") and not execution.uses_dask_anyway()


def has_pipeline_workers(client) -> bool:
    """Whether an existing cluster offers the reader/tagger split (workers started with
    ``--resources reader=1`` and, on the GPU machine, ``--resources tagger=1``)."""
    offered = {name for worker in client.scheduler_info()["workers"].values()
               for name in (worker.get("resources") or {})}
    return {"reader", "tagger"} <= offered


def _wait_for_workers(client, timeout: float, where: str) -> None:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise TaggingError(f"no dask worker joined within {timeout:g} s from {where}") from None


def remove_partial_files(outputs: Iterable[Path], since: float) -> None:
    """Temporary files of outputs that were being written when the batch was interrupted
    (``.NAME.*.tmp`` beside each, created by this batch): never left behind."""
    for output in outputs:
        stem = output.name.split(".")[0]
        with contextlib.suppress(OSError):
            for partial in output.parent.glob(f".{stem}.*.tmp"):
                with contextlib.suppress(OSError):
                    if partial.stat().st_mtime >= since:
                        partial.unlink()


def run_batch(inputs: Iterable[Path], template: str, spec: TaggingSpec, execution: Execution,
              on_record: Callable[[dict], None] = lambda record: None,
              outputs: Optional[dict] = None, on_total: Callable[[int], None] = lambda total: None) -> Totals:
    """Tag every input; ``on_record`` sees each file's record as it finishes.

    Chooses in-process or dask execution (:class:`Execution`), streams the jobs, and
    cleans up after an interruption. Raises TaggingError for problems that concern
    the whole batch (an --output template that maps several inputs to one file);
    a problem with one file is a failed record. No input: empty totals. ``on_total`` gets
    the number of files once every input has been found (for a progress bar's total)."""
    from .cli.options import template_varies

    since = time.time() - 1
    jobs = plan_jobs(inputs, template, spec.model_name, execution.shard, outputs)
    head = list(itertools.islice(jobs, max(2, execution.workers or usable_cores())))
    if not head:
        return Totals()  # nothing to tag (the caller says why: no input, an empty shard)
    if len(head) > 1 and outputs is None and not template_varies(template):
        raise TaggingError(collision_message_for(head, template))
    clash = next((job.error for job in head if job.error), None)
    if clash:  # among the first inputs: stop before tagging anything (later: that file fails)
        raise TaggingError(clash)
    exhausted = len(head) < max(2, execution.workers or usable_cores())
    all_jobs = _counted(itertools.chain(head, jobs), on_total)
    totals = Totals()
    in_process = execution.in_process
    if in_process is None:
        in_process = len(head) == 1 and not execution.uses_dask_anyway()
    if in_process:
        for record in run_in_process(all_jobs, spec):
            totals.add(record)
            on_record(record)
        return totals
    device = spec.options.get("device", "cpu")
    pipeline = _pipeline(execution, device) and accepts_run(spec.backend)
    decide_on_connect = bool(execution.scheduler) and execution.pipeline is None
    execution = dataclasses.replace(execution, pipeline=pipeline)
    runner = None
    finished = False
    try:
        with dask_client(execution, len(head) if exhausted else None, device) as client:
            threads = sum(client.nthreads().values())
            if execution.cluster == "slurm":  # more jobs may still be queued: plan for all of them
                threads = max(threads, execution.jobs * slurm_options(execution)["cores"])
            window = execution.window or max(4, 2 * threads)
            if decide_on_connect:  # an existing cluster: the split if its workers offer it
                pipeline = device.startswith("cuda") and accepts_run(spec.backend) and has_pipeline_workers(client)
            runner = DaskRunner(client, spec, window, pipeline=pipeline)
            for record in runner.run(all_jobs):
                totals.add(record)
                on_record(record)
            finished = True
    finally:
        if runner is not None and not finished:
            remove_partial_files(runner.in_flight_outputs(), since)
    return totals


def _counted(jobs: Iterable[Job], on_total: Callable[[int], None]) -> Iterator[Job]:
    count = 0
    for job in jobs:
        count += 1
        yield job
    on_total(count)


def collision_message_for(head: list, template: str) -> str:
    from .cli.options import collision_message

    return collision_message(Path(head[0].input), Path(head[1].input), Path(head[0].output))
