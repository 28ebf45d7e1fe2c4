"""``train``, ``finetune`` and ``pretrain``: new taggers from labelled data, further
training of an existing one, and self-supervised pretraining of the encoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import OutputExistsError, TaggingError
from .app import app, say
from .options import (Framerate, InputFormat, Pixelsize, accepts_keyword, accepts_progress, csv_list, int_list,
                      reader_options, stage_progress, tracking_inputs)
from .predict import run_project_scripts

def _parse_iterations(text: str) -> tuple:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter("N or N1,N2 (integers)", param_hint="--iterations") from None
    if len(values) == 1:
        values = [values[0], values[0]]
    if len(values) != 2 or min(values) < 0:
        raise typer.BadParameter("N or N1,N2", param_hint="--iterations")
    return tuple(values)


@dataclasses.dataclass
class _Training:
    """What ``train`` and ``finetune`` were asked, before the mode is known."""

    data: List[str]
    name: Optional[str]
    start_from: Optional[str]
    backend: Optional[str]
    models_dir: Path
    sandbox: Optional[str]
    make_dataset: bool
    build_features: bool
    trxmat_only: bool
    options: dict          # fields of the backend's TrainOptions
    pretrained: Optional[str] = None
    reader: Optional[dict] = None  # formats.load options from the reader flags


def _split_name(data: List[str], name: Optional[str]) -> tuple[List[str], str]:
    """``train DATA_DIR NAME`` (as ``larvatagger.jl train``) or ``train DATA... -m NAME``."""
    data = list(data or [])
    if name is None and len(data) >= 2 and not Path(data[-1]).exists():
        name = data.pop()
    if not name:
        raise typer.BadParameter("name the new model instance: --model-instance NAME (or DATA_DIR NAME)",
                                 param_hint="--model-instance")
    return data, name


def _train_common(request: _Training) -> None:
    """Direct mode (data given), or backend project mode (data in data/raw/<token>):
    with the project's own scripts if it has them, else with a backend plug-in."""
    from ..project import new_model_instance

    options = request.options
    if options["balancing"] not in ("auto", "maggotuba", "none"):
        raise typer.BadParameter("auto, maggotuba or none", param_hint="--balancing-strategy")
    if request.data:
        sources = _training_sources([Path(d) for d in request.data], request.trxmat_only)
        name = request.name
        output_dir = Path(name) if ("/" in name or name.startswith(".")) else request.models_dir / name
        with new_model_instance(output_dir) as work:
            result = _train_with_backend(request, sources, work, project=None)
        _report_training(result, output_dir)
        return
    from ..explorer import BackendExplorer

    explorer = BackendExplorer(Path.cwd(), model_instance=request.name, sandbox=request.sandbox,
                               pretrained_model_instance=request.pretrained)
    raw = explorer.raw_data_dir(create=False)
    if not raw.is_dir() or not any(raw.iterdir()):
        raise TaggingError(f"{raw}: no training data; put label files and their tracking files there "
                           "(or give a data directory as argument)")
    output_dir = explorer.model_dir()
    step = "finetune_model" if request.start_from else "train_model"
    with explorer.lock():
        if request.backend is None and explorer.script(step) is not None:
            if output_dir.exists() and any(output_dir.iterdir()):
                raise OutputExistsError(f"{output_dir}: model instance already exists; choose another name")
            # our own additions stay out of a project script's arguments (upstream scripts refuse them)
            script_options = {k: v for k, v in options.items()
                              if k not in ("write_dataset", "train_on", "fast", "budget_seconds")}
            if request.start_from:
                script_options["original_model_instance"] = request.start_from
            run_project_scripts(explorer, step, make_dataset=request.make_dataset,
                                 build_features=request.build_features,
                                 options={**script_options, "trxmat_only": request.trxmat_only})
            say(f"{explorer.script(step).name}: wrote {output_dir}")
            return
        with new_model_instance(output_dir) as work:
            interim = explorer.interim_data_dir()
            saved = sorted(interim.glob("larva_dataset_*.hdf5"))
            if not request.make_dataset and saved:
                sources = [saved[-1]]  # --skip-make-dataset: the dataset made by an earlier run
            else:
                sources = _training_sources([raw], request.trxmat_only)
                if options.get("write_dataset") is None and not request.start_from:
                    options = {**options, "write_dataset": interim}
            result = _train_with_backend(dataclasses.replace(request, options=options), sources, work,
                                         project=explorer.project_dir)
    _report_training(result, output_dir)


def _training_sources(paths: List[Path], trxmat_only: bool) -> List[Path]:
    for path in paths:
        if not path.exists():
            raise TaggingError(f"{path}: no such file or directory")
    if not trxmat_only:
        return paths
    found = [p for path in paths for p in (sorted(path.rglob("*.mat")) if path.is_dir() else [path])
             if p.suffix.lower() == ".mat"]
    if not found:
        raise TaggingError("--trxmat-only: no trx.mat files in " + ", ".join(map(str, paths)))
    return found


def _train_with_backend(request: _Training, sources: List[Path], output_dir: Path,
                        project: Optional[Path]) -> dict:
    from ..backends import get_backend

    module = get_backend(request.backend)
    resolve = (lambda f, n: f(n, project)) if project else (lambda f, n: f(n))
    base = resolve(module.resolve_model, request.start_from) if request.start_from else None
    encoder = None if base else resolve(module.resolve_pretrained, request.pretrained)
    options = module.TrainOptions(**request.options)
    extra = {"reader": request.reader} if request.reader and accepts_keyword(module.train_instance, "reader") \
        else {}
    if request.reader and not extra:
        raise TaggingError(f"backend {request.backend}: takes no reader options (--format, --framerate, "
                           "--pixelsize)")
    if not accepts_progress(module.train_instance):
        return module.train_instance(sources, output_dir, options, pretrained=encoder, start_from=base, **extra)
    totals = getattr(options, "stage_totals", None)
    frozen, tuned = totals() if totals is not None else request.options["iterations"]
    with stage_progress({"frozen encoder": frozen, "fine-tuning": tuned}) as report:
        return module.train_instance(sources, output_dir, options, pretrained=encoder, start_from=base,
                                     progress=report, **extra)


def _report_training(result: dict, output_dir: Path) -> None:
    say(f"wrote {output_dir} ({', '.join(result['labels'])}; {result['samples']} training windows; "
        f"best validation macro-F1 {result['best_macro_f1']:.3f})")
    cv = result.get("cross_validation")
    if cv:
        say(f"cross-validation, {cv['folds']} folds by {cv['group_by']}: macro-F1 {cv['macro_f1']['mean']:.3f} ± "
            f"{cv['macro_f1']['sd']:.3f}; per class F1: " + ", ".join(
                f"{name} {s['f1']['mean']:.2f} ± {s['f1']['sd']:.2f}" for name, s in cv["per_class"].items()
                if s["f1"]["mean"] is not None) + f" (in {output_dir / 'metrics.json'})")


def _train_options(*, labels, balancing, class_weights, sample_size, include_all, iterations, layers, seed,
                   window_length, frame_interval, device, write_dataset, **classifier) -> dict:
    weights = None
    if class_weights:
        try:
            weights = [float(w) for w in csv_list(class_weights)]
        except ValueError:
            raise typer.BadParameter("comma-separated numbers", param_hint="--class-weights") from None
    return dict(labels=csv_list(labels), balancing=balancing, class_weights=weights, sample_size=sample_size,
                include_all=include_all or None, iterations=_parse_iterations(iterations), layers=layers,
                seed=seed, window_length=window_length, frame_interval=frame_interval, device=device,
                write_dataset=write_dataset, **classifier)


_TRAIN_OPTIONS = dict(
    labels=typer.Option(None, "--labels", help="Comma-separated labels or selectors (¬label for one-vs-rest)."),
    balancing=typer.Option("auto", "--balancing-strategy", help="auto, maggotuba or none."),
    class_weights=typer.Option(None, "--class-weights", help="Comma-separated, one per label."),
    sample_size=typer.Option(None, "--sample-size", help="At most this many training windows."),
    include_all=typer.Option("edited", "--include-all", help="Always keep steps carrying this label."),
    iterations=typer.Option("1000,1000", "--iterations", help="N1,N2: frozen-encoder then fine-tuning iterations."),
    layers=typer.Option(1, "--layers", help="Dense layers of the classifier."),
    seed=typer.Option(0, "--seed"),
    window_length=typer.Option(None, "--window-length", help="Window points (must match the encoder)."),
    frame_interval=typer.Option(None, "--frame-interval", help="Seconds between window points."),
    device=typer.Option("cpu", "--device"),
    backend=typer.Option(None, "--backend", help="Backend plug-in (default: the project's scripts if any, "
                                                  "else maggotuba)."),
    models_dir=typer.Option(Path("models"), "--models-dir", help="Direct mode: where new model instances go."),
    write_dataset=typer.Option(None, "--write-dataset", help="Also save the larva_dataset_*.hdf5 here."),
    sandbox=typer.Option(None, "--sandbox", help="Backend project mode: read data/raw/SANDBOX."),
    make_dataset=typer.Option(True, "--make-dataset/--skip-make-dataset",
                              help="Backend project mode: build the training dataset (default), or reuse "
                                   "the larva_dataset_*.hdf5 an earlier run left in data/interim/<token>."),
    reuse_h5files=typer.Option(False, "--reuse-h5files", help="Same as --skip-make-dataset."),
    build_features=typer.Option(True, "--build-features/--skip-build-features",
                                help="Backend project mode: run the project's build_features.py, if any."),
    trxmat_only=typer.Option(False, "--trxmat-only",
                             help="Train on the behaviour tags of trx.mat files only (ignore .label files)."),
)


@app.command()
def train(
    data: List[str] = typer.Argument(None, metavar="[DATA_DIR]... [NAME]",
                                     help="Label files or directories of them (default, in a backend "
                                          "project: data/raw/NAME); then, without -m, the new instance's name."),
    name: Optional[str] = typer.Option(None, "--model-instance", "-m", help="Name of the new model instance."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained-model-instance",
                                             help="Pretrained encoder: name or directory (ours or the "
                                                  "original MaggotUBA's); default: shipped default."),
    labels: Optional[str] = _TRAIN_OPTIONS["labels"], balancing: str = _TRAIN_OPTIONS["balancing"],
    class_weights: Optional[str] = _TRAIN_OPTIONS["class_weights"],
    sample_size: Optional[int] = _TRAIN_OPTIONS["sample_size"], include_all: str = _TRAIN_OPTIONS["include_all"],
    iterations: str = _TRAIN_OPTIONS["iterations"], layers: int = _TRAIN_OPTIONS["layers"],
    seed: int = _TRAIN_OPTIONS["seed"], window_length: Optional[int] = _TRAIN_OPTIONS["window_length"],
    frame_interval: Optional[float] = _TRAIN_OPTIONS["frame_interval"], device: str = _TRAIN_OPTIONS["device"],
    backend: Optional[str] = _TRAIN_OPTIONS["backend"], models_dir: Path = _TRAIN_OPTIONS["models_dir"],
    write_dataset: Optional[Path] = _TRAIN_OPTIONS["write_dataset"],
    sandbox: Optional[str] = _TRAIN_OPTIONS["sandbox"], make_dataset: bool = _TRAIN_OPTIONS["make_dataset"],
    reuse_h5files: bool = _TRAIN_OPTIONS["reuse_h5files"], build_features: bool = _TRAIN_OPTIONS["build_features"],
    trxmat_only: bool = _TRAIN_OPTIONS["trxmat_only"],
    classifier: str = typer.Option("dense", "--classifier",
                                   help="dense (encoder + dense layers, fine-tuned), randomforest "
                                        "(frozen encoder + random forest, the 20220418 design) or bagging "
                                        "(an ensemble of dense taggers on several window lengths, majority "
                                        "vote, the 20221228 design)."),
    n_estimators: int = typer.Option(100, "--n-estimators", min=1, help="Trees (random forest)."),
    max_depth: Optional[int] = typer.Option(None, "--max-depth", min=1, help="Tree depth (random forest)."),
    bag_window_lengths: Optional[str] = typer.Option(
        None, "--bag-window-lengths", help="Bagging: comma-separated window lengths in points (default: the "
                                           "pretrained encoder's; upstream's 20221228 used 15,30)."),
    bag_size: int = typer.Option(25, "--bag-size", min=1, help="Bagging: members per window length."),
    cross_validate: int = typer.Option(0, "--cross-validate", min=0,
                                       help="K: first run K-fold cross-validation (folds of whole larvae or "
                                            "files), saved as metrics.json and in the model card."),
    group_by: str = typer.Option("larva", "--group-by", help="Cross-validation folds of whole larvae "
                                                             "(larva) or whole files (file)."),
    input_format: InputFormat = "auto",
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
) -> None:
    """Train a new tagger on labelled data (label files with their tracking files).

    Examples: tagging-backend train demo --model-instance mytagger --iterations 200,200
    (direct), tagging-backend train demo mytagger (as larvatagger.jl train), or, in a backend
    project with the data in data/raw/mytagger: tagging-backend train --model-instance mytagger;
    with 5-fold cross-validation by larva: tagging-backend train demo -m mytagger --cross-validate 5
    """
    data, name = _split_name(data, name)
    options = _train_options(labels=labels, balancing=balancing, class_weights=class_weights,
                             sample_size=sample_size, include_all=include_all, iterations=iterations,
                             layers=layers, seed=seed, window_length=window_length, frame_interval=frame_interval,
                             device=device, write_dataset=write_dataset, classifier=classifier,
                             n_estimators=n_estimators, max_depth=max_depth,
                             bag_window_lengths=int_list(bag_window_lengths, "--bag-window-lengths"),
                             bag_members=bag_size)
    if cross_validate == 1:
        raise typer.BadParameter("at least 2 folds (0: no cross-validation)", param_hint="--cross-validate")
    if group_by not in ("larva", "file"):
        raise typer.BadParameter("larva or file", param_hint="--group-by")
    if cross_validate:
        options.update(cross_validate=cross_validate, cv_group_by=group_by)
    _train_common(_Training(data=data, name=name, start_from=None, backend=backend, models_dir=models_dir,
                            sandbox=sandbox, make_dataset=make_dataset and not reuse_h5files,
                            build_features=build_features, trxmat_only=trxmat_only, options=options,
                            pretrained=pretrained,
                            reader=reader_options(framerate, pixelsize, input_format=input_format)))


@app.command()
def finetune(
    data: List[str] = typer.Argument(None, metavar="[DATA_DIR]...",
                                     help="Label files or directories of them (default, in a backend "
                                          "project: data/raw/<output instance>)."),
    model_instance: Optional[str] = typer.Option(None, "--model-instance", "-m",
                                                 help="Existing tagger to start from (default: the shipped "
                                                      "default); the NEW instance when --original-model-instance "
                                                      "is given (upstream form)."),
    output_instance: Optional[str] = typer.Option(None, "--output-instance", "-O",
                                                  help="Name of the new model instance."),
    original: Optional[str] = typer.Option(None, "--original-model-instance",
                                           help="Upstream form: the tagger to start from, with --model-instance "
                                                "naming the new one."),
    labels: Optional[str] = _TRAIN_OPTIONS["labels"], balancing: str = _TRAIN_OPTIONS["balancing"],
    class_weights: Optional[str] = _TRAIN_OPTIONS["class_weights"],
    sample_size: Optional[int] = _TRAIN_OPTIONS["sample_size"], include_all: str = _TRAIN_OPTIONS["include_all"],
    iterations: Optional[str] = typer.Option(
        None, "--iterations", help="N1,N2: today's two-phase training with exactly these iterations "
                                   "(frozen encoder, then fine-tuning); implies --full."),
    fast: Optional[bool] = typer.Option(
        None, "--fast/--full", help="fast (default): the classifier retrained on cached encoder outputs, "
                                    "best on held-out larvae (seconds on 2 cores); "
                                    "full: today's 1000,1000-iteration training (several minutes)."),
    train_on: str = typer.Option("auto", "--train-on",
                                 help="auto (default): only the steps carrying the --include-all label "
                                      "(edited) when any has it, else all; edited; or all (upstream)."),
    seed: int = _TRAIN_OPTIONS["seed"],
    device: str = _TRAIN_OPTIONS["device"], backend: Optional[str] = _TRAIN_OPTIONS["backend"],
    models_dir: Path = _TRAIN_OPTIONS["models_dir"], sandbox: Optional[str] = _TRAIN_OPTIONS["sandbox"],
    build_features: bool = _TRAIN_OPTIONS["build_features"], trxmat_only: bool = _TRAIN_OPTIONS["trxmat_only"],
    input_format: InputFormat = "auto",
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
) -> None:
    """Further train an existing tagger on new labelled data; saves a NEW model instance.

    By default fast (--fast), and on the edited steps only when some are (--train-on auto).
    Examples: tagging-backend finetune demo --model-instance default --output-instance default-mylab,
    or, in a backend project with the data in data/raw/mylab (upstream form):
    tagging-backend finetune --original-model-instance default --model-instance mylab
    """
    start_from, name = _finetune_names(model_instance, output_instance, original)
    if fast and iterations is not None:
        raise typer.BadParameter("--iterations sets today's full training; drop --fast (or --iterations)",
                                 param_hint="--iterations")
    use_fast = fast if fast is not None else iterations is None
    if train_on not in ("auto", "edited", "all"):
        raise typer.BadParameter("auto, edited or all", param_hint="--train-on")
    options = _train_options(labels=labels, balancing=balancing, class_weights=class_weights,
                             sample_size=sample_size, include_all=include_all,
                             iterations=iterations or "1000,1000", layers=1, seed=seed, window_length=None,
                             frame_interval=None, device=device, write_dataset=None, train_on=train_on,
                             fast=use_fast)
    _train_common(_Training(data=list(data or []), name=name, start_from=start_from, backend=backend,
                            models_dir=models_dir, sandbox=sandbox, make_dataset=True,
                            build_features=build_features, trxmat_only=trxmat_only, options=options,
                            reader=reader_options(framerate, pixelsize, input_format=input_format)))


def _finetune_names(model_instance: Optional[str], output_instance: Optional[str],
                    original: Optional[str]) -> tuple:
    """(tagger to start from, new instance) from either naming form."""
    if original is not None:
        if model_instance and output_instance:
            raise typer.BadParameter("with --original-model-instance, name the new instance once "
                                     "(--model-instance or --output-instance)", param_hint="--output-instance")
        name = output_instance or model_instance
        if not name:
            raise typer.BadParameter("name the new instance", param_hint="--model-instance")
        return original, name
    if not output_instance:
        raise typer.BadParameter("name the new instance (or use --original-model-instance OLD "
                                 "--model-instance NEW)", param_hint="--output-instance")
    return model_instance or "default", output_instance


@app.command()
def pretrain(
    data: List[Path] = typer.Argument(..., metavar="TRACKING...", help="Tracking files (no labels needed)."),
    name: str = typer.Option(..., "--model-instance", "-m", help="Name (or directory) of the new encoder."),
    window_length: int = typer.Option(20, "--window-length", min=2, help="Points per window."),
    frame_interval: float = typer.Option(0.1, "--frame-interval", help="Seconds between points."),
    latent: int = typer.Option(25, "--latent-dim", min=1, help="Latent space size."),
    iterations: int = typer.Option(1000, "--iterations", min=1),
    windows: int = typer.Option(100_000, "--windows", min=10, help="Windows sampled for training."),
    seed: int = typer.Option(100, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    backend: Optional[str] = typer.Option(None, "--backend"),
    models_dir: Path = typer.Option(Path("pretrained_models"), "--models-dir"),
    input_format: InputFormat = "auto",
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
) -> None:
    """Self-supervised pretraining of the MaggotUBA autoencoder on tracking data.

    Resumes from its checkpoint if interrupted. Example:
    tagging-backend pretrain demo/trx.mat --model-instance mine --iterations 200
    """
    from ..backends import get_backend

    module = get_backend(backend)
    output_dir = Path(name) if ("/" in name or name.startswith(".")) else models_dir / name
    found = tracking_inputs(list(data))
    arguments = dict(window_length=window_length, frame_interval=frame_interval, latent=latent,
                     iterations=iterations, windows=windows, seed=seed, device=device)
    reader = reader_options(framerate, pixelsize, input_format=input_format)
    if reader:
        if not accepts_keyword(module.pretrain_instance, "reader"):
            raise TaggingError(f"backend {backend}: takes no reader options (--format, --framerate, "
                               "--pixelsize)")
        arguments["reader"] = reader
    with stage_progress({"pretraining": iterations}) as report:
        if accepts_progress(module.pretrain_instance):
            arguments["progress"] = lambda done, loss, validation_loss: report("pretraining", done, loss)
        result = module.pretrain_instance(found, output_dir, **arguments)
    say(f"wrote {result['output']} ({result['windows']} windows; best validation MSE {result['best_loss']:.5f})")
