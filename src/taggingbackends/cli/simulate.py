"""``simulate``: synthetic larvae with per-step ground truth, in any tracking format."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from .app import app, larva_count, provenance, say
from .options import refuse_existing

_SIMULATE_SUFFIX = {"trxmat": "trx.mat", "chore": None, "fimtrack": "table.csv", "schleyer": None}


@app.command()
def simulate(
    output_dir: Path = typer.Argument(Path("simulated"), metavar="[OUTPUT_DIR]",
                                      help="Directory to write the tracking file and groundtruth.label into."),
    larvae: int = typer.Option(20, "--larvae", "-n", min=1, help="Number of larvae."),
    duration: float = typer.Option(60.0, "--duration", min=1.0, help="Recording length in seconds."),
    frame_rate: Optional[float] = typer.Option(
        None, "--frame-rate", min=1.0,
        help="Nominal frame rate in Hz (default 11; drawn per recording with --domain wide/heldout)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
    to: str = typer.Option("chore", "--format", "-f", help="Tracking format: chore, trxmat, fimtrack, schleyer."),
    frame_jitter: Optional[float] = typer.Option(
        None, "--frame-jitter", min=0.0,
        help="Relative s.d. of frame intervals (default 0.06; 0 for fimtrack/schleyer, "
             "which store frame numbers)."),
    tail_first: bool = typer.Option(False, "--tail-first", help="Store spines tail to head."),
    balanced: bool = typer.Option(False, "--balanced",
                                  help="Oversample rare behaviours (roughly equal shares)."),
    domain: str = typer.Option(
        "default", "--domain",
        help="Simulator configuration: default (bit-identical to earlier releases), exploration "
             "(calibrated on real free-exploration tracks), wide (randomised rigs, larvae and tracker "
             "artefacts, for training) or heldout (outside wide's ranges, for testing); "
             "see docs/simulation.md."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
) -> None:
    """Generate synthetic larva tracks with per-step ground-truth behaviour labels.

    Writes a tracking file in the chosen format plus `groundtruth.label` (its dependency).
    The behaviour models are described in docs/simulation.md.
    Example: tagging-backend simulate demo --larvae 10 --duration 30 --format trxmat
    Example (randomised rig, for training): tagging-backend simulate demo --domain wide --seed 3
    """
    from ..simulate import SimulationConfig, balanced_weights
    from ..simulate import simulate as run_simulation
    from ..simulate.domain import PRESETS

    if to not in _SIMULATE_SUFFIX:
        raise typer.BadParameter(f"unknown format {to!r}; choose from {', '.join(_SIMULATE_SUFFIX)}",
                                 param_hint="--format")
    if domain != "default":
        if domain not in PRESETS:
            raise typer.BadParameter(f"unknown domain {domain!r}; choose from default, {', '.join(PRESETS)}",
                                     param_hint="--domain")
        result = _simulate_domain_recording(domain, larvae, duration, seed, frame_rate, to,
                                            frame_jitter, tail_first, balanced)
    else:
        if frame_jitter is None:
            frame_jitter = 0.0 if to in ("fimtrack", "schleyer") else 0.06
        config = SimulationConfig(n_larvae=larvae, duration=duration,
                                  frame_rate=11.0 if frame_rate is None else frame_rate, seed=seed,
                                  frame_jitter=frame_jitter, head_first=not tail_first)
        if balanced:
            config = dataclasses.replace(config, behaviour_weights=balanced_weights(config))
        result = run_simulation(config)
    paths = write_simulation(result, output_dir, to, overwrite=overwrite)
    say(f"wrote {', '.join(str(p) for p in paths)} ({larva_count(result.run.n_tracks)}, "
        f"{result.run.n_steps} steps)")


def _simulate_domain_recording(domain, larvae, duration, seed, frame_rate, to, frame_jitter,
                               tail_first, balanced):
    """One recording of a domain preset; the rig is drawn from the seed except for what the
    options fix (frame rate; regular frames for formats that store frame numbers)."""
    from ..simulate.domain import get_spec, simulate_recording

    spec = get_spec(domain)
    changes = {}
    if to in ("fimtrack", "schleyer") or frame_jitter == 0:
        changes["regular_frames_prob"] = 1.0
    elif frame_jitter is not None:
        changes.update(regular_frames_prob=0.0, frame_jitter=(frame_jitter, frame_jitter))
    if tail_first:
        changes["head_first_prob"] = 0.0
    if changes:
        spec = dataclasses.replace(spec, **changes)
    return simulate_recording(spec, n_larvae=larvae, duration=duration, seed=seed,
                              frame_rate=frame_rate, balanced=balanced)


def write_simulation(result, output_dir: Path, to: str, *, overwrite: bool = False) -> list[Path]:
    """Write a simulation as tracking data in format ``to`` plus ``groundtruth.label``."""
    from ..data.labels import Labels, TrackLabels
    from ..formats import get_format

    run = result.run
    label_path = output_dir / "groundtruth.label"
    if to == "chore":
        tracking_path = output_dir / f"{run.id}@sim@sim@sim@sim#n#n#n@100.spine"
    elif to == "schleyer":  # the directory name is the run id when read back
        tracking_path = output_dir / run.id
    else:
        tracking_path = output_dir / _SIMULATE_SUFFIX[to]
    for path in (label_path, tracking_path):
        refuse_existing(path, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    get_format(to).write(run, tracking_path)
    written = _written_tracking_files(tracking_path, to)
    labels = Labels(list(result.names), metadata={"id": run.id, **_string_metadata(run.metadata)},
                    tracking=written)
    names = list(result.names)
    for track, behaviour in _per_track(run, result.behaviour):
        labels.tracks[track.larva_id] = TrackLabels(track.t.copy(), [names[b] for b in behaviour])
    labels.metadata["provenance"] = provenance("simulate")
    labels.dump(label_path, overwrite=overwrite)
    return [*written, label_path]


def _written_tracking_files(tracking_path: Path, to: str) -> list[Path]:
    if to == "chore":  # no .outline when the run has no outlines
        outline = tracking_path.with_suffix(".outline")
        return [tracking_path, outline] if outline.exists() else [tracking_path]
    if tracking_path.is_dir():
        return sorted(tracking_path.glob("*.csv"))
    return [tracking_path]


def _string_metadata(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, dict)) and k != "id"}


def _per_track(run, behaviour):
    for i, track in enumerate(run):
        yield track, behaviour[run.offsets[i]:run.offsets[i + 1]]
