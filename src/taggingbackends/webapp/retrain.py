"""Retrain: fine-tune the current tagger on every saved correction in a folder, then tag the
open file again with the new tagger.

The training data are the saved label files under the folder that carry ``edited`` steps
(when several files label the same run, the most recently saved one). With ``scope="edited"``
(default) only the corrected steps are training examples: the tagger learns from what a
person checked, not from its own unchecked predictions; ``scope="all"`` also keeps every other
labelled step of those files. Fine-tuning goes through the backend plug-in's
``train_instance(..., start_from=...)``, as ``tagging-backend finetune`` does: by default the
backend's fast fine-tune (MaggotUBA: the classifier retrained on cached encoder outputs, seconds
on a laptop) so that the loop stays interactive; explicit iterations run exactly that training.

The new model instance goes to ``<folder>/models/<base>-edits-<n>`` and the new predictions
to ``<stem>.retrained.label`` (+ ``.probabilities.h5``) beside the open labels.
"""

from __future__ import annotations

import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..data.labels import Labels, TrackLabels, is_edited
from ..errors import TaggingError, one_line

DEFAULT_ITERATIONS = None  # the backend's fast fine-tune; (N1, N2): exactly that training
FALLBACK_ITERATIONS = (100, 100)  # for backends without a fast fine-tune
SCOPES = ("edited", "all")
RETRAINED_SUFFIX = ".retrained.label"


@dataclass
class EditedFile:
    path: Path
    run_id: str
    larvae: int
    steps: int


def collect_edit_files(directory: Path) -> list[EditedFile]:
    """Saved label files under ``directory`` with at least one ``edited`` step; hidden files,
    symbolic links and backups are skipped; one file per run (the most recently modified)."""
    newest: dict[str, tuple[float, EditedFile]] = {}
    for path in sorted(Path(directory).rglob("*.label")):
        if path.is_symlink() or any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        try:
            labels = Labels.load(path, verify=False)
        except TaggingError:
            continue
        counts = [sum(map(is_edited, track.labels)) for track in labels.tracks.values()]
        steps = sum(counts)
        if not steps:
            continue
        found = EditedFile(path, labels.run_id or path.stem, sum(1 for c in counts if c), steps)
        mtime = path.stat().st_mtime
        if found.run_id not in newest or mtime > newest[found.run_id][0]:
            newest[found.run_id] = (mtime, found)
    return [entry for _, entry in sorted(newest.values(), key=lambda item: str(item[1].path))]


def training_labels(labels: Labels, scope: str = "edited") -> Labels:
    """The labels to learn from: only ``edited`` steps (others unlabelled) or all of them."""
    if scope not in SCOPES:
        raise TaggingError(f"retrain scope {scope!r}: choose {' or '.join(SCOPES)}")
    kept = labels.copy()
    if scope == "edited":
        kept.tracks = {larva: TrackLabels(track.t, [e if is_edited(e) else [] for e in track.labels],
                                          attributes=track.attributes)
                       for larva, track in labels.tracks.items() if any(map(is_edited, track.labels))}
    return kept


def write_training_files(files: Sequence[EditedFile], workdir: Path, scope: str) -> list[Path]:
    """Copies of the edit files, restricted to ``scope``, in ``workdir``; their dependencies
    point back at the original tracking files."""
    written = []
    for i, entry in enumerate(files):
        labels = Labels.load(entry.path, verify=False)
        kept = training_labels(labels, scope)
        kept.tracking = [p.resolve() for p in labels.dependency_paths() if p.exists()]
        if not kept.tracking:
            raise TaggingError(f"{entry.path}: its tracking file is missing; cannot train on it")
        out = workdir / f"{i:03d}_{entry.path.name}"
        kept.dump(out)
        written.append(out)
    return written


def next_instance_dir(models_dir: Path, base_name: str) -> Path:
    n = 1
    while (models_dir / f"{base_name}-edits-{n}").exists():
        n += 1
    return models_dir / f"{base_name}-edits-{n}"


def finetune_on_edits(directory: Path, *, model_instance: str | None = None, output_dir: Path | None = None,
                      iterations: tuple[int, int] | None = DEFAULT_ITERATIONS, scope: str = "edited",
                      seed: int = 0,
                      backend: str | None = None,
                      progress: Callable[[str, int, float], None] | None = None) -> dict:
    """Fine-tune ``model_instance`` (default: the shipped default) on the saved edits under
    ``directory``; returns the backend's summary plus ``files`` (the edit files used)."""
    from ..backends import get_backend
    from ..cli.options import accepts_progress
    from ..project import new_model_instance

    directory = Path(directory)
    files = collect_edit_files(directory)
    if not files:
        raise TaggingError(f"{directory}: no saved label file with edited steps; correct some labels and save first")
    module = get_backend(backend)
    base = module.resolve_model(model_instance)
    output_dir = output_dir or next_instance_dir(directory / "models", base.name)
    options = module.TrainOptions(seed=seed, include_all="edited", **_training_length(module, iterations))
    with tempfile.TemporaryDirectory(prefix="tagging-retrain-") as tmp, \
            new_model_instance(output_dir) as work:
        sources = write_training_files(files, Path(tmp), scope)
        arguments = dict(start_from=base)
        if progress is not None and accepts_progress(module.train_instance):
            arguments["progress"] = progress
        result = module.train_instance(sources, work, options, **arguments)
    return {**result, "output": output_dir, "base": str(base), "files": [str(f.path) for f in files],
            "edited_steps": sum(f.steps for f in files), "edited_larvae": sum(f.larvae for f in files)}


def _training_length(module, iterations: tuple[int, int] | None) -> dict:
    """TrainOptions fields for ``iterations``: None is the backend's fast fine-tune where it has
    one (``fast`` and ``train_on`` options), else a short full one."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(module.TrainOptions)}
    if iterations is None and {"fast", "train_on"} <= names:
        return {"fast": True, "train_on": "auto"}
    return {"iterations": tuple(iterations or FALLBACK_ITERATIONS)}


def repredict(model_dir: Path, tracking_path: Path, output: Path, backend: str | None = None):
    """Tag ``tracking_path`` with the model in ``model_dir`` into ``output`` (+ sidecar);
    returns (labels, probabilities)."""
    from ..backends import get_backend
    from ..cli.options import check_existing
    from ..review import find_probabilities

    module = get_backend(backend)
    check_existing([output], overwrite=True, overwrite_edited=False)
    saved = module.load_model(model_dir)
    module.predict_file(saved, tracking_path, output, module.PredictOptions(), model_name=model_dir.name)
    labels = Labels.load(output, verify=False)
    return labels, find_probabilities(output, labels)


def retrained_path(session) -> Path:
    """``predicted.label`` → ``predicted.retrained.label`` beside it."""
    source = session.labels_path or session.save_path
    return source.with_name(source.name.split(".", 1)[0] + RETRAINED_SUFFIX)


@dataclass
class RetrainStatus:
    state: str = "idle"             # idle, running, done, failed
    stage: str = ""
    done: int = 0
    total: int = 0
    loss: float | None = None
    message: str = ""
    started: float | None = None
    elapsed: float | None = None
    result: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"state": self.state, "stage": self.stage, "done": self.done, "total": self.total,
                "loss": self.loss, "message": self.message, "elapsed": self.elapsed, "result": self.result}


class Retrainer:
    """Runs one retrain at a time in a background thread; the page polls :meth:`status`."""

    def __init__(self, session, *, model_instance: str | None = None, backend: str | None = None,
                 iterations: tuple[int, int] | None = DEFAULT_ITERATIONS, scope: str = "edited"):
        self.session = session
        # the tagger every retrain starts from: the one asked for, else the prediction's
        self.model_instance = model_instance or session.model
        self.backend = backend
        self.iterations = tuple(iterations) if iterations is not None else None
        self.scope = scope
        self._status = RetrainStatus()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def status(self) -> dict:
        with self._lock:
            status = self._status.as_dict()
            if self._status.state == "running" and self._status.started is not None:
                status["elapsed"] = round(time.monotonic() - self._status.started, 1)
            return {**status, "iterations": list(self.iterations) if self.iterations else None,
                    "scope": self.scope}

    def start(self, iterations: tuple[int, int] | None = None, scope: str | None = None) -> dict:
        with self._lock:
            if self._status.state == "running":
                raise TaggingError("a retrain is already running")
            if iterations is None:
                self.iterations = None   # the fast fine-tune
            else:
                if len(iterations) != 2 or min(iterations) < 0 or max(iterations) > 100_000:
                    raise TaggingError("iterations: two numbers N1,N2 between 0 and 100000")
                self.iterations = tuple(int(i) for i in iterations)
            if scope is not None:
                if scope not in SCOPES:
                    raise TaggingError(f"scope: choose {' or '.join(SCOPES)}")
                self.scope = scope
            self._status = RetrainStatus(state="running", stage="collecting edits", started=time.monotonic())
            self._thread = threading.Thread(target=self._run, name="retrain", daemon=True)
            self._thread.start()
        return self.status()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _progress(self, stage: str, done: int, loss: float) -> None:
        with self._lock:
            self._status.stage, self._status.done, self._status.loss = stage, int(done), float(loss)
            if self.iterations is None:   # fast fine-tune: its stages say their own length
                self._status.total = 0
            else:
                frozen, tuned = self.iterations
                self._status.total = frozen if "frozen" in stage else tuned

    def _set(self, **values) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._status, key, value)

    def _run(self) -> None:
        session = self.session
        try:
            model = self.model_instance
            try:
                from ..backends import get_backend

                get_backend(self.backend).resolve_model(model)
            except TaggingError:
                model = None  # the prediction's model is not found here: start from the default
            trained = finetune_on_edits(session.data_dir, model_instance=model, iterations=self.iterations,
                                        scope=self.scope, backend=self.backend, progress=self._progress)
            self._set(stage="tagging the open file again", done=0, total=0)
            output = retrained_path(session)
            labels, probabilities = repredict(Path(trained["output"]), session.tracking_path, output, self.backend)
            changes = session.replace_prediction(labels, probabilities)
            summary = {"model": str(trained["output"]), "base": trained["base"], "files": trained["files"],
                       "edited_steps": trained["edited_steps"], "edited_larvae": trained["edited_larvae"],
                       "best_macro_f1": trained.get("best_macro_f1"), "predicted": output.name,
                       "changes": changes}
            self._set(state="done", stage="done", result=summary,
                      message=f"{changes['changed']} of {changes['steps']} steps changed")
        except Exception as err:  # reported to the page; the server keeps running
            detail = one_line(err) if isinstance(err, TaggingError) else f"{type(err).__name__}: {one_line(err)}"
            self._set(state="failed", stage="failed", message=detail,
                      result={"traceback": traceback.format_exc(limit=5)})
        finally:
            with self._lock:
                if self._status.started is not None:
                    self._status.elapsed = round(time.monotonic() - self._status.started, 1)
