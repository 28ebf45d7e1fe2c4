"""Property-based fuzzing of every reader (hypothesis): valid tiny files mangled at
random must read either as a valid :class:`Run` or fail with exactly one
:class:`FormatError` naming one of the input files; never another exception, never a
hang (a hard alarm per case, plus hypothesis' deadline), never a file written.

Mangling: truncation at any byte, flipped bytes, inserted garbage, tokens swapped for
missing-value tokens, shuffled or dropped columns, duplicated rows, header lines;
one to three of them per case. Deterministic (``derandomize=True``), a few seconds
per reader (``FUZZ_EXAMPLES=2000`` for a longer search; 2,000 random cases per reader
found no counter-example when this was written, so no regression file is kept yet:
a counter-example goes to ``tests/data/<format>/fuzz/`` with a test that reads it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from taggingbackends.data.tracks import Run
from taggingbackends.errors import AssumedValueWarning, FormatError
from taggingbackends.formats import load

DATA = Path(__file__).parent / "data"
CHORE_SPINE = next((DATA / "chore").glob("*.spine"))
MISSING_TOKENS = (b"", b"na", b"NA", b"NaN", b"nan", b"-nan", b"  na   ", b"N/A")
GARBAGE = (b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\r", b"\n", b",", b";", b"\t", b" ", b"\"", b"-",
           b"e", b"1e999", b"inf", b"9" * 30, b"larva(", b"@", "é".encode())
CASE_SECONDS = 10  # hard bound per case (a hang fails the test instead of blocking CI)

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), derandomize=True, deadline=3000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                database=None)


# ------------------------------------------------------------------ mangling
def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def truncate(draw, data: bytes, sep: bytes) -> bytes:
    return data[:draw(st.integers(0, len(data)))]


def flip(draw, data: bytes, sep: bytes) -> bytes:
    if not data:
        return data
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]


def insert_garbage(draw, data: bytes, sep: bytes) -> bytes:
    i = draw(st.integers(0, len(data)))
    junk = draw(st.sampled_from(GARBAGE) | st.binary(min_size=1, max_size=8))
    return data[:i] + junk + data[i:]


def missing_token(draw, data: bytes, sep: bytes) -> bytes:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    fields = lines[i].split(sep)
    j = draw(st.integers(0, len(fields) - 1))
    fields[j] = draw(st.sampled_from(MISSING_TOKENS))
    lines[i] = sep.join(fields)
    return b"\n".join(lines)


def missing_row(draw, data: bytes, sep: bytes) -> bytes:
    """Every field of a row but the first ones (ids, frame, time) a missing token."""
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    keep = draw(st.integers(0, 3))
    token = draw(st.sampled_from(MISSING_TOKENS))
    fields = lines[i].split(sep)
    lines[i] = sep.join(fields[:keep] + [token] * (len(fields) - keep))
    return b"\n".join(lines)


def shuffle_columns(draw, data: bytes, sep: bytes) -> bytes:
    lines = [line.split(sep) for line in _lines(data)]
    width = max(len(f) for f in lines)
    order = draw(st.permutations(range(min(width, 8))))
    out = []
    for fields in lines:
        head = [fields[k] for k in order if k < len(fields)]
        out.append(sep.join(head + fields[len(order):]))
    return b"\n".join(out)


def drop_column(draw, data: bytes, sep: bytes) -> bytes:
    lines = [line.split(sep) for line in _lines(data)]
    j = draw(st.integers(0, max(len(f) for f in lines) - 1))
    return b"\n".join(sep.join(f[:j] + f[j + 1:]) for f in lines)


def duplicate_row(draw, data: bytes, sep: bytes) -> bytes:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines)))
    return b"\n".join(lines[:j] + [lines[i]] + lines[j:])


def header_line(draw, data: bytes, sep: bytes) -> bytes:
    header = draw(st.sampled_from([b"frame" + sep + b"x" + sep + b"y", b"# comment", b"", sep * 3,
                                   b"larva" + sep + b"time", _lines(data)[0].upper()]))
    return header + b"\n" + data


TEXT_MANGLERS = (truncate, flip, insert_garbage, missing_token, missing_row, shuffle_columns, drop_column,
                 duplicate_row, header_line)
BINARY_MANGLERS = (truncate, flip, insert_garbage)


@st.composite
def mangled(draw, data: bytes, sep: bytes, manglers=TEXT_MANGLERS) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        data = draw(st.sampled_from(manglers))(draw, data, sep)
    return data


# ------------------------------------------------------------------- checking
@contextlib.contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"a read took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def listing(directory: Path) -> dict:
    return {p.relative_to(directory): p.stat().st_size for p in directory.rglob("*")}


def check_read(target: Path, inputs: list[Path], **options) -> Run | FormatError:
    """Read ``target``: a valid Run, or one FormatError naming an input (never another
    exception); nothing is written beside the inputs."""
    root = inputs[0].parent
    before = listing(root)
    try:
        with time_limit(CASE_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore", AssumedValueWarning)
            result = load(target, **options)
    except FormatError as err:
        message = str(err)
        assert "\n" not in message.strip(), f"a multi-line message: {message!r}"
        named = {target, *inputs, root}
        assert err.path is not None and any(err.path == p or err.path.resolve() == p.resolve()
                                            for p in named), message
        assert str(err.path) in message
        event(f"FormatError: {err.problem.split(':')[0][:40]}")
        result = err
    else:
        assert isinstance(result, Run)
        result.validate()
        assert result.n_steps > 0
        assert not np.isinf(result.spine).any()
        event("a valid run")
    assert listing(root) == before, "a reader wrote a file"
    return result


@contextlib.contextmanager
def workdir():
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        yield Path(tmp)


# --------------------------------------------------------------- the readers
SCHLEYER_LINES = (DATA / "schleyer" / "dish01" / "17.csv").read_bytes().split(b"\n")[10:16]
SCHLEYER = b"\n".join(SCHLEYER_LINES) + b"\n"   # rows 11-16 of 17.csv: valid and collision rows
FIMTRACK = (DATA / "fimtrack" / "table.csv").read_bytes()
SPINE = CHORE_SPINE.read_bytes()
OUTLINE = CHORE_SPINE.with_suffix(".outline").read_bytes()


@FUZZ
@given(data=mangled(SCHLEYER, b","), as_directory=st.booleans(), auto=st.booleans())
def test_fuzz_schleyer(data, as_directory, auto):
    with workdir() as tmp:
        path = tmp / "dish" / "17.csv"
        path.parent.mkdir()
        path.write_bytes(data)
        check_read(path.parent if as_directory else path, [path], format="auto" if auto else "schleyer")


@FUZZ
@given(data=mangled(FIMTRACK, b","), auto=st.booleans())
def test_fuzz_fimtrack(data, auto):
    with workdir() as tmp:
        path = tmp / "table.csv"
        path.write_bytes(data)
        check_read(path, [path], format="auto" if auto else "fimtrack")


@FUZZ
@given(data=st.sampled_from([SPINE, OUTLINE]).flatmap(lambda d: mangled(d, b" ")),
       which=st.sampled_from(["spine", "outline"]), auto=st.booleans())
def test_fuzz_chore(data, which, auto):
    with workdir() as tmp:
        spine = tmp / CHORE_SPINE.name
        outline = spine.with_suffix(".outline")
        spine.write_bytes(SPINE)
        outline.write_bytes(OUTLINE)
        # (the outline has the spine's line structure: the same manglings apply)
        (spine if which == "spine" else outline).write_bytes(data)
        check_read(spine, [spine, outline], format="auto" if auto else "chore")


@pytest.fixture(scope="module")
def trxmat_bytes():
    from taggingbackends.formats.trxmat import write_trxmat

    run = load(CHORE_SPINE)
    with workdir() as tmp:
        write_trxmat(run, tmp / "trx.mat")
        return (tmp / "trx.mat").read_bytes()


def test_fuzz_trxmat(trxmat_bytes):
    @FUZZ
    @given(data=mangled(trxmat_bytes, b"\n", BINARY_MANGLERS), auto=st.booleans())
    def run(data, auto):
        with workdir() as tmp:
            path = tmp / "trx.mat"
            path.write_bytes(data)
            check_read(path, [path], format="auto" if auto else "trxmat")

    run()


@pytest.fixture(scope="module")
def label_bytes():
    from taggingbackends.data.labels import Labels

    run = load(CHORE_SPINE)
    with workdir() as tmp:
        spine = tmp / CHORE_SPINE.name
        shutil.copy(CHORE_SPINE, spine)
        shutil.copy(CHORE_SPINE.with_suffix(".outline"), spine.with_suffix(".outline"))
        labels = Labels.from_run(run, default_label="run", tracking=[spine])
        labels.dump(tmp / "x.label")
        return (tmp / "x.label").read_bytes()


def test_fuzz_label(label_bytes):
    @FUZZ
    @given(data=mangled(label_bytes, b","), auto=st.booleans())
    def run(data, auto):
        with workdir() as tmp:
            spine = tmp / CHORE_SPINE.name
            shutil.copy(CHORE_SPINE, spine)
            shutil.copy(CHORE_SPINE.with_suffix(".outline"), spine.with_suffix(".outline"))
            path = tmp / "x.label"
            path.write_bytes(data)
            check_read(path, [path, spine, spine.with_suffix(".outline")],
                       format="auto" if auto else "label")

    run()
