"""User-caused failures: one line on stderr, exit code 2, nothing written, before any work.

Every case the settings review listed: wrong types in a config file, misspelled choices
(caught by batch planning too), an out-of-range encoder value, and read-only output
folders for export, prepare and anonymize.
"""

from __future__ import annotations

import pytest

from napari_diffslva.cli import main


def _fails_in_one_line(capsys, argv, words, *watched):
    """Run the CLI; it must exit 2 with one error line holding ``words`` and leave every
    ``watched`` folder as it was."""
    before = {folder: sorted(folder.rglob("*")) for folder in watched}
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    assert words in lines[0], err
    for folder, listing in before.items():
        assert sorted(folder.rglob("*")) == listing, folder


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    "line, words",
    [
        ("prompt = 5", "prompt=5: use a text"),
        ('seed = "x"', "seed='x': use an integer"),
        ('face_parser = "bisnet"', "face_parser='bisnet': use one of landmarks, bisenet"),
        ('edges = "sobel"', "edges='sobel': use one of auto, hed, soft"),
    ],
)
def test_bad_config_values_fail_before_anonymize_starts(
    capsys, real_clip, tmp_path, out, line, words
):
    config = tmp_path / "settings.toml"
    config.write_text(line + "\n")
    argv = ["anonymize", real_clip("sl_soup.mp4"), "-o", out / "x.mp4", "--config", config]
    _fails_in_one_line(capsys, argv, words, out)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--edges", "sobel"], "argument --edges: invalid choice: 'sobel'"),
        (["--face-parser", "bisnet"], "argument --face-parser: invalid choice: 'bisnet'"),
        (["--seed", "x"], "argument --seed: setting seed='x': use an integer"),
        (["--steps", "0"], "setting steps=0: use an integer with 1 <= value"),
    ],
)
def test_bad_flags_fail_in_one_line(capsys, real_clip, out, argv, words):
    cmd = ["anonymize", real_clip("sl_soup.mp4"), "-o", out / "x.mp4", *argv]
    _fails_in_one_line(capsys, cmd, words, out)


def test_crf_out_of_range_fails_before_encoding(capsys, real_clip, out):
    argv = ["export", real_clip("sl_soup.mp4"), out / "x.mp4", "--crf", "-5"]
    _fails_in_one_line(capsys, argv, "crf -5: use an integer from 0", out)


@pytest.mark.parametrize(
    "command",
    [
        lambda clip, folder: ["export", clip, folder / "x.mp4"],
        lambda clip, folder: ["prepare", clip, "-o", folder / "run"],
        lambda clip, folder: ["anonymize", clip, "-o", folder / "x.mp4"],
        lambda clip, folder: [
            "anonymize",
            clip,
            "-o",
            folder.parent / "x.mp4",
            "--run-dir",
            folder / "run",
        ],
    ],
    ids=["export", "prepare", "anonymize", "anonymize-run-dir"],
)
def test_read_only_folder_fails_in_one_line(capsys, real_clip, read_only_dir, command):
    argv = command(real_clip("sl_soup.mp4"), read_only_dir)
    _fails_in_one_line(capsys, argv, f"{read_only_dir}", read_only_dir.parent)


@pytest.mark.parametrize(
    "config, csv, words",
    [
        ("prompt = 5\n", None, "prompt=5: use a text"),
        ('[clips."soup"]\nface_parser = "bisnet"\n', None, "face_parser='bisnet'"),
        (None, "clip,group,edges\nsoup,g,sobel\n", "edges='sobel'"),
        (None, "clip,group,seed\nsoup,g,x\n", "seed='x'"),
    ],
    ids=["base-prompt", "clip-face-parser", "csv-edges", "csv-seed"],
)
def test_batch_planning_catches_bad_settings(capsys, clip_head, tmp_path, config, csv, words):
    clip = clip_head("sl_soup.mp4", 3, "soup.mp4")
    outdir = tmp_path / "batch-out"
    argv = ["batch", clip, "-o", outdir]
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        argv += ["--config", tmp_path / "c.toml"]
    if csv is not None:
        (tmp_path / "g.csv").write_text(csv)
        argv += ["--groups", tmp_path / "g.csv"]
    _fails_in_one_line(capsys, argv, words, tmp_path, clip.parent)
    assert not outdir.exists()


def test_batch_into_a_read_only_folder_fails_before_the_cluster_starts(
    capsys, clip_head, read_only_dir
):
    clip = clip_head("sl_soup.mp4", 3, "soup.mp4")
    argv = ["batch", clip, "-o", read_only_dir / "out"]
    _fails_in_one_line(capsys, argv, str(read_only_dir), read_only_dir.parent)
