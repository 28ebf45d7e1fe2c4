"""``adapt``: a new model instance adapted to a user's unlabelled recordings (their class
base rates, and a classifier head self-trained on confident predictions), built by the
backend plug-in's ``adapt_instance``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import TaggingError
from .app import app, say
from .options import (Framerate, InputFormat, Overwrite, Pixelsize, accepts_keyword, accepts_progress, reader_options,
                      stage_progress, tracking_inputs)


@app.command()
def adapt(
    inputs: List[Path] = typer.Argument(..., metavar="TRACKING...",
                                        help="The user's tracking files, directories or .txt lists of them "
                                             "(no labels needed)."),
    model_instance: str = typer.Option("default", "--model-instance", "-m",
                                       help="Tagger to adapt (name or directory; default: the shipped default)."),
    output_instance: str = typer.Option(..., "--output-instance", "-O",
                                        help="Name (or directory) of the new, adapted model instance."),
    self_train: bool = typer.Option(True, "--self-train/--priors-only",
                                    help="Also retrain the classifier head on confident predictions "
                                         "(default), or only estimate the class base rates."),
    confidence: float = typer.Option(0.9, "--confidence", min=0.5, max=0.999,
                                     help="Self-training: prior-corrected probability a step needs to "
                                          "serve as a pseudo-label."),
    prior_floor: float = typer.Option(0.001, "--prior-floor", min=0.0, max=0.05,
                                      help="Lowest base rate any class may be given."),
    seed: int = typer.Option(0, "--seed", help="Seed (same seed, same inputs: same weights)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (embedding the windows)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Backend plug-in (default: maggotuba)."),
    models_dir: Path = typer.Option(Path("models"), "--models-dir", help="Where new model instances go."),
    overwrite: Overwrite = False,
    input_format: InputFormat = "auto",
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
) -> None:
    """Adapt a tagger to your own recordings without labels; saves a NEW model instance.

    Estimates the behaviours' base rates in your files (EM on the tagger's probabilities) and
    retrains the classifier head on its confident predictions; `predict -m NEW --priors adapted`
    uses the estimated base rates as priors (the default stays natural). Experimental: on the benchmarks of
    docs/maggotuba.md it did not beat the source tagger; check its output before relying
    on it (fine-tuning on a few corrections is the measured way to adapt). Example:
    tagging-backend adapt dish01/ -m default -O mylab && tagging-backend predict dish01/ -m mylab
    """
    from ..backends import get_backend
    from ..project import new_model_instance

    module = get_backend(backend)
    if not hasattr(module, "adapt_instance"):
        raise TaggingError(f"backend {backend or 'maggotuba'}: has no adapt (unsupervised adaptation)")
    found = tracking_inputs(list(inputs))
    source = module.resolve_model(model_instance)
    output_dir = Path(output_instance) if ("/" in output_instance or output_instance.startswith(".")) \
        else models_dir / output_instance
    if output_dir.resolve() == Path(source).resolve():
        raise TaggingError(f"{output_dir}: is the instance being adapted; name a new one with -O")
    options = module.AdaptOptions(seed=seed, device=device, self_train=self_train, confidence=confidence,
                                  prior_floor=prior_floor)
    arguments: dict = dict(start_from=source, source_name=model_instance, instance_name=output_dir.name)
    reader = reader_options(framerate, pixelsize, input_format=input_format)
    if reader:
        if not accepts_keyword(module.adapt_instance, "reader"):
            raise TaggingError(f"backend {backend}: takes no reader options (--format, --framerate, --pixelsize)")
        arguments["reader"] = reader
    with new_model_instance(output_dir, overwrite=overwrite) as work:
        with stage_progress({"frozen encoder": 300}) as report:
            if accepts_progress(module.adapt_instance):
                arguments["progress"] = report
            result = module.adapt_instance(found, work, options, **arguments)
    _report(result, output_dir)


def _report(result: dict, output_dir: Path) -> None:
    priors = result["priors"]
    say(f"wrote {output_dir} (adapted from {len(result.get('labels', priors))} classes on "
        f"{result['larvae']} larvae, {result['steps']:,} steps, in {result['seconds']:.0f} s)")
    say("estimated base rates: " + ", ".join(f"{n} {100 * v:.1f} %" for n, v in priors.items()))
    kept = result.get("pseudo_labels")
    training = result.get("self_training") or {}
    if "skipped" in training:
        say(f"self-training skipped: {training['skipped']}")
    elif kept:
        agreement = training.get("agreement_macro_f1", {})
        say("pseudo-labels: " + ", ".join(f"{n} {int(v)}" for n, v in kept.items())
            + (f"; held-out agreement macro-F1 {agreement['before']:.3f} -> {agreement['best']:.3f}"
               if agreement else ""))
    name = output_dir.name if output_dir.parent == Path("models") else str(output_dir)
    say(f"use it: tagging-backend predict FILES -m {name}")
