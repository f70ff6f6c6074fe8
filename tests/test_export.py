"""Export round trips: frame count, rate, timestamps and duration survive; files are atomic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from napari_diffslva.errors import VideoError
from napari_diffslva.export import write_video
from napari_diffslva.video import VideoReader, VideoTiming, probe, read_frames


def _blurred_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean abs error after a light blur: GIF dither noise is not content."""
    import cv2

    a = cv2.GaussianBlur(a.astype(np.float32), (5, 5), 1.5)
    b = cv2.GaussianBlur(b.astype(np.float32), (5, 5), 1.5)
    return float(np.abs(a - b).mean())


@pytest.mark.parametrize(
    "name", ["sl_soup.mp4", "asl_different.gif", "asl_selfie_webcam.mp4", "sl_tiny_hd_9frames.mp4"]
)
def test_round_trip_keeps_count_rate_timestamps(real_clip, tmp_path, name):
    src = real_clip(name)
    info = probe(src)
    out = tmp_path / "out.mp4"
    with VideoReader(src, info=info) as reader:
        write_video(reader.iter_frames(), out, info.timing)
    back = probe(out)
    assert back.frames == info.frames
    assert (back.width, back.height) == (info.width, info.height)
    assert back.duration == pytest.approx(info.duration, abs=1e-3)
    np.testing.assert_allclose(back.timing.timestamps, info.timing.timestamps, atol=1e-3)
    if not info.timing.variable_rate:
        assert back.rate == info.rate
    a, b = read_frames(src), read_frames(out)
    assert max(_blurred_error(x, y) for x, y in zip(a, b, strict=False)) < 4.0


def test_output_carries_no_source_name_or_tags(real_clip, tmp_path):
    import av

    src = real_clip("sl_soup.mp4")  # its container has a creation_time tag
    out = tmp_path / "anon.mp4"
    write_video(read_frames(src), out, probe(src).timing)
    assert b"sl_soup" not in out.read_bytes()
    with av.open(str(out)) as c:
        assert "creation_time" not in c.metadata
        assert "creation_time" not in c.streams.video[0].metadata


def test_odd_size_keeps_visible_size(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (5, 241, 321, 3), dtype=np.uint8)
    frames[:] = np.clip(frames.astype(int) // 32 * 32, 0, 255)
    for mode, size in (("yuv444", (321, 241)), ("pad", (322, 242))):
        out = write_video(
            frames, tmp_path / f"{mode}.mp4", rate=Fraction(30000, 1001), odd_size=mode
        )
        info = probe(out)
        assert (info.width, info.height) == size
        assert info.frames == 5 and info.rate == Fraction(30000, 1001)


def test_short_gop_every_frame_seekable(tmp_path, real_clip):
    import av

    out = write_video(
        read_frames(real_clip("face_talking.mp4"), 0, 40), tmp_path / "g.mp4", rate=25
    )
    with av.open(str(out)) as c:
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert sum(keys) >= 40 // 12


def test_refuses_existing_output_and_source(tmp_path, real_clip):
    frames = read_frames(real_clip("sl_soup.mp4"), 0, 3)
    timing = VideoTiming.constant(3, Fraction(25))
    out = write_video(frames, tmp_path / "a.mp4", timing)
    before = out.read_bytes()
    with pytest.raises(VideoError, match="already exists"):
        write_video(frames, out, timing)
    assert out.read_bytes() == before
    write_video(frames[::-1].copy(), out, timing, overwrite=True)
    assert out.read_bytes() != before
    with pytest.raises(VideoError, match="source"):
        write_video(frames, out, timing, overwrite=True, protect=[out])


def test_failed_export_leaves_nothing(tmp_path):
    timing = VideoTiming.constant(5, Fraction(25))

    def frames():
        yield np.zeros((64, 64, 3), np.uint8)
        yield np.zeros((64, 64, 3), np.uint8)
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        write_video(frames(), tmp_path / "x.mp4", timing)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VideoError, match="got 1 frames"):
        write_video([np.zeros((64, 64, 3), np.uint8)], tmp_path / "y.mp4", timing)
    assert list(tmp_path.iterdir()) == []
