"""Containers, codecs and pixel formats that corpora hold besides H.264 in MP4, made from a
real clip: each probes, exports and keeps its frame count and timestamps; streams other
than the first video stream (an interpreter's voice) never reach an export, and the
sidecar says so."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from napari_diffslva.cli import main
from napari_diffslva.video import probe, read_frames

FRAMES = 10


def _write(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, audio: bool = False) -> Path:
    """``frames`` encoded with ``codec`` at 29.97 fps, with a silent mono track if ``audio``."""
    import av

    rate = 48000
    per_frame = rate * 1001 // 30000
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=Fraction(30000, 1001))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        sound = out.add_stream("aac", rate=rate) if audio else None
        for i, rgb in enumerate(frames):
            out.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            if sound is not None:
                chunk = av.AudioFrame.from_ndarray(
                    np.zeros((1, per_frame), np.float32), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = rate, i * per_frame
                out.mux(sound.encode(chunk))
        out.mux(video.encode())
        if sound is not None:
            out.mux(sound.encode())
    return path


@pytest.fixture(scope="module")
def soup(real_clip):
    return read_frames(real_clip("sl_soup.mp4"), 0, FRAMES)


@pytest.mark.parametrize(
    "name, codec, pix_fmt",
    [
        ("vp9.webm", "libvpx-vp9", "yuv420p"),  # WebM/Matroska: 1 ms time base
        ("ffv1.mkv", "ffv1", "yuv444p"),
        ("hevc_10bit.mp4", "libx265", "yuv420p10le"),
        ("prores.mov", "prores_ks", "yuv422p10le"),
        ("mpeg4.avi", "mpeg4", "yuv420p"),
    ],
)
def test_other_formats_export_with_their_frames_and_timing(soup, tmp_path, name, codec, pix_fmt):
    import av

    try:
        av.codec.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:  # PyAV wheels ship it; other FFmpeg builds may not
        pytest.skip(f"this PyAV's FFmpeg has no {codec} encoder to make the test file with")
    src = _write(tmp_path / name, soup, codec, pix_fmt)
    info = probe(src)
    assert info.frames == FRAMES and (info.width, info.height) == (320, 240)
    assert info.pix_fmt == pix_fmt and info.other_streams == ()
    out = tmp_path / "out.mp4"
    assert main(["export", str(src), str(out)]) == 0
    back = probe(out)
    assert back.frames == FRAMES
    np.testing.assert_allclose(back.timing.timestamps, info.timing.timestamps, atol=1e-3)
    decoded = read_frames(src)
    assert np.abs(read_frames(out).astype(int) - decoded.astype(int)).mean() < 3.0
    assert not Path(f"{out}.json").exists()  # a sidecar only where the export departs


def test_audio_is_never_exported_and_the_sidecar_says_so(soup, tmp_path, capsys):
    import av

    src = _write(tmp_path / "with_voice.mp4", soup, "h264", "yuv420p", audio=True)
    info = probe(src)
    assert info.other_streams == ("audio",) and info.frames == FRAMES
    assert main(["probe", str(src)]) == 0
    assert "(1 audio) are not used and not copied" in capsys.readouterr().out
    out = tmp_path / "out.mp4"
    assert main(["export", str(src), str(out)]) == 0
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video"]
    (note,) = json.loads(Path(f"{out}.json").read_text())["deviations"]
    assert "1 audio" in note and "a voice identifies a person" in note
