"""Frame-exact reading of the real clips: counts, rates, timestamps, seeking, laziness."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from conftest import REAL_CLIPS
from napari_diffslva.video import VideoReader, VideoTiming, as_dask, probe, read_frames


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_probe_matches_published_facts(real_clip, name):
    frames, fps, (w, h) = REAL_CLIPS[name]
    info = probe(real_clip(name))
    assert info.frames == frames
    assert (info.width, info.height) == (w, h)
    if fps is not None:
        assert info.fps == pytest.approx(fps, abs=0.01)
    ts = info.timing.timestamps
    assert ts[0] == 0 and np.all(np.diff(ts) > 0)
    # duration = last timestamp + one frame
    assert info.duration == pytest.approx(ts[-1] + np.median(np.diff(ts)), abs=0.011)


def test_exact_rational_rate_is_kept(real_clip):
    info = probe(real_clip("sl_soup.mp4"))
    assert info.rate == Fraction(2997, 100)
    assert info.to_dict()["rate"] == "2997/100"


def test_variable_rate_gif_keeps_per_frame_durations(real_clip):
    info = probe(real_clip("asl_different.gif"))
    steps = np.round(np.diff(info.timing.timestamps), 3)
    assert info.timing.variable_rate
    assert set(steps) == {0.03, 0.04}


@pytest.mark.parametrize("name", ["face_talking.mp4", "asl_selfie_webcam.mp4", "asl_different.gif"])
def test_seek_returns_the_exact_frame(real_clip, name):
    with VideoReader(real_clip(name)) as reader:
        sequential = [reader[i] for i in range(len(reader))]
    with VideoReader(real_clip(name)) as reader:
        rng = np.random.default_rng(0)
        for i in list(rng.permutation(len(reader))[:12]) + [len(reader) - 1, 0]:
            assert np.array_equal(reader[int(i)], sequential[int(i)]), f"frame {i}"
    # neighbouring frames really differ, so a seek landing one frame off would fail above
    pairs = zip(sequential[:5], sequential[1:6], strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)


def test_dask_array_decodes_only_requested_frames(real_clip):
    reader = VideoReader(real_clip("face_talking.mp4"))
    calls = []
    original = reader._read_video_frame
    reader._read_video_frame = lambda i: calls.append(i) or original(i)
    arr = as_dask(reader)
    assert arr.shape == (169, 412, 410, 3) and arr.dtype == np.uint8
    assert calls == []
    frame = arr[90].compute()
    assert calls == [90]
    assert np.array_equal(frame, original(90))


def test_images_and_image_folders(real_clip, tmp_path):
    import cv2

    one = read_frames(real_clip("faces/obama_1.jpg"))
    assert one.shape[0] == 1 and one.shape[-1] == 3
    frames = read_frames(real_clip("sl_soup.mp4"), 0, 12)
    for i, f in enumerate(frames):  # unpadded numbers must still sort numerically
        cv2.imwrite(str(tmp_path / f"img{i}.png"), f[..., ::-1])
    info = probe(tmp_path)
    assert info.frames == 12 and info.rate == Fraction(25)
    assert np.array_equal(read_frames(tmp_path), frames)


def test_grey_and_alpha_images_become_rgb(tmp_path):
    import cv2

    grey = np.tile(np.arange(64, dtype=np.uint8), (48, 1))
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    bgra = np.dstack([grey, grey, grey, np.full_like(grey, 128)])
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    for name in ("grey.png", "alpha.png"):
        rgb = read_frames(tmp_path / name)[0]
        assert rgb.shape == (48, 64, 3)
        assert np.array_equal(rgb[..., 0], grey)


def test_constant_timing_helper():
    t = VideoTiming.constant(10, Fraction(30000, 1001))
    assert t.duration == pytest.approx(10 * 1001 / 30000)
    assert not t.variable_rate
    assert VideoTiming.from_dict(t.to_dict()) == t
