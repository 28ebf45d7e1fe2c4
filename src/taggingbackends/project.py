"""Backend project mode: running a project's own scripts, and publishing model
instances atomically.

Upstream runs a backend project's scripts (``src/<package>/models/predict_model.py``
and friends, see :mod:`taggingbackends.explorer`) from its root with the project's
environment. Here ``tagging-backend`` does the same with the current Python, the
project's ``src/`` on ``PYTHONPATH`` (so the project need not be installed), and
the options passed on as ``--name value`` pairs that :func:`taggingbackends.main.main`
decodes. Projects without scripts are served by an installed backend plug-in
(MaggotUBA by default).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import OutputExistsError, TaggingError
from .explorer import BackendExplorer


def script_arguments(options: Mapping[str, Any]) -> list[str]:
    """``{"sample_size": 100, "debug": True, "labels": None}`` → ``["--sample-size", "100", "--debug"]``
    (None and False are left out; lists become comma-separated text)."""
    args: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(map(str, value))]
        else:
            args += [flag, str(value)]
    return args


def run_script(explorer: BackendExplorer, step: str, options: Mapping[str, Any] | None = None,
               *, required: bool = True, debug: bool = False) -> bool:
    """Run the project's script for ``step`` (``predict_model``, ``train_model``, …).

    Returns False when the project has no such script and ``required`` is False.
    A failing script is a :class:`TaggingError` carrying its last line of stderr
    (its whole stderr is shown with ``debug``)."""
    script = explorer.script(step)
    if script is None:
        if required:
            raise TaggingError(f"{explorer.project_dir}: no {step}.py script in src/{explorer.package}/ "
                               "or scripts/")
        return False
    env = dict(os.environ)
    src = str(explorer.project_dir / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    args = [sys.executable, str(script), *explorer.to_args(), *script_arguments(options or {})]
    if debug:
        args.append("--debug")
    result = subprocess.run(args, cwd=explorer.project_dir, env=env, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        if debug:
            sys.stderr.write(result.stderr)
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        last = lines[-1].removeprefix("error: ") if lines else f"exit status {result.returncode}"
        raise TaggingError(f"{script.relative_to(explorer.project_dir)}: {last}")
    if result.stderr and debug:
        sys.stderr.write(result.stderr)
    return True


@contextlib.contextmanager
def new_model_instance(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """A hidden temporary directory beside ``final`` to train into; renamed to
    ``final`` when training succeeds, removed otherwise. Model discovery (the
    subdirectories of ``models/`` not starting with a dot) never sees a half-written
    instance, and two runs creating the same instance cannot mix their files: the
    second rename fails and says so. With ``overwrite``, an existing instance is
    replaced only once the new one is complete (it is moved aside, then removed)."""
    final = Path(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        if not overwrite:
            raise OutputExistsError(f"{final}: model instance already exists; choose another name "
                                    "(or pass --overwrite to replace it)")
        if not final.is_dir() or not (final / "clf_config.json").is_file():
            raise OutputExistsError(f"{final}: exists and is not a model instance; not replacing it")
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        try:
            yield staging
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rename(final, old / final.name)
            os.rename(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield work
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        try:
            os.rename(work, final)
        except OSError:
            raise OutputExistsError(f"{final}: another run created this model instance meanwhile; "
                                    "choose another name") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
