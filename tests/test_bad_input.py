"""Bad input: one clear line naming the file and the problem, exit code 2, nothing left."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_diffslva.cli import main
from napari_diffslva.errors import VideoError
from napari_diffslva.export import write_video
from napari_diffslva.video import VideoReader, probe, read_frames


def _encode(path, frames, codec="libx264", pix_fmt="yuv420p", fmt="rgb24", rate=25):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(arr, format=fmt)
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _cli_error(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def bad_files(tmp_path, real_clip):
    files = {}
    files["empty"] = tmp_path / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.mp4"
    files["text"].write_text("these are my field notes, not a video\n" * 20)
    # sl_soup.mp4 keeps its index (moov) at the end: cut, nothing says where its frames are.
    # (A cut file whose index comes first is readable: see test_video_damaged.py.)
    data = real_clip("sl_soup.mp4").read_bytes()
    files["truncated"] = tmp_path / "truncated.mp4"
    files["truncated"].write_bytes(data[: len(data) // 3])
    rng = np.random.default_rng(0)
    mjpeg = _encode(
        tmp_path / "mjpeg.avi",
        rng.integers(0, 255, (3, 48, 64, 3), np.uint8),
        codec="mjpeg",
        pix_fmt="yuvj420p",
    )
    files["codec"] = tmp_path / "unknown_codec.avi"
    files["codec"].write_bytes(mjpeg.read_bytes().replace(b"MJPG", b"ZQZQ"))
    files["huge"] = _encode(tmp_path / "huge.mp4", [np.zeros((64, 8200, 3), np.uint8)])
    return files


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("empty", "empty"),
        ("text", "not a readable video"),
        ("truncated", "not a readable video"),
        ("codec", "unsupported codec"),
        ("huge", "larger than"),
    ],
)
def test_bad_inputs_give_one_clear_line(bad_files, capsys, tmp_path, kind, needle):
    path = bad_files[kind]
    with pytest.raises(VideoError, match=needle):
        probe(path)
    out = tmp_path / "out.mp4"
    code, err = _cli_error(capsys, "export", str(path), str(out))
    assert code == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(path) in errors[0] and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


def test_missing_file(capsys, tmp_path):
    code, err = _cli_error(capsys, "probe", str(tmp_path / "nope.mp4"))
    assert code == 2 and "no such file" in err


def test_one_frame_clip_round_trips(tmp_path, real_clip):
    frame = read_frames(real_clip("sl_soup.mp4"), 0, 1)
    src = write_video(frame, tmp_path / "one.mp4", rate=25)
    info = probe(src)
    assert info.frames == 1 and info.duration == pytest.approx(0.04)
    code = main(["export", str(src), str(tmp_path / "again.mp4")])
    assert code == 0 and probe(tmp_path / "again.mp4").frames == 1


def test_grey_and_alpha_video_read_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (3, 48, 64), np.uint8)
    g = _encode(tmp_path / "grey.mp4", list(grey), pix_fmt="gray", fmt="gray")
    rgba = rng.integers(0, 255, (3, 48, 64, 4), np.uint8)
    a = _encode(tmp_path / "alpha.mov", list(rgba), codec="png", pix_fmt="rgba", fmt="rgba")
    for path in (g, a):
        frames = read_frames(path)
        assert frames.shape == (3, 48, 64, 3) and frames.dtype == np.uint8
    assert np.array_equal(read_frames(a), rgba[..., :3])


def test_rotation_is_applied_to_frames_and_size(real_clip):
    """A phone clip stored landscape with a 90 degree display matrix comes out portrait."""
    path = real_clip("sl_soup.mp4")
    info = probe(path)
    rotated = dataclasses.replace(info, rotation=90, width=info.height, height=info.width)
    with VideoReader(path, info=info) as plain, VideoReader(path, info=rotated) as turned:
        a, b = plain[3], turned[3]
    assert b.shape == (info.width, info.height, 3)
    assert np.array_equal(b, np.rot90(a))
    assert turned.shape == (41, 320, 240, 3)
