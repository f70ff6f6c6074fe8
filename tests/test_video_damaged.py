"""Real-world damage, made at test time from the real clips: the frames of a clip are the
frames that decode, checked against decoding the same file with PyAV directly.

Cases: an mp4 whose index (moov first) claims more than its cut data holds; an mkv whose
last packets are lost; an mp4 whose index is complete but whose data stops half-way; an
edit list that hides frames at both ends; one damaged packet in the middle.
"""

from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from napari_diffslva.cli import main
from napari_diffslva.errors import SettingsError
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import (
    DamagedFrameError,
    VideoReader,
    check_frames,
    probe,
    read_frames,
)


# -- making damaged files -------------------------------------------------------------------
def _packets(path: Path) -> list:
    """(pts, file position, size, keyframe) of the video packets, in decode order."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(p.pts, p.pos, p.size, p.is_keyframe) for p in c.demux(s) if p.size]


def _overwrite_packets(src: Path, dst: Path, which: list[int], mode: str = "garbage") -> Path:
    """Copy ``src`` with the data of packets ``which`` (decode order) destroyed in place:
    the index still lists them at their full size."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for i in which:
        _, pos, size, _ = _packets(src)[i]
        if mode == "garbage":
            data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        elif mode == "zero":
            data[pos : pos + size] = bytes(size)
        else:  # "half": the second half of the packet lost; the decoder conceals it
            data[pos + size // 2 : pos + size] = bytes(size - size // 2)
    dst.write_bytes(bytes(data))
    return dst


def _remux(src: Path, dst: Path, *, shift: int = 0, fmt: str | None = None) -> Path:
    """Copy the video packets of ``src`` into ``dst`` unchanged, timestamps moved by
    ``-shift`` (negative timestamps make the mp4 muxer write an edit list that hides them)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt) as o:
        stream = i.streams.video[0]
        out = o.add_stream_from_template(stream)
        for p in i.demux(stream):
            if not p.size:
                continue
            p.pts -= shift
            p.dts -= shift
            p.stream = out
            o.mux(p)
    return dst


def _pyav_clean(path: Path) -> dict[int, np.ndarray]:
    """Every frame PyAV decodes from ``path`` without a decoder error flag, by timestamp."""
    import av

    frames = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for packet in c.demux(s):
            try:
                for f in packet.decode():
                    if not f.is_corrupt:
                        frames[f.pts] = f.to_ndarray(format="rgb24")
            except av.error.FFmpegError:
                pass
    return frames


def _time_base(path: Path) -> Fraction:
    import av

    with av.open(str(path)) as c:
        return Fraction(c.streams.video[0].time_base)


@pytest.fixture(scope="module")
def cases(real_clip, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("damaged")
    soup, talking = real_clip("sl_soup.mp4"), real_clip("face_talking.mp4")
    made = {}
    # face_talking.mp4 has its index (moov) first: cut, the index claims all 169 frames
    data = talking.read_bytes()
    made["index_overcounts"] = folder / "cut.mp4"
    made["index_overcounts"].write_bytes(data[: len(data) // 3])
    # a Matroska stream has no frame index; cut, its header still claims the whole duration
    mkv = _remux(soup, folder / "whole.mkv", fmt="matroska").read_bytes()
    made["last_packets_lost"] = folder / "lost_tail.mkv"
    made["last_packets_lost"].write_bytes(mkv[: len(mkv) * 2 // 3])
    # every packet from 20 on zeroed: the index is complete, the data stops half-way
    made["data_stops"] = _overwrite_packets(soup, folder / "stops.mp4", list(range(20, 41)), "zero")
    # negative timestamps for the first 3 frames: the muxer writes an edit list hiding them;
    # then its segment is shortened to 30 frames, hiding the last 8 too
    edit = _remux(soup, folder / "edit_raw.mp4", shift=3 * 100)  # 100 = one frame
    raw = bytearray(edit.read_bytes())
    at = raw.index(b"elst") + 12  # box type, version+flags, entry count, then the entry
    assert struct.unpack(">II", raw[at : at + 8])[1] == 1200  # media time: 3 frames in
    raw[at : at + 4] = struct.pack(">I", 1001)  # segment duration: 30 frames at 29.97 fps
    made["edit_list"] = folder / "edit.mp4"
    made["edit_list"].write_bytes(bytes(raw))
    made["damaged_middle"] = _overwrite_packets(soup, folder / "damaged.mp4", [17])
    made["damaged_middle_bframes"] = _overwrite_packets(talking, folder / "damaged_b.mp4", [20])
    made["concealed_middle"] = _overwrite_packets(soup, folder / "concealed.mp4", [17], "half")
    return made


def _assert_matches_pyav(path: Path, info, damaged: tuple[int, ...] = ()) -> None:
    """Frame count, timestamps and content equal PyAV's own clean decode of the file."""
    clean = _pyav_clean(path)
    good = [t for i, t in enumerate(info.timing.pts) if i not in damaged]
    assert good == sorted(clean)
    tb = _time_base(path)
    expected = np.array([float((t - info.timing.pts[0]) * tb) for t in info.timing.pts])
    np.testing.assert_array_equal(info.timing.timestamps, expected)
    with VideoReader(path, info=info, on_damaged="repeat") as reader:
        frames = list(reader.iter_frames())
    assert len(frames) == info.frames
    for i, t in enumerate(info.timing.pts):
        if i not in damaged:
            assert np.array_equal(frames[i], clean[t]), f"frame {i}"


# -- counting -------------------------------------------------------------------------------
def test_cut_file_whose_index_claims_more(cases):
    path = cases["index_overcounts"]
    assert len(_packets(path)) == 54  # the demuxer hands out a last, partial packet
    info = probe(path)
    assert info.header_frames == 169 and info.frames == len(_pyav_clean(path)) == 53
    assert info.end_missing and not info.edit_list
    _assert_matches_pyav(path, info)
    assert run_to_end(check_frames(info)).damaged == ()
    d = info.to_dict()
    assert d["frames"] == 53 and d["header_frames"] == 169 and d["end_missing"]


def test_stream_whose_last_packets_are_lost(cases, real_clip):
    path = cases["last_packets_lost"]
    info, whole = probe(path), probe(real_clip("sl_soup.mp4"))
    assert info.header_frames is None  # Matroska claims a duration, not a frame count
    assert info.header_duration == pytest.approx(whole.duration, abs=1e-3)
    assert info.frames == len(_pyav_clean(path)) == 24 and info.end_missing
    assert info.duration < info.header_duration - 0.5
    _assert_matches_pyav(path, info)
    # the frames that remain are the original's first 24, at the original's times
    np.testing.assert_allclose(info.timing.timestamps, whole.timing.timestamps[:24], atol=1e-3)


def test_complete_index_with_data_stopping_half_way(cases):
    path = cases["data_stops"]
    assert len(_packets(path)) == 41  # the demuxer lists every packet at full size
    info = probe(path)
    assert info.header_frames == 41 and info.frames == len(_pyav_clean(path)) == 20
    assert info.end_missing
    _assert_matches_pyav(path, info)


def test_edit_list_that_hides_frames(cases):
    path = cases["edit_list"]
    assert b"elst" in path.read_bytes()
    info = probe(path)
    assert info.header_frames == 41 and info.edit_list and not info.end_missing
    assert info.frames == len(_pyav_clean(path)) == 30
    assert info.timing.timestamps[0] == 0
    _assert_matches_pyav(path, info)


@pytest.mark.parametrize(
    "case,name,packet",
    [
        ("damaged_middle", "sl_soup.mp4", 17),
        ("damaged_middle_bframes", "face_talking.mp4", 20),
        ("concealed_middle", "sl_soup.mp4", 17),
    ],
)
def test_damaged_frame_in_the_middle(cases, real_clip, case, name, packet):
    path = cases[case]
    info = probe(path)  # cheap: the count is right, the damage is not looked for
    source = probe(real_clip(name))
    # the frame that packet shows (with B-frames, decode order is not display order)
    frame = sorted(p[0] for p in _packets(real_clip(name))).index(_packets(path)[packet][0])
    assert frame == (19 if "bframes" in case else 17)
    assert info.frames == source.frames and info.timing == source.timing
    assert info.damaged is None and not info.end_missing
    checked = run_to_end(check_frames(info))
    assert checked.damaged == (frame,)
    _assert_matches_pyav(path, checked, damaged=(frame,))
    with VideoReader(path, info=info) as reader, pytest.raises(DamagedFrameError) as err:
        list(reader.iter_frames())
    message = str(err.value)
    assert f"frame {frame} " in message and "--on-damaged-frame repeat" in message
    assert "\n" not in message
    with VideoReader(path, info=info, on_damaged="repeat") as reader:
        frames = list(reader.iter_frames())
        assert reader.damaged == [frame]
    assert len(frames) == info.frames
    assert np.array_equal(frames[frame], frames[frame - 1])
    assert not np.array_equal(frames[frame + 1], frames[frame - 1])
    # random access gives the same stand-in as reading in order
    with VideoReader(path, info=info, on_damaged="repeat") as reader:
        assert np.array_equal(reader[frame], frames[frame - 1])
        assert np.array_equal(reader[frame + 1], frames[frame + 1])


def test_damaged_first_frame_shows_the_next_good_one(real_clip, tmp_path):
    path = _overwrite_packets(real_clip("sl_soup.mp4"), tmp_path / "first.mp4", [1])
    info = run_to_end(check_frames(probe(path)))
    assert info.damaged == (1,)
    with VideoReader(path, info=info, on_damaged="repeat") as reader:
        frames = list(reader.iter_frames())
    assert np.array_equal(frames[1], frames[0])


def test_policy_is_validated():
    from napari_diffslva.pipeline import AnonymizeSettings
    from napari_diffslva.prepare.pipeline import PrepareSettings

    with pytest.raises(SettingsError, match="on_damaged_frame"):
        PrepareSettings(on_damaged_frame="skip")
    flat = AnonymizeSettings.from_flat({"on_damaged_frame": "repeat"})
    assert flat.prepare.on_damaged_frame == "repeat"
    assert flat.to_flat()["on_damaged_frame"] == "repeat"


# -- the command line -----------------------------------------------------------------------
def test_probe_cli_reports_the_claim(cases, capsys):
    assert main(["probe", str(cases["index_overcounts"]), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frames"] == 53 and d["header_frames"] == 169 and d["end_missing"]
    assert "claims 169 frames; 53 decode" in d["notes"][0]
    assert main(["probe", str(cases["damaged_middle"]), "--check-frames", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["damaged_frames"] == [17] and d["frames"] == 41


@pytest.mark.parametrize(
    "case", ["index_overcounts", "last_packets_lost", "data_stops", "edit_list"]
)
def test_export_has_exactly_the_decodable_frames(cases, tmp_path, case):
    src = cases[case]
    out = tmp_path / "out.mp4"
    assert main(["export", str(src), str(out)]) == 0
    a, b = probe(src), probe(out)
    assert b.frames == a.frames and b.header_frames == b.frames and not b.end_missing
    np.testing.assert_allclose(b.timing.timestamps, a.timing.timestamps, atol=1e-3)
    diff = np.abs(read_frames(out).astype(int) - read_frames(src).astype(int)).mean()
    assert diff < 3  # the same frames, re-encoded (the frames differ by ~30 levels)
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["source"]["frames"] == a.frames
    assert sidecar["source"]["header_frames"] == a.header_frames
    assert sidecar["deviations"]
    assert src.name not in json.dumps(sidecar)


def test_export_repeat_keeps_count_and_timing(cases, tmp_path):
    src, out = cases["damaged_middle"], tmp_path / "out.mp4"
    assert main(["export", str(src), str(out), "--on-damaged-frame", "repeat"]) == 0
    a, b = probe(src), probe(out)
    assert b.frames == a.frames == 41
    np.testing.assert_allclose(b.timing.timestamps, a.timing.timestamps, atol=1e-3)
    frames = read_frames(out)
    assert np.abs(frames[17].astype(int) - frames[16].astype(int)).mean() < 1
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["source"]["damaged_frames"] == [17] and sidecar["stand_ins"] == {"17": 16}
    assert sidecar["on_damaged_frame"] == "repeat"


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    sd, cn = tiny_models_dir / "sd", tiny_models_dir / "controlnet"
    return [
        "--model",
        str(sd),
        "--controlnet",
        str(cn),
        "--offline",
        "--device",
        "cpu",
        "--short-side",
        "64",
        "--steps",
        "2",
        "--prompt",
        "a person is signing",
        "--face-module",
        "off",
    ]


@pytest.fixture(scope="module")
def small(real_clip, tmp_path_factory) -> dict[str, Path]:
    """8-frame clips for the whole pipeline: one cut with its index first, one damaged."""
    import av

    folder = tmp_path_factory.mktemp("small")
    frames = read_frames(real_clip("sl_soup.mp4"), 0, 8)
    whole = folder / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"bf": "0", "g": "4"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    _, pos, size, _ = _packets(whole)[6]
    cut = folder / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: pos + size // 2])  # frame 6 half there, 7 gone
    return {"cut": cut, "damaged": _overwrite_packets(whole, folder / "damaged.mp4", [3])}


@pytest.mark.parametrize("command", ["export", "prepare", "anonymize"])
def test_default_error_is_one_line_exit_2(small, tmp_path, capsys, tiny, command):
    src, out = small["damaged"], tmp_path / "out.mp4"
    argv = {
        "export": ["export", str(src), str(out)],
        "prepare": ["prepare", str(src), "-o", str(tmp_path / "run")],
        "anonymize": ["anonymize", str(src), "-o", str(out), *tiny],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "frame 3 of 8" in err and "--on-damaged-frame repeat" in err
    assert not out.exists()


def test_prepare_repeat_records_the_damaged_frame(small, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "prepare",
                str(small["damaged"]),
                "-o",
                str(run),
                "--on-damaged-frame",
                "repeat",
                "--short-side",
                "64",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["damaged_frames"] == [3]
    meta = json.loads((run / "run.json").read_text())
    assert meta["source"]["damaged_frames"] == [3] and meta["stand_ins"] == {"3": 2}
    assert (
        json.loads((run / "settings.json").read_text())["prepare"]["on_damaged_frame"] == "repeat"
    )


def test_anonymize_a_cut_clip(small, tmp_path, capsys, tiny):
    src, out = small["cut"], tmp_path / "anon.mp4"
    info = probe(src)
    assert info.header_frames == 8 and info.frames == len(_pyav_clean(src)) == 6
    assert main(["anonymize", str(src), "-o", str(out), "--json", *tiny]) == 0
    result = probe(out)
    assert result.frames == 6
    np.testing.assert_allclose(result.timing.timestamps, info.timing.timestamps, atol=1e-3)
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["source"]["header_frames"] == 8 and sidecar["source"]["frames"] == 6
    assert sidecar["source"]["end_missing"]
    assert "claims 8 frames; 6 decode" in sidecar["deviations"][0]


def test_anonymize_and_audit_with_repeat(small, tmp_path, capsys, tiny):
    src, out, report = small["damaged"], tmp_path / "anon.mp4", tmp_path / "report"
    assert (
        main(
            ["anonymize", str(src), "-o", str(out), "--json", "--on-damaged-frame", "repeat", *tiny]
        )
        == 0
    )
    a, b = probe(src), probe(out)
    assert b.frames == a.frames == 8
    np.testing.assert_allclose(b.timing.timestamps, a.timing.timestamps, atol=1e-3)
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["source"]["damaged_frames"] == [3] and sidecar["stand_ins"] == {"3": 2}
    assert sidecar["anonymize"]["on_damaged_frame"] == "repeat"
    capsys.readouterr()
    assert main(["audit", str(src), str(out), "--json", "--quiet", "--report", str(report)]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["damaged_frames"] == [3] and audit["frames"] == 8
    assert "damaged source frames" in (report / "report.html").read_text()


def test_batch_takes_the_option_from_flags_and_config():
    from napari_diffslva.cli import build_parser
    from napari_diffslva.cli.anonymize import given_settings

    args = build_parser().parse_args(["batch", "in", "-o", "out", "--on-damaged-frame", "repeat"])
    assert given_settings(args)["on_damaged_frame"] == "repeat"
    args = build_parser().parse_args(["batch", "in", "-o", "out"])
    assert "on_damaged_frame" not in given_settings(args)  # a config file's value stands


# -- napari ---------------------------------------------------------------------------------
def test_napari_reader_shows_the_decodable_frames(cases):
    from napari_diffslva._reader import read_video

    data, kwargs, kind = read_video(str(cases["index_overcounts"]))[0]
    assert kind == "image" and data.shape[0] == 53
    meta = kwargs["metadata"]["diffslva"]
    assert meta["source"]["header_frames"] == 169 and meta["source"]["end_missing"]
    assert any("claims 169 frames; 53 decode" in n for n in meta["notes"])
    assert np.array_equal(data[52].compute(), read_frames(cases["index_overcounts"], 52, 53)[0])


# -- batch ----------------------------------------------------------------------------------
def test_batch_record_lists_the_source_deviations(small, tmp_path, tiny_flat):
    from napari_diffslva.batch import anonymize_job, plan_batch

    settings = tiny_flat(steps=2, prompt="a person is signing")
    plan = plan_batch([str(small["cut"])], tmp_path / "out", settings=settings)
    record = anonymize_job(plan.jobs[0])  # what a dask worker runs, here in-process
    assert record["status"] == "done" and record["frames"] == 6
    assert "claims 8 frames; 6 decode" in record["source_deviations"][0]
    damaged = plan_batch([str(small["damaged"])], tmp_path / "out2", settings=settings)
    record = anonymize_job(damaged.jobs[0])
    assert record["status"] == "failed" and "frame 3 of 8" in record["error"]


def test_local_cluster_has_no_heartbeat_deadline():
    """A worker busy for longer than dask's default 5-minute heartbeat deadline must not be
    dropped (its clip would fail or not depending on machine speed)."""
    import dask

    from napari_diffslva.batch import batch_client

    with batch_client(workers=1) as client:
        ttl = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl)
    assert ttl is None
    assert dask.config.get("distributed.scheduler.worker-ttl") is not None  # not leaked
