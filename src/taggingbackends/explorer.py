"""Paths and file lists of a backend project, as upstream backends use them.

A *backend project* (TaggingBackends' template, SPEC §1.1) is a directory with::

    models/<instance>/              trained taggers (model discovery: its subdirectories)
    pretrained_models/<instance>/   encoders that training starts from (optional)
    data/raw/<token>/               inputs (tracking files, or a data repository to train on)
    data/interim/<token>/           intermediate files (datasets, features)
    data/processed/<token>/         outputs (predicted.label)
    src/<package>/{data,features,models}/*.py   optional scripts (make_dataset.py, …)

``<token>`` is the sandbox token when one is given (``--sandbox``), else the
model instance: several runs on one instance stay apart by giving each its own
sandbox. :class:`BackendExplorer` hands these paths to backends and scripts, and
:meth:`BackendExplorer.lock` keeps two runs without a sandbox off the same data
directories.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .errors import TaggingError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The scripts a backend project may hold, by the step they implement.
SCRIPTS = {
    "make_dataset": ("data", "make_dataset.py"),
    "build_features": ("features", "build_features.py"),
    "train_model": ("models", "train_model.py"),
    "finetune_model": ("models", "finetune_model.py"),
    "predict_model": ("models", "predict_model.py"),
}

_TOKEN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+=-]*$")


def check_token(token: str, what: str = "model instance") -> str:
    """A model instance or sandbox name must be one plain path component.

    Upstream's user guide passes ``--model-instance models/NAME``: the leading
    ``models/`` is accepted and dropped."""
    name = token[len("models/"):] if token.startswith("models/") else token
    name = name.rstrip("/")
    if not _TOKEN.match(name) or name in (".", ".."):
        raise TaggingError(f"{what} {token!r}: use letters, digits and _ . - @ + = only "
                           "(one directory name, no slashes)")
    return name


def package_name(project_name: str) -> str:
    """Python package name of a backend project: lower case, hyphens to underscores."""
    return project_name.lower().replace("-", "_").replace(" ", "_")


def is_backend_project(directory: str | Path) -> bool:
    """A directory laid out as a backend project: ``models/`` beside ``pyproject.toml``
    or ``data/``, or backend scripts under ``src/`` or ``scripts/``."""
    directory = Path(directory)
    if not (directory / "models").is_dir():
        return False
    return any((directory / name).exists() for name in ("pyproject.toml", "data", "src", "scripts"))


class BackendExplorer:
    """Directories and files of one run of a backend project.

    ``model_instance`` names the tagger (``models/<instance>``); ``sandbox`` the
    data directories (default: the model instance). Data directories are
    created on first use, as upstream's explorer does."""

    def __init__(self, project_dir: str | Path | None = None, model_instance: str | None = None,
                 sandbox: str | None = None, pretrained_model_instance: str | None = None) -> None:
        self.project_dir = Path(project_dir or Path.cwd()).resolve()
        self.model_instance = check_token(model_instance) if model_instance else None
        self.sandbox = check_token(sandbox, "sandbox") if sandbox else None
        self.pretrained_model_instance = pretrained_model_instance

    def __repr__(self) -> str:
        return (f"BackendExplorer(project_dir={str(self.project_dir)!r}, model_instance={self.model_instance!r}, "
                f"sandbox={self.sandbox!r})")

    # ------------------------------------------------------------ identity
    @property
    def project_name(self) -> str:
        """``[project].name`` (or Poetry's ``[tool.poetry].name``) of pyproject.toml, else the directory name."""
        path = self.project_dir / "pyproject.toml"
        if path.is_file():
            try:
                document = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
                raise TaggingError(f"{path}: invalid TOML ({err})") from None
            name = document.get("project", {}).get("name") or \
                document.get("tool", {}).get("poetry", {}).get("name")
            if isinstance(name, str) and name:
                return name
        return self.project_dir.name

    @property
    def package(self) -> str:
        return package_name(self.project_name)

    @property
    def token(self) -> str:
        """The data-directory key: the sandbox, else the model instance."""
        token = self.sandbox or self.model_instance
        if not token:
            raise TaggingError("no --model-instance or --sandbox: cannot tell which data directory to use")
        return token

    # ---------------------------------------------------------- directories
    def _data_dir(self, kind: str, create: bool) -> Path:
        path = self.project_dir / "data" / kind / self.token
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def raw_data_dir(self, create: bool = True) -> Path:
        return self._data_dir("raw", create)

    def interim_data_dir(self, create: bool = True) -> Path:
        return self._data_dir("interim", create)

    def processed_data_dir(self, create: bool = True) -> Path:
        return self._data_dir("processed", create)

    def model_dir(self, instance: str | None = None, create: bool = False) -> Path:
        name = check_token(instance) if instance else self.model_instance
        if not name:
            raise TaggingError("no --model-instance given")
        path = self.project_dir / "models" / name
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def pretrained_model_dir(self, instance: str | None = None) -> Path:
        name = instance or self.pretrained_model_instance or "default"
        return self.project_dir / "pretrained_models" / check_token(name, "pretrained model instance")

    def list_model_instances(self) -> list[str]:
        """Model discovery as LarvaTagger does it: the subdirectories of ``models/``
        (hidden ones, such as an instance still being written, excluded)."""
        models = self.project_dir / "models"
        if not models.is_dir():
            return []
        return sorted(p.name for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))

    # --------------------------------------------------------------- files
    @staticmethod
    def _files(root: Path, group_by_directories: bool) -> list[Path] | dict[Path, list[Path]]:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) \
            if root.is_dir() else []
        if not group_by_directories:
            return files
        groups: dict[Path, list[Path]] = {}
        for path in files:
            groups.setdefault(path.parent, []).append(path)
        return groups

    def list_input_files(self, group_by_directories: bool = False):
        """Files under ``data/raw/<token>`` (recursively, sorted; hidden files skipped)."""
        return self._files(self.raw_data_dir(create=False), group_by_directories)

    def list_interim_files(self, group_by_directories: bool = False):
        return self._files(self.interim_data_dir(create=False), group_by_directories)

    def list_output_files(self, group_by_directories: bool = False):
        return self._files(self.processed_data_dir(create=False), group_by_directories)

    # ------------------------------------------------------------- scripts
    def script(self, step: str) -> Path | None:
        """The project's script for ``step`` (a key of :data:`SCRIPTS`):
        ``src/<package>/<sub>/<step>.py``, or ``scripts/<step>.py`` (the minimal layout)."""
        sub, filename = SCRIPTS[step]
        for path in (self.project_dir / "src" / self.package / sub / filename,
                     self.project_dir / "scripts" / filename):
            if path.is_file():
                return path
        return None

    # -------------------------------------------------------------- locking
    def lock_path(self) -> Path:
        return self.project_dir / "data" / ".locks" / f"{self.token}.lock"

    def lock(self):
        """An exclusive lock on this run's data directories (``filelock.FileLock``;
        use ``with explorer.lock(): ...``). Refuses at once when another run holds it."""
        import filelock

        path = self.lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return _RefusingLock(filelock.FileLock(str(path), timeout=0), self)

    # ------------------------------------------------------ script arguments
    def to_args(self) -> list[str]:
        """Command-line arguments that :func:`taggingbackends.main.main` turns back into this explorer."""
        args = ["--project-dir", str(self.project_dir)]
        for flag, value in (("--model-instance", self.model_instance), ("--sandbox", self.sandbox),
                            ("--pretrained-model-instance", self.pretrained_model_instance)):
            if value:
                args += [flag, value]
        return args


class _RefusingLock:
    """Context manager around a FileLock that turns a held lock into a clear error."""

    def __init__(self, lock, explorer: BackendExplorer) -> None:
        self._lock, self._explorer = lock, explorer

    def __enter__(self) -> "_RefusingLock":
        import filelock

        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise TaggingError(f"{self._explorer.project_dir / 'data'}: another run is using the data "
                               f"directories of {self._explorer.token!r}; give each concurrent run its own "
                               "--sandbox TOKEN") from None
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

