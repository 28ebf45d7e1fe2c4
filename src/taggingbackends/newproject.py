"""``tagging-backend new <Name>``: create a backend project from the shipped template.

A *backend project* is upstream TaggingBackends' directory layout (see
:mod:`taggingbackends.explorer`): ``models/``, ``pretrained_models/``,
``data/{raw,interim,processed}/`` and a Python package under ``src/`` whose
``features/build_features.py``, ``models/train_model.py`` and
``models/predict_model.py`` scripts ``tagging-backend`` runs from the project
root. The template is a working example, not a stub: per-step kinematic
features and a multinomial logistic regression saved as JSON (no pickle), with
a test that trains and tags simulated larvae.

The template lives in ``taggingbackends/templates/backend/``. Its files end in
``.tmpl`` (dropped on output) so that setuptools never mistakes them for modules
of this package, and may contain the placeholders ``{{name}}`` (the project
name), ``{{package}}`` (its Python package), ``{{version}}`` (the version of
taggingbackends that made the project, the dependency floor) and ``{{year}}``.
A ``__package__`` path component becomes the package name; ``gitignore``
becomes ``.gitignore``. The empty directories are made here, each with a
``.gitkeep`` (hidden template files would be left out of wheels).

>>> from taggingbackends.newproject import create_project
>>> path = create_project("My-Tagger", "backends")      # doctest: +SKIP
>>> # backends/My-Tagger/src/my_tagger/models/train_model.py, ...
"""

from __future__ import annotations

import datetime as _dt
import keyword
import os
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import OutputExistsError, TaggingError
from .explorer import package_name

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["create_project", "check_project_name", "render_template", "TEMPLATE_SUFFIX"]

TEMPLATE_SUFFIX = ".tmpl"
PACKAGE_PLACEHOLDER = "__package__"
#: Template file names that are written under another name (hidden files).
RENAMED = {"gitignore": ".gitignore"}
#: Directories that start empty (kept in version control by a ``.gitkeep``).
EMPTY_DIRS = ("data/raw", "data/interim", "data/processed", "models", "pretrained_models")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_MAX_NAME_LENGTH = 100
#: Import names a backend package must not take: with ``PYTHONPATH=src`` it would shadow them.
_TAKEN_PACKAGES = frozenset({"taggingbackends", "maggotuba", "numpy", "scipy", "sklearn", "h5py",
                             "typer", "rich", "filelock", "torch", "safetensors", "pytest", "src"})


def check_project_name(name: str) -> str:
    """Return ``name`` if it can name a backend project, else raise TaggingError.

    A project name is letters, digits, ``-`` and ``_``, starting with a letter, and
    its package name (lower case, ``-`` → ``_``) must be importable without shadowing
    a standard-library module or a dependency (scripts run with ``PYTHONPATH=src``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TaggingError(f"invalid project name {name!r}: use letters, digits, '-' and '_', "
                           "starting with a letter (e.g. My-Tagger)")
    if len(name) > _MAX_NAME_LENGTH:
        raise TaggingError(f"invalid project name: longer than {_MAX_NAME_LENGTH} characters")
    package = package_name(name)
    if keyword.iskeyword(package) or package in sys.stdlib_module_names or package in _TAKEN_PACKAGES:
        raise TaggingError(f"invalid project name {name!r}: its package name {package!r} would shadow "
                           "a Python keyword, standard module or dependency; choose another name")
    return name


def render_template(text: str, values: dict[str, str]) -> str:
    """``text`` with every ``{{key}}`` of ``values`` replaced (other braces untouched)."""
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def template_values(name: str) -> dict[str, str]:
    """The placeholder values for project ``name``."""
    return {"name": name, "package": package_name(name), "version": __version__,
            "year": str(_dt.date.today().year)}


def create_project(name: str, parent: Path | str = ".", *, overwrite: bool = False) -> Path:
    """Create the backend project ``<parent>/<name>/`` and return its path.

    The project is built in a hidden temporary sibling directory and renamed into
    place, so an interrupted run leaves no half-made project. An existing empty
    directory is replaced; an existing file or non-empty directory raises
    :class:`~taggingbackends.errors.OutputExistsError` unless ``overwrite``, in
    which case it is replaced *with all its content* (once the new project is
    complete). ``parent`` is created if needed.
    """
    check_project_name(name)
    parent = Path(parent)
    target = parent / name
    if _is_occupied(target) and not overwrite:
        raise OutputExistsError(f"{target}: already exists and is not empty "
                                "(choose another name, or pass --overwrite to replace it)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".new", dir=parent))
    except OSError as err:
        raise TaggingError(f"{parent}: cannot create the project there ({err.strerror or err})") from None
    try:
        _write_project(staging, template_values(name))
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------ internals
def _is_occupied(path: Path) -> bool:
    """Whether creating a project at ``path`` would replace something."""
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(path.iterdir())


def _template_root() -> Traversable:
    return resources.files("taggingbackends") / "templates" / "backend"


def _template_files(root: Traversable, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    """Every template file under ``root`` with its relative path parts, sorted."""
    found = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__" or entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += _template_files(entry, prefix + (entry.name,))
        elif entry.name.endswith(TEMPLATE_SUFFIX):
            found.append((prefix + (entry.name,), entry))
    return found


def _output_path(parts: tuple[str, ...], package: str) -> Path:
    """Where a template file goes: placeholders in names replaced, suffix dropped."""
    names = [part.replace(PACKAGE_PLACEHOLDER, package) for part in parts]
    names[-1] = names[-1][: -len(TEMPLATE_SUFFIX)]
    names[-1] = RENAMED.get(names[-1], names[-1])
    return Path(*names)


def _write_project(root: Path, values: dict[str, str]) -> None:
    """Write the rendered template and the empty directories under ``root``."""
    files = _template_files(_template_root())
    if not files:  # a broken installation, not a user error
        raise RuntimeError("the backend project template is missing from the taggingbackends package")
    for parts, source in files:
        destination = root / _output_path(parts, values["package"])
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(render_template(source.read_text(encoding="utf-8"), values), encoding="utf-8")
    for directory in EMPTY_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / ".gitkeep").touch()
    os.chmod(root, 0o755)  # mkdtemp made it private


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` onto ``target``; whatever was at ``target`` is moved aside
    first and deleted only once the new project is in place (restored on failure)."""
    if not (target.exists() or target.is_symlink()):
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    old = aside / "previous"
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
