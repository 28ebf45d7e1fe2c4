"""End-to-end tests of the `tagging-backend` command line, in temporary directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taggingbackends import __version__
from taggingbackends.cli import main
from taggingbackends.data.labels import Labels
from taggingbackends.data.tracks import Run
from taggingbackends.formats import load, save

CLI = [sys.executable, "-m", "taggingbackends.cli"]
CHORE_NAME = "20150701_105504@FCF_attP2@UAS_TNT@t15@r_LED50_30s2x15s30s#n#n#n@100.spine"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def small_run(tags: bool = False) -> Run:
    rng = np.random.default_rng(1)
    times, spines, outlines, flags = [], [], [], []
    for n in (6, 9):
        times.append(np.round(0.5 + 0.1 * np.arange(n), 3))
        spines.append(rng.normal(size=(n, 11, 2)).round(3))
        outlines.append(rng.normal(size=(n, 20, 2)).astype(np.float32).round(3))
        flags.append(np.eye(2, dtype=bool)[np.arange(n) % 2])
    return Run.from_tracks("20150701_105504", [3, 8], times, spines, outlines=outlines,
                           tags=flags if tags else None, tag_names=("run", "cast") if tags else ())


def test_version_and_info(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["info"])
    out = capsys.readouterr().out
    assert "numpy" in out and "h5py" in out


def test_formats_lists_every_reader(capsys):
    with pytest.raises(SystemExit):
        main(["formats"])
    out = capsys.readouterr().out
    for name in ("label", "trxmat", "chore", "fimtrack", "schleyer"):
        assert name in out


def test_import_untagged_chore_gives_default_label(tmp_path):
    spine = tmp_path / CHORE_NAME
    save(small_run(), spine)
    out = tmp_path / "imported.label"
    result = cli("import", spine, out)
    assert result.returncode == 0, result.stderr
    labels = Labels.load(out)
    assert labels.run_id == "20150701_105504"
    assert labels[3].labels == ["new behavior"] * 6
    assert {d["filename"] for d in labels.dependencies} >= {CHORE_NAME}
    assert labels.metadata["provenance"]["command"] == "import"
    # the label file is itself a readable input, resolved through its dependency
    tagged = load(out)
    assert tagged.n_steps == 15 and tagged.tag_names == ("new behavior",)
    assert tagged.tags.all()


def test_import_trxmat_tags_and_reimport_of_label(tmp_path):
    trx = tmp_path / "trx.mat"
    run = small_run(tags=True)
    save(run, trx)
    result = cli("import", trx, "--decode")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "trx.label"
    document = json.loads(out.read_text())
    assert document["data"][0]["labels"][:2] == ["run", "cast"]
    again = load(out)
    names = list(again.tag_names)
    assert np.array_equal(again.tags[:, [names.index("run"), names.index("cast")]], run.tags)


def test_import_refuses_to_overwrite(tmp_path):
    spine = tmp_path / CHORE_NAME
    save(small_run(), spine)
    out = tmp_path / "x.label"
    out.write_text("precious manual labels")
    result = cli("import", spine, out)
    assert result.returncode == 1
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert out.read_text() == "precious manual labels"
    assert cli("import", spine, out, "--overwrite").returncode == 0
    assert Labels.load(out).n_steps == 15


@pytest.mark.parametrize("content", [b"", b"garbage that is no tracking file\n", b"\x89HDF\r\n\x1a\n\x00"])
def test_bad_input_is_one_line_error(tmp_path, content):
    bad = tmp_path / "bad.mat"
    bad.write_bytes(content)
    result = cli("import", bad)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.mat" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad.label").exists()


def test_debug_shows_traceback(tmp_path):
    result = cli("--debug", "import", tmp_path / "missing.mat")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_usage_error_exit_code_2():
    assert cli("import").returncode == 2
    assert cli("no-such-command").returncode == 2


def test_convert_between_formats(tmp_path):
    spine = tmp_path / CHORE_NAME
    run = small_run()
    save(run, spine)
    trx = tmp_path / "trx.mat"
    assert cli("convert", spine, trx).returncode == 0
    back = load(trx)
    np.testing.assert_allclose(back.spine, run.spine, atol=1e-6)
    np.testing.assert_allclose(back.t, run.t, atol=1e-9)
    assert cli("convert", spine, trx).returncode == 1  # exists


@pytest.mark.parametrize("fmt", ["chore", "trxmat", "fimtrack", "schleyer"])
def test_simulate_writes_tracking_and_ground_truth(tmp_path, fmt):
    out = tmp_path / fmt
    result = cli("simulate", out, "--larvae", "3", "--duration", "12", "--seed", "4", "--format", fmt)
    assert result.returncode == 0, result.stderr
    truth = out / "groundtruth.label"
    labels = Labels.load(truth)
    assert set(labels.used_names()) <= {"run", "cast", "back", "hunch", "roll", "stop", "small_motion"}
    tagged = load(truth)  # tracking data come through the dependency
    assert tagged.n_tracks == len(labels) == 3
    assert tagged.tags.any(axis=1).all()  # every step has its ground truth


def test_simulate_is_reproducible(tmp_path):
    for name in ("a", "b"):
        assert cli("simulate", tmp_path / name, "-n", "2", "--duration", "5", "--seed", "9").returncode == 0
    spines_a = sorted((tmp_path / "a").glob("*.spine"))
    spines_b = sorted((tmp_path / "b").glob("*.spine"))
    assert spines_a[0].read_bytes() == spines_b[0].read_bytes()
    assert Labels.load(tmp_path / "a" / "groundtruth.label")[1].labels == \
        Labels.load(tmp_path / "b" / "groundtruth.label")[1].labels


def test_framework_does_not_import_torch():
    code = ("import sys, taggingbackends, taggingbackends.cli, taggingbackends.formats, "
            "taggingbackends.data.labels, taggingbackends.simulate; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_command_help_has_an_example():
    """Issue 5: `--help` on every command shows a command to paste."""
    from typer.main import get_command

    from taggingbackends.cli import app

    group = get_command(app)
    assert len(group.commands) >= 12
    for name, command in group.commands.items():
        assert "Example" in (command.help or ""), f"{name} --help has no example"
