"""The MaggotUBA backend as ``tagging-backend`` sees it (entry point
``taggingbackends.backends: maggotuba``): model resolution and the predict,
train, finetune and pretrain workflows. The command line only parses options
and reports; everything else is here.

Model instances are looked up, in order: an existing directory path; the
backend project's ``models/<name>`` (or ``pretrained_models/<name>``) under
the current directory; the models shipped inside this package
(``maggotuba/data/models/default`` and ``maggotuba/data/pretrained_models/default``).
A pretrained model may also be an experiment directory of the original
MaggotUBA code (``config.json`` + ``best_validated_encoder.pt``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from taggingbackends.errors import TaggingError

SHIPPED = Path(__file__).parent / "data"
DEFAULT_MODEL = "default"
DEFAULT_PRETRAINED = "default"


def _candidates(name: str, kind: str, project: Path) -> list[Path]:
    return [Path(name), project / kind / name, SHIPPED / kind / name]


def resolve_model(name: str | None, project: Path | None = None) -> Path:
    """Directory of the tagger ``name`` (default: the shipped default)."""
    project = project or Path.cwd()
    name = name or DEFAULT_MODEL
    for path in _candidates(name, "models", project):
        if (path / "clf_config.json").is_file():
            return path
    known = sorted({p.name for base in (project / "models", SHIPPED / "models") if base.is_dir()
                    for p in base.iterdir() if (p / "clf_config.json").is_file()})
    raise TaggingError(f"model instance {name!r} not found (known: {', '.join(known) or 'none'}; "
                       "or give the path of a model directory)")


def resolve_pretrained(name: str | None, project: Path | None = None) -> Path:
    """Directory of a pretrained encoder: ours or the original MaggotUBA's."""
    project = project or Path.cwd()
    name = name or DEFAULT_PRETRAINED
    for path in _candidates(name, "pretrained_models", project):
        if (path / "autoencoder_config.json").is_file() or (path / "best_validated_encoder.pt").is_file():
            return path
    raise TaggingError(f"pretrained model {name!r} not found (give a pretrained_models/ instance "
                       "name or the path of a directory with its encoder)")


def load_model(directory: Path, device: str = "cpu"):
    """The model instance in ``directory``, whatever its kind (:mod:`maggotuba.instances`)."""
    from .instances import load_tagger

    return load_tagger(directory, device=device)


# ------------------------------------------------------------------ predict
@dataclass
class PredictOptions:
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 2048
    edges: str = "label"
    post_processing: Sequence[str] | None = None
    decode: bool = False
    priors: str | None = None      # natural, uniform, none, a JSON file; None: the default
    calibrate: bool = True         # divide logits by the instance's stored temperature, if any
    uncertain_below: float = 0.5   # sidecar flag: top probability below this (or a gapped window)


def predict_file(saved, input_path: Path, output: Path, options: PredictOptions,
                 model_name: str | None = None, run=None, reader: dict | None = None) -> dict:
    """Tag one tracking file; write the `.label` and its probabilities sidecar.

    ``run``: the file already read (batch runs read files on CPU workers and tag them
    on a GPU worker, :mod:`taggingbackends.batch`); default: read ``input_path`` here.
    ``reader``: options for :func:`taggingbackends.formats.load` (``format``,
    ``framerate``, ``pixelsize``, as the command line's reader flags give them).
    The result's ``summary`` says what was read and masked (also stored in the
    label's provenance, with the reader options).
    """
    from taggingbackends.batch import options_record
    from taggingbackends.data.tracks import masked_counts, run_summary
    from taggingbackends.formats import load

    from .predict import (cached_encoder, predict_run, probabilities_path, resolve_priors, stored_temperature,
                          to_labels, uncertain_steps, write_probabilities)

    priors = resolve_priors(options.priors, saved)
    temperature = stored_temperature(saved) if options.calibrate else None
    reader = dict(reader or {})
    run = load(input_path, **reader) if run is None else run
    summary = run_summary(run)
    prediction = predict_run(saved, run, device=options.device, precision=options.precision,
                             batch_size=options.batch_size, edges=options.edges,
                             post_processing=options.post_processing, priors=priors, temperature=temperature,
                             encode=cached_encoder(saved, options.device, options.precision))
    uncertain = uncertain_steps(prediction, options.uncertain_below)
    doubt = {"temperature": temperature, "uncertain_below": options.uncertain_below,
             "uncertain_steps": int(uncertain.sum()),
             "uncertain_share": round(float(uncertain.mean()), 4) if uncertain.size else 0.0}
    tracking = [p for p in run.source if p.suffix.lower() not in (".label", ".labels", ".json", ".nyxlabel")]
    labels = to_labels(prediction, saved, model_name=model_name, tracking=tracking, edges=options.edges,
                       post_processing=options.post_processing, priors=priors,
                       options=options_record(options))
    labels.metadata["provenance"].update(summary=summary, masked=masked_counts(run), calibration=doubt)
    if reader:
        labels.metadata["provenance"]["reader"] = reader
    sidecar = write_probabilities(prediction, probabilities_path(output), saved.weights_sha1, priors,
                                  uncertain=uncertain, doubt=doubt)
    labels.dump(output, encode=not options.decode)
    return {"input": input_path, "output": output, "sidecar": sidecar, "larvae": run.n_tracks,
            "steps": run.n_steps, "summary": summary, "timings": prediction.timings,
            "uncertain_share": doubt["uncertain_share"]}


# -------------------------------------------------------------------- train
@dataclass
class TrainOptions:
    labels: Sequence[str] | None = None
    balancing: str = "auto"
    class_weights: Sequence[float] | None = None
    sample_size: int | None = None
    include_all: str | None = "edited"
    train_on: str = "all"                  # all, edited or auto (see maggotuba.dataset.build_dataset)
    iterations: tuple[int, int] = (1000, 1000)
    layers: int = 1
    seed: int = 0
    window_length: int | None = None
    frame_interval: float | None = None
    device: str = "cpu"
    validation_fraction: float = 0.2
    write_dataset: Path | None = None
    classifier: str = "dense"              # or "randomforest" (20220418) or "bagging" (20221228)
    n_estimators: int = 100                # random forest only
    max_depth: int | None = None           # random forest only
    bag_window_lengths: Sequence[int] | None = None   # bagging: None = the pretrained encoder's
    bag_members: int = 25                  # bagging: members per window length
    cross_validate: int = 0                # K-fold cross-validation first (0: none)
    cv_group_by: str = "larva"             # folds of whole larvae, or of whole files
    fast: "bool | FastSettings" = False    # finetune only: maggotuba.finetune's fast path
    budget_seconds: float | None = None    # fast path: cap on training time (None: its default)

    def fast_settings(self):
        """The :class:`maggotuba.finetune.FastSettings` to use, or None (today's training)."""
        if not self.fast:
            return None
        from .finetune import FastSettings

        settings = self.fast if isinstance(self.fast, FastSettings) else FastSettings()
        if self.budget_seconds is not None:
            settings = replace(settings, budget_seconds=float(self.budget_seconds))
        return settings

    def stage_totals(self) -> tuple[int, int]:
        """Iterations of the two training stages (for progress bars)."""
        settings = self.fast_settings()
        return tuple(self.iterations) if settings is None else settings.iterations


def discover_labels(sources: Sequence[Path]) -> list[str]:
    """Primary label names declared by the label files of a data repository."""
    from taggingbackends.data.labels import Labels
    from taggingbackends.datasets import labelled_files

    names: list[str] = []
    for source in sources:
        files = labelled_files(source) if source.is_dir() else [source]
        for path in files:
            if path.suffix.lower() in (".label", ".labels", ".json", ".nyxlabel"):
                for name in Labels.load(path, verify=False).names:
                    if name not in names:
                        names.append(name)
    if not names:
        raise TaggingError("no label names found in the training data; pass --labels")
    return names


def train_instance(sources: Sequence[Path], output_dir: Path, options: TrainOptions, *,
                   pretrained: Path | None = None, start_from: Path | None = None,
                   progress: Callable[[str, int, float], None] | None = None,
                   reader: dict | None = None) -> dict:
    """Build a dataset from labelled files, train a tagger, save it in ``output_dir``.

    ``reader``: options for :func:`taggingbackends.formats.load` (``framerate``,
    ``pixelsize``, ``format``) used for every labelled file (a label file hands
    them to its tracking file).

    ``start_from`` (finetune) is an existing tagger whose encoder, classifier,
    labels and window geometry are reused; otherwise the encoder comes from
    ``pretrained`` (default: the shipped ``pretrained_models/default``).
    """
    from .dataset import build_dataset, split, write_hdf5
    from .features import WindowSpec
    from .model_card import training_summary, validation_scores
    from .instances import load_tagger
    from .models.tagger import TaggerConfig, predict_classes, save_tagger, train_tagger
    from .pretrain import load_encoder

    fast = options.fast_settings()
    if fast is not None and start_from is None:
        raise TaggingError("fast training applies to fine-tuning an existing tagger only")
    if options.classifier not in CLASSIFIERS:
        raise TaggingError(f"unknown classifier {options.classifier!r} ({', '.join(CLASSIFIERS)})")
    if options.cross_validate and options.classifier == "bagging":
        raise TaggingError("--cross-validate: for dense and random-forest taggers (a bagging ensemble "
                           "already holds out data per member)")
    if options.cv_group_by not in ("larva", "file"):
        raise TaggingError(f"--group-by {options.cv_group_by!r}: choose larva or file")
    classifier_state = None
    if start_from is not None:
        base = load_tagger(start_from)
        if base.metadata.get("kind") in ("maggotuba-randomforest", "maggotuba-bagging") or \
                options.classifier != "dense":
            raise TaggingError(f"{start_from.name}: only dense taggers can be fine-tuned; "
                               "train a new random-forest tagger instead")
        labels = list(options.labels or base.config.labels)
        if labels != base.config.labels:
            raise TaggingError(f"finetune keeps the labels of {start_from.name} "
                               f"({', '.join(base.config.labels)}); got {', '.join(labels)}")
        encoder_state = base.model.encoder.state_dict()
        classifier_state = base.model.classifier.state_dict()
        model_config, spec, layers = base.model_config, base.spec, base.config.layers
    else:
        pretrained = pretrained or resolve_pretrained(None)
        encoder_state, model_config = load_encoder(pretrained)
        labels = list(options.labels or _dataset_labels(sources) or discover_labels(sources))
        interval = options.frame_interval or _pretrained_interval(pretrained)
        if options.classifier == "bagging":
            return _train_bagging(sources, output_dir, options, labels, pretrained, model_config, interval,
                                  progress, reader)
        spec = WindowSpec(len_traj=model_config.len_traj, frame_interval=interval)
        layers = options.layers
    if options.window_length is not None and options.window_length != spec.len_traj:
        raise TaggingError(f"--window-length {options.window_length} differs from the encoder's "
                           f"{spec.len_traj} points; pretrain an encoder with that window length")
    dataset = _reuse_dataset(sources, labels, spec)
    reused = None if dataset is None else str(sources[0])
    if dataset is None:
        dataset = build_dataset(list(sources), labels, replace(spec, len_pred=0),
                                balancing=options.balancing, sample_size=options.sample_size,
                                include_all=options.include_all, class_weights=options.class_weights,
                                train_on=options.train_on, seed=options.seed, reader=reader)
    if options.write_dataset is not None:
        write_hdf5(dataset, options.write_dataset)
    train, validation = split(dataset, options.validation_fraction, seed=options.seed)
    if validation.n_samples == 0:
        raise TaggingError("too few larvae to hold some out for validation")
    iterations = fast.iterations if fast is not None else tuple(options.iterations)
    config = TaggerConfig(labels=labels, layers=layers, iterations=iterations,
                          seed=options.seed, balancing=options.balancing,
                          class_weights=[float(w) for w in dataset.class_weights])
    from .model_card import class_frequencies

    extra = {"training_data": {"sources": [str(s) for s in dataset.sources],
                               "samples": int(dataset.n_samples),
                               "class_counts": np.asarray(dataset.counts_after).tolist(),
                               "dataset": reused},
             "pretrained_model": str(start_from or pretrained),
             **class_frequencies(labels, dataset.counts_after, dataset.class_weights)}
    def fit(train_part, validation_part, report):
        """One tagger trained on ``train_part`` (best on ``validation_part``): (model, log)."""
        if options.classifier == "randomforest":
            from .models.randomforest import train_random_forest

            return train_random_forest(_training_data(train_part), _training_data(validation_part),
                                       encoder_state, model_config, spec, config, dataset.class_weights,
                                       n_estimators=options.n_estimators, max_depth=options.max_depth,
                                       seed=options.seed, device=options.device, progress=report)
        return train_tagger(_training_data(train_part), _training_data(validation_part), encoder_state,
                            model_config, spec, config, dataset.class_weights, device=options.device,
                            progress=report, classifier_state=classifier_state)

    cross_validation = None
    if options.cross_validate:
        from .cross_validation import cross_validate, save_metrics

        cross_validation = cross_validate(
            dataset, options.cross_validate, options.cv_group_by, seed=options.seed,
            validation_fraction=options.validation_fraction, fit=lambda a, b, r: fit(a, b, r)[0],
            predict=lambda model, windows: predict_classes(model, windows, options.device), progress=progress)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_metrics(cross_validation, output_dir)
    if fast is None:
        model, log = fit(train, validation, progress)
    if options.classifier == "randomforest":
        from .models.randomforest import save_random_forest

        save_random_forest(model, config, model_config, spec, output_dir, log, extra=extra)
    elif fast is not None:
        from .finetune import fast_train_tagger

        model, log = fast_train_tagger(_training_data(train), _training_data(validation), encoder_state,
                                       classifier_state, model_config, config, dataset.class_weights,
                                       settings=fast, device=options.device, progress=progress)
        extra["finetune"] = {"mode": "fast", "settings": log["settings"], "best": log["best"],
                             "seconds": round(log["seconds"], 2)}
        if "calibration" in log:
            extra["calibration"] = log["calibration"]
        save_tagger(model.cpu(), config, model_config, spec, output_dir, log, extra=extra)
    else:
        save_tagger(model.cpu(), config, model_config, spec, output_dir, log, extra=extra)
    validation_metrics = validation_scores(validation.labels, predict_classes(model, validation.windows,
                                                                              options.device), labels)
    _write_card(output_dir, f"Fine-tuned from `{start_from}`" if start_from is not None
                else "Trained by `tagging-backend train`", training_summary(dataset), validation_metrics)
    return {"output": output_dir, "samples": int(dataset.n_samples), "best_macro_f1": log["best_macro_f1"],
            "labels": labels, "validation": validation_metrics, "cross_validation": cross_validation}


def final_instance_name(directory: Path) -> str:
    """The instance's name, also while it is built in its staging directory
    ``.NAME.partial-XXXX`` (:func:`taggingbackends.project.new_model_instance`)."""
    name = directory.name
    if name.startswith(".") and ".partial-" in name:
        return name[1:name.rindex(".partial-")]
    return name


def _write_card(output_dir: Path, how: str, training: dict | None, validation: dict | None) -> None:
    """model_card.md beside the weights, with cross-validation metrics if already there."""
    from .model_card import write_card

    metrics_path = output_dir / "metrics.json"
    cross_validation = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    write_card(output_dir, name=final_instance_name(output_dir), how=how, training=training, validation=validation,
               cross_validation=cross_validation)


CLASSIFIERS = ("dense", "randomforest", "bagging")


def _train_bagging(sources, output_dir: Path, options: TrainOptions, labels: list[str], pretrained: Path,
                   model_config, interval: float, progress, reader: dict | None = None) -> dict:
    """The 20221228 design: members on several window lengths, majority vote
    (:mod:`maggotuba.models.bagging`). Lengths equal to the pretrained encoder's
    start from it; the others get randomly initialised encoders."""
    from .model_card import class_frequencies
    from .models.bagging import BaggingConfig, save_bagging, train_bagging
    from .models.tagger import TaggerConfig

    if any(_is_dataset_file(Path(s)) for s in sources):
        raise TaggingError("a bagging tagger builds one dataset per window length: give label files, "
                           "not a larva_dataset_*.hdf5")
    lengths = tuple(options.bag_window_lengths or (model_config.len_traj,))
    if model_config.len_traj not in lengths:
        raise TaggingError(f"none of the bagging window lengths ({', '.join(map(str, lengths))} points) "
                           f"fits the pretrained encoder ({model_config.len_traj} points); include "
                           f"{model_config.len_traj} or pretrain an encoder for one of them")
    tagger = TaggerConfig(labels=labels, layers=options.layers, iterations=tuple(options.iterations),
                          seed=options.seed, balancing=options.balancing,
                          class_weights=None if options.class_weights is None else list(options.class_weights))
    try:
        config = BaggingConfig(tagger=tagger, window_lengths=lengths, members_per_length=options.bag_members,
                               frame_interval=interval, latent=model_config.dim_latent,
                               validation_fraction=options.validation_fraction)
    except ValueError as err:
        raise TaggingError(f"bagging: {err}") from None
    ensemble, log = train_bagging(list(sources), labels, config,
                                  pretrained={model_config.len_traj: pretrained},
                                  balancing=options.balancing, sample_size=options.sample_size,
                                  include_all=options.include_all, class_weights=options.class_weights,
                                  device=options.device, write_dataset=options.write_dataset, progress=progress,
                                  reader=reader)
    first = str(lengths[0])
    frequencies = class_frequencies(labels, log["datasets"][first]["class_counts"],
                                    ensemble.class_weights.get(lengths[0]))
    save_bagging(ensemble, output_dir, log, extra={"pretrained_model": str(pretrained), **frequencies})
    _write_card(output_dir, f"Trained by `tagging-backend train` (bagging; training frequencies of the "
                f"{first}-point dataset)", None, {"macro_f1": float(log["best_macro_f1"])})
    samples = sum(entry["samples"] for entry in log["datasets"].values())
    return {"output": output_dir, "samples": int(samples), "best_macro_f1": log["best_macro_f1"],
            "labels": labels}


def _is_dataset_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".hdf5", ".h5")


def _dataset_labels(sources: Sequence[Path]) -> list[str] | None:
    """Labels of a larva_dataset_*.hdf5 given as the only source."""
    if len(sources) == 1 and _is_dataset_file(Path(sources[0])):
        from .dataset import read_hdf5

        return list(read_hdf5(sources[0]).label_names)
    return None


def _reuse_dataset(sources: Sequence[Path], labels: list[str], spec):
    """A larva_dataset_*.hdf5 given as training data (built once, reused), checked
    against the labels and the encoder's window; None when sources are label files."""
    files = [Path(s) for s in sources if _is_dataset_file(Path(s))]
    if not files:
        return None
    if len(sources) != 1:
        raise TaggingError("give either one larva_dataset_*.hdf5 file or label files, not both")
    from .dataset import read_hdf5

    dataset = read_hdf5(files[0])
    if list(dataset.label_names) != labels:
        raise TaggingError(f"{files[0]}: its labels ({', '.join(dataset.label_names)}) differ from "
                           f"{', '.join(labels)}")
    if (dataset.spec.len_traj, dataset.spec.len_pred) != (spec.len_traj, 0) or \
            abs(dataset.spec.frame_interval - spec.frame_interval) > 1e-9:
        raise TaggingError(f"{files[0]}: windows of {dataset.spec.len_traj} points every "
                           f"{dataset.spec.frame_interval} s do not fit the encoder "
                           f"({spec.len_traj} points every {spec.frame_interval} s)")
    return dataset


def _training_data(part):
    from .models.tagger import TrainingData

    return TrainingData(part.windows, part.labels, part.groups)


def _pretrained_interval(directory: Path) -> float:
    config = directory / "autoencoder_config.json"
    if config.is_file():
        window = json.loads(config.read_text()).get("window", {})
        return float(window.get("frame_interval", 0.1))
    return 0.1


# ----------------------------------------------------------------- pretrain
def pretrain_instance(sources: Sequence[Path], output_dir: Path, *, window_length: int = 20,
                      frame_interval: float = 0.1, latent: int = 25, iterations: int = 1000,
                      windows: int = 100_000, seed: int = 100, device: str = "cpu",
                      progress: Callable[[int, float, float | None], None] | None = None,
                      reader: dict | None = None) -> dict:
    """Self-supervised pretraining on tracking files (no labels needed); ``reader``:
    options for :func:`taggingbackends.formats.load` (the command line's reader flags)."""
    from taggingbackends.formats import load

    from .features import WindowSpec
    from .models.autoencoder import MaggotUBAConfig
    from .pretrain import PretrainConfig, pretrain, sample_windows, split_by_larva

    runs = [load(path, **(reader or {})) for path in sources]
    spec = WindowSpec(len_traj=window_length, frame_interval=frame_interval, len_pred=window_length)
    sampled = sample_windows(runs, spec, windows, seed=seed)
    if len(sampled) < 10:
        raise TaggingError(f"only {len(sampled)} full windows in the data: tracks too short "
                           f"for {window_length} points at {frame_interval} s")
    train, validation = split_by_larva(sampled, 0.1, seed=seed)
    config = MaggotUBAConfig(len_traj=window_length, len_pred=window_length, dim_latent=latent)
    log = pretrain(train, validation, config, spec, output_dir,
                   PretrainConfig(iterations=iterations, seed=seed), progress=progress, device=device)
    return {"output": output_dir, "windows": len(sampled), "best_loss": log["best_validation_loss"]}


# -------------------------------------------------------------------- adapt
@dataclass
class AdaptOptions:
    """What ``tagging-backend adapt`` asks (see :mod:`maggotuba.adapt` for the method)."""

    seed: int = 0
    device: str = "cpu"
    self_train: bool = True                # retrain the head on confident pseudo-labels
    confidence: float = 0.9                # corrected top probability a pseudo-label needs
    prior_floor: float = 0.001             # no class's estimated base rate below this


def adapt_instance(sources: Sequence[Path], output_dir: Path, options: AdaptOptions, *, start_from: Path,
                   source_name: str | None = None, instance_name: str | None = None, reader: dict | None = None,
                   progress: Callable[[str, int, float], None] | None = None) -> dict:
    """Adapt the tagger in ``start_from`` to unlabelled tracking files ``sources`` (class
    base rates by EM, optionally a self-trained head) and save it in ``output_dir``."""
    from .adapt import AdaptSettings, adapt_instance as adapt

    try:
        settings = AdaptSettings(seed=options.seed, self_train=options.self_train, confidence=options.confidence,
                                 prior_floor=options.prior_floor)
    except ValueError as err:
        raise TaggingError(f"adapt: {err}") from None
    return adapt(sources, output_dir, settings, start_from=start_from, device=options.device, reader=reader,
                 source_name=source_name, instance_name=instance_name, progress=progress)
