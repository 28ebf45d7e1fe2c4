"""``review``: the predicted segments most worth a person's correction, as a table and a
``.label`` file with a secondary ``review`` label on them."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from ..errors import TaggingError
from .app import app, console, provenance, say, state, warn
from .options import Decode, Overwrite, output_paths, refuse_existing


@app.command()
def review(
    inputs: List[Path] = typer.Argument(..., metavar="PREDICTED...",
                                        help="Label files written by predict (their .probabilities.h5 "
                                             "sidecars are read when present)."),
    output: str = typer.Option("{dir}/{stem}.review.label", "--output", "-o",
                               help="Output path template: {dir}, {stem}, {name}."),
    top: int = typer.Option(20, "--top", "-n", min=1, help="Segments to mark per file and to list."),
    overwrite: Overwrite = False,
    decode: Decode = False,
) -> None:
    """Rank predicted segments by how useful a correction would be; mark the best with `review`.

    Example: tagging-backend review demo/predicted.label --top 30  (prints the table and writes
    demo/predicted.review.label; open it with `tagging-backend view` or in LarvaTagger)
    """
    from rich.table import Table

    from ..data.labels import Labels
    from ..review import find_probabilities, mark_review, rank_segments

    for path in inputs:
        if not path.is_file():
            raise TaggingError(f"{path}: no such file")
    outputs = output_paths(list(inputs), output, "")
    for path, out in zip(inputs, outputs):
        if out.resolve() == path.resolve():
            raise TaggingError(f"{out}: the review file would replace its input; choose another --output")
        refuse_existing(out, overwrite)
    listed = []
    for path, out in zip(inputs, outputs):
        labels = Labels.load(path, verify=False)
        probabilities = find_probabilities(path, labels)
        if probabilities is None:
            warn(f"{path}: no probabilities sidecar; ranking by neighbour disagreement and class rarity only")
        segments = rank_segments(labels, probabilities)
        marked = mark_review(labels, segments[:top])
        marked.metadata["review"] = provenance("review", source=path.name, top=top,
                                               probabilities=probabilities.path.name if probabilities else None)
        marked.dump(out, encode=not decode)
        say(f"{path} → {out} ({min(top, len(segments))} of {len(segments)} segments marked review)")
        listed.extend((path, s) for s in segments[:top])
    listed.sort(key=lambda item: -item[1].score)
    if state.quiet:
        return
    table = Table("file", "larva", "start", "end", "label", "score", title="segments to review")
    for path, segment in listed[:top]:
        table.add_row(str(path), str(segment.larva), f"{segment.start:.2f}", f"{segment.end:.2f}",
                      segment.label, f"{segment.score:.3f}")
    console.print(table)
