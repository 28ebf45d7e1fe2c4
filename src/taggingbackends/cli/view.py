"""``view`` (the web app: look, correct, save, retrain) and ``retrain`` (the same fine-tune on
the saved edits of a folder, from the command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import TaggingError
from .app import app, say
from .options import Framerate, Pixelsize, reader_options, stage_progress
from .train import _parse_iterations


def _iterations(text: Optional[str]) -> Optional[tuple]:
    """N1,N2 as given; None (not given): the backend's fast fine-tune."""
    return tuple(_parse_iterations(text)) if text else None


@app.command()
def view(
    path: Path = typer.Argument(..., metavar="TRACKING_OR_LABEL",
                                help="A tracking file (labels: --labels, else predicted.label beside it) "
                                     "or a label file (tracking: its dependency)."),
    labels: Optional[Path] = typer.Option(None, "--labels", "-l", help="Label file to show and edit."),
    port: int = typer.Option(0, "--port", "-p", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL only (for an SSH tunnel)."),
    model_instance: Optional[str] = typer.Option(None, "--model-instance", "-m",
                                                 help="Tagger to fine-tune on Retrain (default: the one "
                                                      "that made the prediction, else the shipped default)."),
    iterations: Optional[str] = typer.Option(None, "--retrain-iterations",
                                             help="N1,N2 fine-tuning iterations for Retrain (frozen encoder, then "
                                                  "all); default: the fast fine-tune."),
    scope: str = typer.Option("edited", "--retrain-scope",
                              help="edited: learn from corrected steps only; all: from every step of the "
                                   "edited files."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Backend plug-in for Retrain."),
    framerate: Framerate = None,
    pixelsize: Pixelsize = None,
) -> None:
    """Look at, correct and retrain the tags of a run in the browser (local web app).

    Example: tagging-backend view demo/predicted.label  (opens the browser on
    http://127.0.0.1:PORT/?token=...; edits are saved to demo/predicted.edited.label)
    """
    import webbrowser

    from ..webapp.retrain import Retrainer
    from ..webapp.server import Server
    from ..webapp.session import Session

    if scope not in ("edited", "all"):
        raise typer.BadParameter("edited or all", param_hint="--retrain-scope")
    session = Session.open(path, labels, **reader_options(framerate, pixelsize, verify=False))
    retrainer = Retrainer(session, model_instance=model_instance, backend=backend,
                          iterations=_iterations(iterations), scope=scope)
    server = Server(session, port=port, retrainer=retrainer)
    for note in session.notes:
        say(f"note: {note}")
    say(f"{session.tracking_path.name}: {session.run.n_tracks} larvae; edits are saved to {session.save_path}")
    # the URL is printed even with --quiet: it is the only way in
    print(f"open {server.url}", flush=True)
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if session.dirty:
        say(f"unsaved edits were discarded (last save: {session.save_path.name})")


@app.command()
def retrain(
    directory: Path = typer.Argument(..., metavar="DATA_DIR", help="Folder whose saved edited label files "
                                                                   "are the training data."),
    model_instance: Optional[str] = typer.Option(None, "--model-instance", "-m",
                                                 help="Tagger to start from (default: the shipped default)."),
    output_instance: Optional[Path] = typer.Option(None, "--output-instance", "-O",
                                                   help="New model directory (default: "
                                                        "DATA_DIR/models/<model>-edits-N)."),
    iterations: Optional[str] = typer.Option(None, "--iterations",
                                             help="N1,N2: frozen-encoder then fine-tuning (default: the fast "
                                                  "fine-tune)."),
    scope: str = typer.Option("edited", "--scope", help="edited (corrected steps only) or all."),
    predict: Optional[Path] = typer.Option(None, "--predict", help="Then tag this tracking file with the new "
                                                                   "model (writes <stem>.retrained.label beside it)."),
    seed: int = typer.Option(0, "--seed"),
    backend: Optional[str] = typer.Option(None, "--backend"),
) -> None:
    """Fine-tune a tagger on every saved correction (steps marked edited) under a folder.

    Example: tagging-backend retrain demo --predict demo/trx.mat
    """
    from ..webapp.retrain import finetune_on_edits, repredict

    if not directory.is_dir():
        raise TaggingError(f"{directory}: no such directory")
    given = _iterations(iterations)
    frozen, tuned = given or (None, None)
    with stage_progress({"frozen encoder": frozen, "fine-tuning": tuned}) as report:
        result = finetune_on_edits(directory, model_instance=model_instance, output_dir=output_instance,
                                   iterations=given, scope=scope, seed=seed, backend=backend,
                                   progress=report)
    say(f"wrote {result['output']} (from {Path(result['base']).name}; {result['edited_steps']} edited steps "
        f"of {result['edited_larvae']} larvae in {len(result['files'])} file(s); best validation macro-F1 "
        f"{result['best_macro_f1']:.3f})")
    if predict is not None:
        out = predict.with_name(predict.name.split(".", 1)[0] + ".retrained.label")
        repredict(Path(result["output"]), predict, out, backend)
        say(f"{predict} → {out}")
