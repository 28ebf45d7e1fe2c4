"""Entry point of a backend project's scripts, as upstream backends write them::

    # src/mytagger/models/predict_model.py
    from taggingbackends.explorer import BackendExplorer
    from taggingbackends.main import main

    def predict_model(backend: BackendExplorer, **kwargs):
        for path in backend.list_input_files():
            ...
        # write labels into backend.processed_data_dir()

    if __name__ == "__main__":
        main(predict_model)

``tagging-backend predict|train|finetune`` runs such a script from the project
root as ``python <script> --project-dir DIR --model-instance NAME [--sandbox
TOKEN] [--key value ...]``; :func:`main` turns the first flags into a
:class:`~taggingbackends.explorer.BackendExplorer` and passes the others to the
function as keyword arguments (``--sample-size 100`` → ``sample_size=100``;
values parsed as JSON when they are, else kept as strings; a flag without a
value is ``True``).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Sequence

from .errors import TaggingError
from .explorer import BackendExplorer

_EXPLORER_FLAGS = {"--project-dir": "project_dir", "--model-instance": "model_instance",
                   "--sandbox": "sandbox", "--pretrained-model-instance": "pretrained_model_instance"}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_arguments(argv: Sequence[str]) -> tuple[BackendExplorer, dict]:
    """``(explorer, keyword arguments)`` from a script's command line."""
    explorer_args: dict = {}
    kwargs: dict = {}
    args = list(argv)
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("--") or flag == "--":
            raise TaggingError(f"unexpected argument {flag!r} (expected --name value pairs)")
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        value = args[i + 1] if has_value else None
        i += 2 if has_value else 1
        if flag in _EXPLORER_FLAGS:
            if value is None:
                raise TaggingError(f"{flag} needs a value")
            explorer_args[_EXPLORER_FLAGS[flag]] = value
        else:
            kwargs[flag[2:].replace("-", "_")] = True if value is None else _value(value)
    return BackendExplorer(**explorer_args), kwargs


def main(fun: Callable[..., Any], argv: Sequence[str] | None = None) -> Any:
    """Run ``fun(explorer, **kwargs)`` from the command line; a
    :class:`~taggingbackends.errors.TaggingError` becomes one line on stderr and exit status 1."""
    arguments = sys.argv[1:] if argv is None else argv
    debug = "--debug" in arguments
    try:
        explorer, kwargs = parse_arguments(arguments)
        return fun(explorer, **kwargs)
    except TaggingError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
