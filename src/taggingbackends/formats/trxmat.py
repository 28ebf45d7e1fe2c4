"""`trx.mat`: the JBM tagger / Larva Screen MATLAB output (SPEC §4.3).

Layout read and written
-----------------------
The MATLAB variable ``trx`` is a struct array, one element per larva (an
``n_larvae x 1`` column in the screen files). Per-larva fields used here:

* ``t``: timestamps (``n x 1``); rounded to 4 decimals on reading (SPEC §4.8);
* ``x_spine``, ``y_spine``: ``n x 11`` spine points (any point count is read);
* ``x_contour``, ``y_contour``: ``n x max_points`` contours padded with NaN;
  each contour is truncated at its first NaN vertex; read into ``Run.outline``;
* ``numero_larva_num``: the larva number (else larvae are numbered 1..N);
* ``id``: the run's ``date_time`` string (identical for every larva);
* behaviour flags (``1`` = active, anything else inactive), read in the
  canonical order of :data:`FLAG_FIELDS` (the 25 names of SPEC §4.3) into
  ``Run.tags``, ``tag_names`` being the flag fields present in the file;
* string fields ``protocol``, ``neuron``, ``pipeline``, ``stimuli`` (first
  larva) go to ``Run.metadata`` under the same names.

**Tags without flag fields.** When a file has none of the 25 flag fields, the
reader falls back to ``global_state_large_state`` (integers 1..8, meaning run,
cast, stop, hunch, back, roll, small_motion, bend per the LarvaTagger user
guide, S-UG) and then to the older ``global_state`` (1..6: run, cast, stop,
hunch, back, roll; S-JBM), one tag column per state name. ``tags="flags"``,
``"global_state_large_state"``, ``"global_state"`` or ``"none"`` forces a
source; ``tag_fields=[...]`` reads any list of ±1 fields as tags.

**Run id and metadata.** ``run.id`` is the ``id`` field; without it, the
file's parent directory name when it looks like ``YYYYMMDD_HHMMSS``, else the
file stem. ``tracker``, ``genotype``, ``effector``, ``protocol`` and
``date_time`` are derived from the screen directory convention
``<tracker>/<genotype>@<effector>/<protocol with 3 #>/<YYYYMMDD_HHMMSS>/trx.mat``
(SPEC §4.2) applied to the file's path, then to the ``full_path`` field;
only the parts that match the convention are set (nothing is invented).

**Head and tail.** ``spine_head`` is ``"unknown"``: trx.mat spines come from
Choreography, and the file does not state which end is the head (SPEC §4.7).
Coordinates are in mm.

MATLAB v7.3 layout (HDF5), as MATLAB and libmatio write it
-----------------------------------------------------------
* a 512-byte user block: 116 bytes of header text starting with
  ``MATLAB 7.3 MAT-file``, 8 bytes of subsystem offset, the version
  ``0x0200`` and the endian indicator ``IM`` at bytes 124..127;
* ``/trx`` is a group with attributes ``MATLAB_class = "struct"`` and
  ``MATLAB_fields`` (variable-length arrays of 1-character strings);
* each field is a dataset of object references, one per element, *without* a
  ``MATLAB_class`` attribute (a reference dataset *with* one is a cell array).
  Its HDF5 shape is MATLAB's reversed: ``(1, n_larvae)`` for an
  ``n_larvae x 1`` struct array;
* the references point into ``/#refs#``; each target is a dataset stored
  column-major, so an ``n x 11`` MATLAB matrix has HDF5 shape ``(11, n)``,
  with ``MATLAB_class`` ``"double"`` (or ``"char"``: ``uint16`` codes and
  ``MATLAB_int_decode = 2``). Empty values are ``uint64`` arrays of their
  dimensions with ``MATLAB_empty = 1``; ``/#refs#/a`` is MATLAB's canonical
  empty;
* a 1x1 struct (one larva) is a group whose fields are the values themselves.

The reader is liberal: references of shape ``(1, n)`` or ``(n, 1)``, per-larva
matrices in either orientation (the time axis is the one matching ``t``),
``t`` as a row or a column, flags stored as double, logical or integers.
What the writer leaves out: ``H5PATH`` attributes (MATLAB does not need them)
and compression (off by default for read speed; ``compression="gzip"``).

Older MAT-files (v5/v7, header text ``MATLAB 5.0 MAT-file``) are read with
:func:`scipy.io.loadmat` and written with :func:`scipy.io.savemat`
(``version="5"``).

Speed
-----
Reading dereferences one HDF5 object per (larva, field). The reader reads each
reference dataset once, then uses h5py's low-level API (dereference + read
into a preallocated array), skipping fields it does not need (``outline=False``,
``tags="none"`` read less).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import mmap
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np

from ..data.tracks import Run, outline_vertex_counts
from ..errors import FormatError, TaggingError, ValidationError, one_line
from ..fileio import atomic_path
from .registry import FormatSpec, as_path

FLAG_FIELDS: tuple[str, ...] = (
    "back", "back_large", "back_strong", "back_weak",
    "cast", "cast_large", "cast_strong", "cast_weak",
    "hunch", "hunch_large", "hunch_strong", "hunch_weak",
    "roll", "roll_large", "roll_strong", "roll_weak",
    "run", "run_large", "run_strong", "run_weak",
    "small_motion",
    "stop", "stop_large", "stop_strong", "stop_weak",
)
"""The 25 behaviour flag fields, in canonical order (SPEC §4.3)."""

GLOBAL_STATE_LARGE_NAMES = ("run", "cast", "stop", "hunch", "back", "roll", "small_motion", "bend")
GLOBAL_STATE_NAMES = ("run", "cast", "stop", "hunch", "back", "roll")
METADATA_FIELDS = ("protocol", "neuron", "pipeline", "stimuli")

V73_SIGNATURE = b"MATLAB 7.3 MAT-file"
V5_SIGNATURE = b"MATLAB 5.0 MAT-file"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
USERBLOCK_SIZE = 512

_GEOMETRY_FIELDS = ("t", "x_spine", "y_spine", "x_contour", "y_contour", "numero_larva_num", "id")
_TAG_SOURCES = ("auto", "flags", "global_state_large_state", "global_state", "none")
_IGNORED_OPTIONS = ("framerate", "pixelsize", "verify")  # generic CLI options, meaningless here
_DATE_TIME = re.compile(r"^\d{8}_\d{6}$")
_MATLAB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


# ------------------------------------------------------------------ detection
def is_trxmat(path: Path, shallow: bool = True) -> bool:
    """Content check: a MATLAB v7.3 (``MATLAB 7.3 MAT-file``) or v5/v7
    (``MATLAB 5.0 MAT-file``) header.

    With ``shallow=False`` the file must also hold a ``trx`` variable. The
    registry uses the shallow check, so that a MAT-file without ``trx`` (or a
    truncated one) gets a precise error from :func:`read_trxmat`.
    """
    try:
        path = as_path(path)
        if not path.is_file():
            return False
        with open(path, "rb") as handle:
            head = handle.read(len(V73_SIGNATURE))
        if head not in (V73_SIGNATURE, V5_SIGNATURE):
            return False
        if shallow:
            return True
        if head == V73_SIGNATURE:
            import h5py

            with h5py.File(path, "r") as f:
                return "trx" in f
        import scipy.io

        return any(name == "trx" for name, _, _ in scipy.io.whosmat(str(path)))
    except Exception:
        return False


# -------------------------------------------------------------------- reading
def read_trxmat(path: str | Path, *, outline: bool = True, tags: str | bool = "auto",
                tag_fields: Sequence[str] | None = None, **options) -> Run:
    """Read a ``trx.mat`` file (MATLAB v7.3/HDF5 or v5/v7) into a :class:`Run`.

    Args:
        path: the MAT-file.
        outline: read ``x_contour``/``y_contour`` into ``Run.outline`` when
            present (``False`` skips them, which is faster).
        tags: where tags come from: ``"auto"`` (flag fields, else
            ``global_state_large_state``, else ``global_state``), ``"flags"``,
            ``"global_state_large_state"``, ``"global_state"``, ``"none"``
            (``True``/``False`` mean ``"auto"``/``"none"``).
        tag_fields: explicit list of per-step fields to read as tags
            (value 1 = active); overrides ``tags``.
        options: ``framerate``, ``pixelsize`` and ``verify`` are accepted and
            ignored (trx.mat has its own timestamps, in mm).

    Raises:
        FormatError: any problem with the file (not a MAT-file, truncated,
            no ``trx`` variable, inconsistent fields, NaN-only spines,
            non-increasing times...), naming the file.
    """
    path = as_path(path)
    unknown = sorted(set(options) - set(_IGNORED_OPTIONS))
    if unknown:
        raise TypeError(f"read_trxmat() got unexpected option(s): {', '.join(unknown)}")
    if tags is True:
        tags = "auto"
    elif tags is False or tags is None:
        tags = "none"
    if tags not in _TAG_SOURCES:
        raise ValueError(f"tags must be one of {', '.join(_TAG_SOURCES)}, not {tags!r}")
    head = _read_head(path)
    if head.startswith(V73_SIGNATURE):
        reader = _read_v73
    elif head.startswith(V5_SIGNATURE):
        reader = _read_v5
    elif head.startswith(HDF5_SIGNATURE):
        raise FormatError(path, "is a plain HDF5 file, not a MATLAB v7.3 MAT-file "
                                "(no 'MATLAB 7.3 MAT-file' header)")
    else:
        raise FormatError(path, "is not a MATLAB MAT-file (no 'MATLAB 7.3 MAT-file' or "
                                "'MATLAB 5.0 MAT-file' header)")
    try:
        return reader(path, outline, tags, tag_fields)
    except TaggingError as err:
        if isinstance(err, FormatError):
            raise
        raise FormatError(path, str(err)) from err
    except MemoryError:
        raise
    except Exception as err:  # h5py/scipy raise many types on corrupt input
        raise FormatError(path, f"cannot be read as trx.mat ({type(err).__name__}: {one_line(err)})") from err


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            head = handle.read(128)
    except IsADirectoryError:
        raise FormatError(path, "is a directory, not a trx.mat file") from None
    except FileNotFoundError:
        raise FormatError(path, "no such file or directory") from None
    except OSError as err:
        raise FormatError(path, f"cannot be opened: {one_line(err)}") from err
    if not head:
        raise FormatError(path, "is empty")
    return head


class _Source:
    """Per-larva access to the fields of a ``trx`` struct array."""

    n_larvae: int
    fields: set[str]

    def numeric(self, name: str) -> list[np.ndarray]:
        """One 2-D float64 array per larva, in MATLAB orientation."""
        raise NotImplementedError

    def string(self, name: str, larva: int = 0) -> str | None:
        raise NotImplementedError


def _read_v73(path: Path, outline: bool, tags: str, tag_fields) -> Run:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        problem = one_line(err)
        if "truncated" in problem.lower():
            raise FormatError(path, f"is truncated (HDF5: {problem})") from err
        raise FormatError(path, f"is not a readable MATLAB v7.3 (HDF5) file ({problem})") from err
    with handle, contextlib.ExitStack() as stack:
        if "trx" not in handle:
            names = [k for k in handle.keys() if not k.startswith("#")]
            raise FormatError(path, "has no `trx` variable (variables: "
                                    f"{', '.join(names) if names else 'none'})")
        trx = handle["trx"]
        if not isinstance(trx, h5py.Group):
            raise FormatError(path, "`trx` is not a MATLAB struct array")
        raw = _memory_map(path, stack)
        source = _V73Source(path, handle, trx, raw)
        return _assemble(path, source, outline, tags, tag_fields)


def _memory_map(path: Path, stack: contextlib.ExitStack):
    """A read-only memory map of the file, or None where mapping fails."""
    try:
        handle = stack.enter_context(open(path, "rb"))
        raw = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None

    def close() -> None:
        with contextlib.suppress(BufferError):  # views still alive: closed when collected
            raw.close()

    stack.callback(close)
    return raw


class _V73Source(_Source):
    def __init__(self, path: Path, handle, trx, raw=None) -> None:
        import h5py

        self.path = path
        self.raw = raw
        self.handle = handle
        self.fid = handle.id
        self.trx = trx
        self.fields = set(trx.keys())
        self.refs: dict[str, np.ndarray] = {}
        # A struct array's fields are reference datasets without MATLAB_class;
        # a 1x1 struct stores its values in place (a reference dataset with
        # MATLAB_class "cell" is then a cell-array field).
        sizes = set()
        self.scalar = True
        for name in self.fields:
            obj = trx.get(name)
            if (isinstance(obj, h5py.Dataset) and obj.dtype == h5py.ref_dtype
                    and "MATLAB_class" not in obj.attrs):
                self.scalar = False
                sizes.add(int(np.prod(obj.shape)))
        if not self.scalar:
            if len(sizes) != 1:
                raise FormatError(path, f"the fields of `trx` have different lengths ({sorted(sizes)})")
            self.n_larvae = sizes.pop()
        else:
            self.n_larvae = 1
        if self.n_larvae == 0:
            raise FormatError(path, "`trx` holds no larva")

    def _refs(self, name: str) -> np.ndarray:
        if name not in self.refs:
            import h5py

            dataset = self.trx[name]
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype != h5py.ref_dtype:
                raise FormatError(self.path, f"field `{name}` of `trx` is not a struct-array field")
            # MATLAB's element order is column-major: reversed HDF5 dims, C order
            self.refs[name] = np.asarray(dataset[()]).ravel(order="C")
        return self.refs[name]

    def numeric(self, name: str) -> list[np.ndarray]:
        from h5py import h5r

        if self.scalar:
            dataset = self.trx[name]
            if not hasattr(dataset, "id") or not hasattr(dataset, "dtype"):
                raise FormatError(self.path, f"field `{name}` of `trx` is not numeric")
            return [_read_dataset_id(dataset.id, self.path, name, self.raw)]
        refs = self._refs(name)
        fid, path, raw, dereference = self.fid, self.path, self.raw, h5r.dereference
        out = []
        for ref in refs:
            if not ref:
                raise FormatError(path, f"field `{name}` holds a null reference")
            out.append(_read_dataset_id(dereference(ref, fid), path, name, raw))
        return out

    def string(self, name: str, larva: int = 0) -> str | None:
        """A char field's text, or None when it is not text."""
        from h5py import h5r

        try:
            if self.scalar:
                dsid = self.trx[name].id
            else:
                ref = self._refs(name)[larva]
                if not ref:
                    return None
                dsid = h5r.dereference(ref, self.fid)
            return _read_char(dsid)
        except Exception:
            return None


@functools.lru_cache(maxsize=None)
def _h5() -> SimpleNamespace:
    """h5py's low-level modules, imported on first use (h5py is slow to import)."""
    import h5py
    from h5py import h5a, h5r, h5s, h5t

    return SimpleNamespace(h5py=h5py, h5a=h5a, h5r=h5r, h5s=h5s, h5t=h5t, F64LE=h5t.IEEE_F64LE)


def _read_dataset_id(dsid, path: Path, name: str, raw=None) -> np.ndarray:
    """Read a MATLAB numeric array as float64, in MATLAB orientation.

    Low-level h5py. A contiguous little-endian double dataset (what MATLAB and
    our writer store) is taken straight from ``raw``, a memory map of the file
    (a read-only view, valid while the file is being read); anything else
    (chunked, compressed, other types) goes through HDF5's read and conversion.
    """
    h5 = _h5()
    shape = dsid.shape
    if len(shape) < 2:
        if h5.h5a.exists(dsid, b"MATLAB_empty"):
            return np.zeros((0, 0))
        if len(shape) == 0:
            shape = (1, 1)
        else:
            shape = (1,) + tuple(shape)
    elif len(shape) > 2:
        raise FormatError(path, f"field `{name}` of `trx` has {len(shape)} dimensions, expected 2")
    if raw is not None:
        offset = dsid.get_offset()
        if offset is not None and dsid.get_type() == h5.F64LE:
            count = 1
            for size in shape:
                count *= size
            if offset + 8 * count > len(raw):
                raise FormatError(path, f"is truncated (data of field `{name}` lie beyond the end of the file)")
            return np.frombuffer(raw, dtype="<f8", count=count, offset=offset).reshape(shape).T
    array = np.empty(shape, dtype=np.float64)
    if array.size:
        try:
            dsid.read(h5.h5s.ALL, h5.h5s.ALL, array)
        except (TypeError, ValueError, OSError) as err:
            raise FormatError(path, f"field `{name}` of `trx` is not numeric ({one_line(err)})") from err
    return array.T


def _read_char(dsid) -> str | None:
    h5 = _h5()
    if dsid.get_type().get_class() != h5.h5t.INTEGER:
        return None
    shape = dsid.shape
    if len(shape) < 2 and h5.h5a.exists(dsid, b"MATLAB_empty"):
        return ""
    codes = np.empty(shape, dtype=np.uint16)
    if codes.size:
        dsid.read(h5.h5s.ALL, h5.h5s.ALL, codes)
    # column-major MATLAB char matrix: h5py sees it transposed; a row string
    # 1 x n is stored (n, 1)
    return "".join(map(chr, codes.T.ravel())).rstrip("\x00").strip()


def _read_v5(path: Path, outline: bool, tags: str, tag_fields) -> Run:
    import scipy.io

    try:
        contents = scipy.io.loadmat(str(path), variable_names=["trx"], squeeze_me=False,
                                    struct_as_record=True, chars_as_strings=True)
    except Exception as err:
        raise FormatError(path, f"is truncated or not a readable MATLAB v5/v7 file ({one_line(err)})") from err
    if "trx" not in contents:
        try:
            names = [name for name, _, _ in scipy.io.whosmat(str(path))]
        except Exception:
            names = []
        raise FormatError(path, "has no `trx` variable (variables: "
                                f"{', '.join(names) if names else 'none'})")
    trx = contents["trx"]
    if not isinstance(trx, np.ndarray) or trx.dtype.names is None:
        raise FormatError(path, "`trx` is not a MATLAB struct array")
    return _assemble(path, _V5Source(path, trx), outline, tags, tag_fields)


class _V5Source(_Source):
    def __init__(self, path: Path, trx: np.ndarray) -> None:
        self.path = path
        self.elements = trx.ravel(order="F")
        self.fields = set(trx.dtype.names)
        self.n_larvae = len(self.elements)
        if self.n_larvae == 0:
            raise FormatError(path, "`trx` holds no larva")

    def numeric(self, name: str) -> list[np.ndarray]:
        out = []
        for i in range(self.n_larvae):
            value = self.elements[i][name]
            if value.dtype.kind in "OUSV":
                raise FormatError(self.path, f"field `{name}` of `trx` is not numeric")
            value = np.asarray(value, dtype=np.float64)
            if value.ndim == 0:
                value = value.reshape(1, 1)
            elif value.ndim == 1:
                value = value[None, :]
            elif value.ndim > 2:
                raise FormatError(self.path, f"field `{name}` of `trx` has {value.ndim} dimensions, expected 2")
            out.append(value)
        return out

    def string(self, name: str, larva: int = 0) -> str | None:
        value = np.asarray(self.elements[larva][name])
        if value.dtype.kind == "U":
            return "".join(str(v) for v in value.ravel()).strip()
        return None


# ------------------------------------------------------------------- assembly
def _assemble(path: Path, source: _Source, want_outline: bool, tags: str, tag_fields) -> Run:
    n = source.n_larvae
    for required in ("t", "x_spine", "y_spine"):
        if required not in source.fields:
            raise FormatError(path, f"`trx` has no `{required}` field")

    times = [_vector(path, "t", larva, a) for larva, a in enumerate(source.numeric("t"))]
    lengths = np.array([len(t) for t in times], dtype=np.int64)
    if np.any(lengths == 0):
        larva = int(np.flatnonzero(lengths == 0)[0])
        raise FormatError(path, f"larva #{larva + 1} of `trx` has no time step")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    n_steps = int(offsets[-1])
    t = np.round(np.concatenate(times), 4)

    xs = [_oriented(path, "x_spine", i, a, lengths[i]) for i, a in enumerate(source.numeric("x_spine"))]
    ys = [_oriented(path, "y_spine", i, a, lengths[i]) for i, a in enumerate(source.numeric("y_spine"))]
    points = {a.shape[1] for a in xs} | {a.shape[1] for a in ys}
    if len(points) != 1:
        raise FormatError(path, f"spines have different numbers of points ({sorted(points)})")
    n_points = points.pop()
    if n_points < 2:
        raise FormatError(path, f"spines have {n_points} point(s), at least 2 are needed")
    spine = np.empty((n_steps, n_points, 2), dtype=np.float64)
    for i in range(n):
        lo, hi = offsets[i], offsets[i + 1]
        spine[lo:hi, :, 0] = xs[i]
        spine[lo:hi, :, 1] = ys[i]
    del xs, ys

    outline = None
    if want_outline and "x_contour" in source.fields and "y_contour" in source.fields:
        outline = _contours(path, source, lengths, offsets)

    larva_ids = np.arange(1, n + 1, dtype=np.int64)
    if "numero_larva_num" in source.fields:
        ids = [a.ravel() for a in source.numeric("numero_larva_num")]
        if any(a.size != 1 for a in ids):
            raise FormatError(path, "`numero_larva_num` must hold one number per larva")
        values = np.array([a[0] for a in ids])
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or np.any(values < 0):
            raise FormatError(path, "`numero_larva_num` holds values that are not larva numbers")
        larva_ids = values.astype(np.int64)
        unique, counts = np.unique(larva_ids, return_counts=True)
        if np.any(counts > 1):
            dup = int(unique[counts > 1][0])
            raise FormatError(path, f"larva number {dup} appears twice in `numero_larva_num`")

    tag_matrix, tag_names = _tags(path, source, tags, tag_fields, lengths, offsets)

    run_id = source.string("id") if "id" in source.fields else None
    metadata = _metadata(path, source)
    if not run_id:
        parent = path.resolve().parent.name
        run_id = parent if _DATE_TIME.match(parent) else path.name.split(".")[0]
    if _DATE_TIME.match(run_id):
        metadata.setdefault("date_time", run_id)
    try:
        return Run(id=run_id, larva_ids=larva_ids, offsets=offsets, t=t, spine=spine, outline=outline,
                   tags=tag_matrix, tag_names=tag_names, metadata=metadata, source=(path,),
                   source_format="trxmat", frame_rate=None, spine_head="unknown", space_unit="mm")
    except ValidationError as err:
        raise FormatError(path, _strip_run(str(err), run_id)) from err


def _strip_run(message: str, run_id: str) -> str:
    prefix = f"run {run_id}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _vector(path: Path, name: str, larva: int, array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        return np.zeros(0)
    if min(array.shape) != 1:
        raise FormatError(path, f"field `{name}` of larva #{larva + 1} has shape "
                                f"{array.shape[0]}x{array.shape[1]}, expected a vector")
    return array.ravel()


def _oriented(path: Path, name: str, larva: int, array: np.ndarray, n_frames: int) -> np.ndarray:
    """Frames along axis 0 (the axis whose length is the number of timestamps)."""
    if array.shape[0] == n_frames:
        return array
    if array.ndim == 2 and array.shape[1] == n_frames:
        return array.T
    raise FormatError(path, f"field `{name}` of larva #{larva + 1} has shape "
                            f"{array.shape[0]}x{array.shape[1]}, but `t` has {n_frames} values")


def _contours(path: Path, source: _Source, lengths: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    xc = source.numeric("x_contour")
    yc = source.numeric("y_contour")
    blocks: list = []
    for i, (x, y) in enumerate(zip(xc, yc)):
        if x.size == 0 and y.size == 0:
            blocks.append(None)
            continue
        x = _oriented(path, "x_contour", i, x, lengths[i])
        y = _oriented(path, "y_contour", i, y, lengths[i])
        if x.shape != y.shape:
            raise FormatError(path, f"x_contour and y_contour of larva #{i + 1} differ in shape")
        invalid = np.isnan(x) | np.isnan(y)
        if invalid[:, :-1].any() and (invalid[:, :-1] & ~invalid[:, 1:]).any():
            # a vertex follows a NaN: the contour ends at its first NaN
            invalid = np.logical_or.accumulate(invalid, axis=1)
            x = np.where(invalid, np.nan, x)
            y = np.where(invalid, np.nan, y)
        width = int(x.shape[1] - invalid.sum(axis=1).min()) if x.shape[1] else 0
        blocks.append((x, y, width))
    width = max((b[2] for b in blocks if b is not None), default=0)
    outline = np.full((int(offsets[-1]), width, 2), np.nan, dtype=np.float32)
    for i, block in enumerate(blocks):
        if block is None:
            continue
        x, y, used = block
        lo, hi = offsets[i], offsets[i + 1]
        with np.errstate(over="ignore"):  # huge values become inf: rejected by Run
            outline[lo:hi, :used, 0] = x[:, :used]
            outline[lo:hi, :used, 1] = y[:, :used]
    return outline


def _tags(path: Path, source: _Source, tags: str, tag_fields, lengths, offsets):
    n_steps = int(offsets[-1])
    if tag_fields is not None:
        missing = [f for f in tag_fields if f not in source.fields]
        if missing:
            raise FormatError(path, f"`trx` has no field {', '.join(missing)} (asked for as tags)")
        names = tuple(tag_fields)
        return _flag_matrix(path, source, names, lengths, offsets), names
    if tags == "none":
        return None, ()
    flags = tuple(f for f in FLAG_FIELDS if f in source.fields)
    if tags in ("auto", "flags") and flags:
        return _flag_matrix(path, source, flags, lengths, offsets), flags
    if tags == "flags":
        return None, ()
    for field, names in (("global_state_large_state", GLOBAL_STATE_LARGE_NAMES),
                         ("global_state", GLOBAL_STATE_NAMES)):
        if tags in ("auto", field) and field in source.fields:
            states = _per_step(path, source, field, lengths, offsets)
            matrix = np.zeros((n_steps, len(names)), dtype=bool)
            valid = (states >= 1) & (states <= len(names)) & (states == np.round(states))
            rows = np.flatnonzero(valid)
            matrix[rows, states[rows].astype(np.int64) - 1] = True
            return matrix, names
    return None, ()


def _per_step(path: Path, source: _Source, field: str, lengths, offsets) -> np.ndarray:
    out = np.zeros(int(offsets[-1]), dtype=np.float64)
    for i, array in enumerate(source.numeric(field)):
        if array.size == 0:
            continue
        values = _vector(path, field, i, array)
        if len(values) != lengths[i]:
            raise FormatError(path, f"field `{field}` of larva #{i + 1} has {len(values)} values, "
                                    f"but `t` has {lengths[i]}")
        out[offsets[i]:offsets[i + 1]] = values
    return out


def _flag_matrix(path: Path, source: _Source, names: Sequence[str], lengths, offsets) -> np.ndarray:
    matrix = np.zeros((int(offsets[-1]), len(names)), dtype=bool)
    for column, name in enumerate(names):
        matrix[:, column] = _per_step(path, source, name, lengths, offsets) == 1
    return matrix


def _metadata(path: Path, source: _Source) -> dict:
    metadata: dict = {}
    full_path = source.string("full_path") if "full_path" in source.fields else None
    for candidate in (str(path.resolve()), full_path):
        if candidate:
            for key, value in metadata_from_path(candidate).items():
                metadata.setdefault(key, value)
    for field in METADATA_FIELDS:
        if field in source.fields:
            value = source.string(field)
            if value:
                metadata[field] = value  # the file's own protocol wins over the path's
    return metadata


def metadata_from_path(path: str | Path) -> dict:
    """``tracker``, ``genotype``, ``effector``, ``protocol``, ``date_time`` from a
    screen path ``<tracker>/<genotype>@<effector>/<protocol>/<date_time>/<file>``.

    Only parts that fit the convention are returned (SPEC §4.2). Both ``/``
    and ``\\`` separate directories (``full_path`` may come from Windows).
    """
    parts = [p for p in re.split(r"[\\/]+", str(path)) if p]
    found: dict = {}
    if len(parts) < 2 or not _DATE_TIME.match(parts[-2]):
        return found
    found["date_time"] = parts[-2]
    if len(parts) >= 3 and parts[-3].count("#") == 3:
        found["protocol"] = parts[-3]
        if len(parts) >= 4 and parts[-4].count("@") == 1:
            genotype, effector = parts[-4].split("@")
            if genotype and effector:
                found["genotype"], found["effector"] = genotype, effector
                if len(parts) >= 5 and re.match(r"^t\d+$", parts[-5]):
                    found["tracker"] = parts[-5]
    return {key: found[key] for key in ("tracker", "genotype", "effector", "protocol", "date_time")
            if key in found}


# -------------------------------------------------------------------- writing
def write_trxmat(run: Run, path: str | Path, version: str = "7.3", *,
                 compression: str | None = None) -> None:
    """Write ``run`` as a ``trx.mat`` file, atomically.

    Args:
        run: the run; every tag becomes a per-larva ±1 double field (names must
            be MATLAB identifiers, and not clash with the geometry fields).
        path: output file.
        version: ``"7.3"`` (HDF5, MATLAB's layout, see the module docstring)
            or ``"5"`` (``scipy.io.savemat``, compressed; ``"7"`` is an alias).
        compression: v7.3 only: ``None`` (default, fastest to read) or
            ``"gzip"`` (deflate, as MATLAB does for large arrays).

    Fields written per larva: ``t`` (n x 1), ``x_spine``/``y_spine`` (n x
    points), ``x_contour``/``y_contour`` (n x the larva's largest vertex count,
    NaN-padded) when the run has outlines, ``numero_larva_num``, ``id``
    (run id), the tags, and ``protocol``/``neuron``/``pipeline``/``stimuli``
    when they are string entries of ``run.metadata``.
    """
    path = as_path(path)
    version = str(version)
    if version not in ("7.3", "73", "5", "7"):
        raise ValueError(f"unsupported MAT-file version {version!r} (use '7.3' or '5')")
    fields = _fields_to_write(run)
    with atomic_path(path) as tmp:
        if version in ("7.3", "73"):
            _write_v73(run, fields, tmp, compression)
        else:
            _write_v5(run, fields, tmp)


def _fields_to_write(run: Run) -> list[tuple[str, Callable[[int, int, int], np.ndarray | str]]]:
    """(name, getter(track, lo, hi)) pairs; getters return MATLAB-oriented values."""
    for name in run.tag_names:
        if not _MATLAB_NAME.match(name):
            raise ValidationError(f"tag {name!r} is not a valid MATLAB field name; "
                                  "rename it before writing trx.mat")
        if name in _GEOMETRY_FIELDS or name in METADATA_FIELDS:
            raise ValidationError(f"tag {name!r} clashes with a trx.mat field of the same name")
    fields: list = [
        ("t", lambda i, lo, hi: run.t[lo:hi, None]),
        ("x_spine", lambda i, lo, hi: run.spine[lo:hi, :, 0]),
        ("y_spine", lambda i, lo, hi: run.spine[lo:hi, :, 1]),
    ]
    if run.outline is not None:
        counts = outline_vertex_counts(run.outline)

        def contour(axis):
            def get(i, lo, hi):
                width = int(counts[lo:hi].max()) if hi > lo else 0
                return run.outline[lo:hi, :width, axis].astype(np.float64)
            return get

        fields += [("x_contour", contour(0)), ("y_contour", contour(1))]
    fields.append(("numero_larva_num", lambda i, lo, hi: np.array([[float(run.larva_ids[i])]])))
    fields.append(("id", lambda i, lo, hi: run.id))
    for column, name in enumerate(run.tag_names):
        fields.append((name, lambda i, lo, hi, c=column: np.where(run.tags[lo:hi, c], 1.0, -1.0)[:, None]))
    for name in METADATA_FIELDS:
        value = run.metadata.get(name)
        if isinstance(value, str):
            fields.append((name, lambda i, lo, hi, v=value: v))
    return fields


def matlab_header(version: str = "7.3", when: datetime.datetime | None = None) -> bytes:
    """The 128-byte MAT-file header MATLAB puts in a v7.3 file's user block."""
    when = when or datetime.datetime.now()
    text = (f"MATLAB {version} MAT-file, Platform: GLNXA64, Created on: "
            f"{when.strftime('%a %b %d %H:%M:%S %Y')} HDF5 schema 1.00 .")
    return text.encode("ascii").ljust(116, b" ")[:116] + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _refs_names():
    """Names of objects in ``#refs#``, as MATLAB makes them: b, c, ..., Z, ba, ..."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    k = 1  # "a" is the canonical empty
    while True:
        digits, value = [], k
        while True:
            digits.append(alphabet[value % 52])
            value //= 52
            if value == 0:
                break
        yield "".join(reversed(digits))
        k += 1


def _write_v73(run: Run, fields, tmp: Path, compression: str | None) -> None:
    import h5py

    vlen_s1 = h5py.vlen_dtype(np.dtype("S1"))
    names = [name for name, _ in fields]
    field_names = np.empty(len(names), dtype=object)
    for k, name in enumerate(names):
        field_names[k] = np.array([c.encode("ascii") for c in name], dtype="S1")
    options = {"compression": compression} if compression else {}
    with h5py.File(tmp, "w", userblock_size=USERBLOCK_SIZE, libver=("earliest", "v108")) as f:
        trx = f.create_group("trx")
        trx.attrs.create("MATLAB_class", np.bytes_(b"struct"))
        trx.attrs.create("MATLAB_fields", field_names, dtype=vlen_s1)
        if run.n_tracks == 1:  # a 1x1 struct: fields hold the values directly
            lo, hi = int(run.offsets[0]), int(run.offsets[1])
            for name, get in fields:
                _write_value(trx, name, get(0, lo, hi), options)
        else:
            _write_struct_array(f, trx, run, fields, options)
    with open(tmp, "r+b") as handle:
        handle.write(matlab_header())


def _write_struct_array(f, trx, run: Run, fields, options: dict) -> None:
    import h5py

    names = [name for name, _ in fields]
    refs_group = f.create_group("#refs#")
    empty = refs_group.create_dataset("a", data=np.zeros(2, dtype=np.uint64))
    empty.attrs.create("MATLAB_class", np.bytes_(b"canonical empty"))
    empty.attrs.create("MATLAB_empty", np.uint8(1))
    refs = {name: np.empty((1, run.n_tracks), dtype=h5py.ref_dtype) for name in names}
    new_name = _refs_names()
    for i in range(run.n_tracks):
        lo, hi = int(run.offsets[i]), int(run.offsets[i + 1])
        for name, get in fields:
            dataset = _write_value(refs_group, next(new_name), get(i, lo, hi), options)
            refs[name][0, i] = dataset.ref
    for name in names:  # an n x 1 struct array: HDF5 shape (1, n); no MATLAB_class
        trx.create_dataset(name, data=refs[name], dtype=h5py.ref_dtype)


def _write_value(group, name: str, value, options: dict):
    if isinstance(value, str):
        codes = np.frombuffer(value.encode("utf-16-le"), dtype=np.uint16)
        if codes.size == 0:
            dataset = group.create_dataset(name, data=np.array([0, 0], dtype=np.uint64))
            dataset.attrs.create("MATLAB_class", np.bytes_(b"char"))
            dataset.attrs.create("MATLAB_empty", np.uint8(1))
            return dataset
        dataset = group.create_dataset(name, data=codes.reshape(-1, 1))  # 1 x n char, transposed
        dataset.attrs.create("MATLAB_class", np.bytes_(b"char"))
        dataset.attrs.create("MATLAB_int_decode", np.int32(2))
        return dataset
    value = np.asarray(value, dtype=np.float64)
    if value.size == 0:
        dataset = group.create_dataset(name, data=np.array(value.shape[::-1] or (0, 0), dtype=np.uint64))
        dataset.attrs.create("MATLAB_class", np.bytes_(b"double"))
        dataset.attrs.create("MATLAB_empty", np.uint8(1))
        return dataset
    data = np.ascontiguousarray(value.T)  # column-major on disk
    # compressed: one chunk per array (many small chunks make reading slow)
    kwargs = {**options, "chunks": data.shape} if options and data.size >= 64 else {}
    dataset = group.create_dataset(name, data=data, **kwargs)
    dataset.attrs.create("MATLAB_class", np.bytes_(b"double"))
    return dataset


def _write_v5(run: Run, fields, tmp: Path) -> None:
    import scipy.io

    dtype = [(name, object) for name, _ in fields]
    trx = np.empty((run.n_tracks, 1), dtype=dtype)
    for i in range(run.n_tracks):
        lo, hi = int(run.offsets[i]), int(run.offsets[i + 1])
        for name, get in fields:
            value = get(i, lo, hi)
            trx[i, 0][name] = value if isinstance(value, str) else np.array(value, dtype=np.float64)
    with open(tmp, "wb") as handle:
        scipy.io.savemat(handle, {"trx": trx}, format="5", do_compression=True, oned_as="column")


# ------------------------------------------------------- editing a copy in place
def replace_struct_fields(source: str | Path, path: str | Path, fields: dict[str, list],
                          drop: Sequence[str] = (), variables: dict[str, str] | None = None) -> None:
    """Write at ``path`` a copy of the MAT-file ``source`` whose ``trx`` struct array has
    the per-larva ``fields`` (name → one MATLAB-oriented array per element, in element
    order) added or replaced and the fields in ``drop`` removed; every other field and
    variable is kept as it was. ``variables`` adds top-level char variables.

    Why a copy and not :func:`write_trxmat`: screen files hold dozens of fields this
    project does not read (velocities, JBM summaries); MATLAB analyses need them all.
    A v7.3 file is copied byte for byte and edited with h5py (the user block with the
    MATLAB header is kept); a v5/v7 file is read and written with scipy. Atomic.
    """
    source, path = as_path(source), as_path(path)
    for name in list(fields) + list(variables or {}):
        if not _MATLAB_NAME.match(name):
            raise ValidationError(f"{name!r} is not a valid MATLAB field name")
    head = _read_head(source)
    with atomic_path(path) as tmp:
        if head.startswith(V73_SIGNATURE):
            import shutil

            shutil.copyfile(source, tmp)
            _replace_v73(source, tmp, fields, set(drop), variables or {})
        elif head.startswith(V5_SIGNATURE):
            _replace_v5(source, tmp, fields, set(drop), variables or {})
        else:
            raise FormatError(source, "is not a MATLAB MAT-file")


def _field_names(trx) -> list[str]:
    raw = trx.attrs.get("MATLAB_fields")
    if raw is None:
        return list(trx.keys())
    return [b"".join(np.asarray(chars).tolist()).decode("ascii") for chars in raw]


def _replace_v73(source: Path, tmp: Path, fields: dict, drop: set, variables: dict) -> None:
    import h5py

    with h5py.File(tmp, "r+") as f:
        if "trx" not in f or not isinstance(f["trx"], h5py.Group):
            raise FormatError(source, "has no `trx` struct array")
        trx = f["trx"]
        elements = _V73Source(source, f, trx)
        for name, values in fields.items():
            if len(values) != elements.n_larvae:
                raise ValueError(f"field {name}: {len(values)} values for {elements.n_larvae} larvae")
        names = [n for n in _field_names(trx) if n not in drop and n not in fields]
        for name in set(trx.keys()) - set(names):
            del trx[name]  # its #refs# data stay unreferenced: never shared, never read
        if elements.scalar:
            for name, values in fields.items():
                _write_value(trx, name, values[0], {})
        else:
            refs_group = f.require_group("#refs#")
            shape = next(trx[n].shape for n in names if isinstance(trx.get(n), h5py.Dataset))
            fresh = (n for n in _refs_names() if n not in refs_group)
            for name, values in fields.items():
                refs = np.empty(elements.n_larvae, dtype=h5py.ref_dtype)
                for i, value in enumerate(values):
                    refs[i] = _write_value(refs_group, next(fresh), value, {}).ref
                trx.create_dataset(name, data=refs.reshape(shape), dtype=h5py.ref_dtype)
        all_names = names + list(fields)
        encoded = np.empty(len(all_names), dtype=object)
        for k, name in enumerate(all_names):
            encoded[k] = np.array([c.encode("ascii") for c in name], dtype="S1")
        trx.attrs.create("MATLAB_fields", encoded, dtype=h5py.vlen_dtype(np.dtype("S1")))
        for name, text in variables.items():
            if name in f:
                del f[name]
            _write_value(f, name, text, {})


def _replace_v5(source: Path, tmp: Path, fields: dict, drop: set, variables: dict) -> None:
    import scipy.io

    contents = scipy.io.loadmat(str(source), squeeze_me=False, struct_as_record=True,
                                chars_as_strings=True)
    trx = contents.get("trx")
    if not isinstance(trx, np.ndarray) or trx.dtype.names is None:
        raise FormatError(source, "has no `trx` struct array")
    for name, values in fields.items():
        if len(values) != trx.size:
            raise ValueError(f"field {name}: {len(values)} values for {trx.size} larvae")
    kept = [n for n in trx.dtype.names if n not in drop and n not in fields]
    flat_in = trx.ravel(order="F")
    flat_out = np.empty(trx.size, dtype=[(n, object) for n in kept + list(fields)])
    for i in range(trx.size):
        for name in kept:
            flat_out[i][name] = flat_in[i][name]
        for name, values in fields.items():
            value = values[i]
            flat_out[i][name] = value if isinstance(value, str) else np.array(value, dtype=np.float64)
    variables_out = {k: v for k, v in contents.items() if not k.startswith("__")}
    variables_out["trx"] = flat_out.reshape(trx.shape, order="F")
    variables_out.update(variables)
    with open(tmp, "wb") as handle:
        scipy.io.savemat(handle, variables_out, format="5", do_compression=True, oned_as="column")


SPEC = FormatSpec(
    name="trxmat",
    description="trx.mat from the JBM tagger / Larva Screen pipeline (MATLAB v7.3 HDF5, or v5/v7)",
    suffixes=(".mat",),
    detection="file starts with 'MATLAB 7.3 MAT-file' (HDF5 after a 512-byte user block) or "
              "'MATLAB 5.0 MAT-file'; the `trx` variable is checked when reading",
    is_format=is_trxmat,
    read=read_trxmat,
    write=write_trxmat,
)
