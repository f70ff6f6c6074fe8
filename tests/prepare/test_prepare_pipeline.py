"""The prepare stage as a cached, resumable job in the run folder (real clip, short)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_diffslva.cli import main
from napari_diffslva.errors import DiffslvaError, SettingsError
from napari_diffslva.prepare.pipeline import STAGES, PrepareSettings, open_prepared, prepare_clip
from napari_diffslva.progress import run_to_end

SMALL = PrepareSettings(short_side=128)


@pytest.fixture(scope="module")
def clip(clip_head):
    """The first 8 frames of a real signing clip, as its own file."""
    return clip_head("sl_soup.mp4", 8)


def test_prepare_caches_everything_and_reopens_instantly(clip, tmp_path, monkeypatch):
    prepared = run_to_end(prepare_clip(clip, tmp_path / "run", SMALL))
    s = prepared.summary()
    assert s["frames"] == 8 and s["face_frames"] == 8 and s["lost_frames"] == []
    assert prepared.geometry.work_hw == (128, 192)
    assert prepared.edges.complete and prepared.flows.complete
    edges = prepared.control(3)
    assert edges.shape == (128, 192) and edges.min() >= 0 and edges.max() <= 1
    assert edges.mean() > 0.01  # a real frame has edges
    pf = prepared.flow(3, 2)
    assert pf.flow.shape == (128, 192, 2)
    # reopening computes nothing: every detector would fail if called
    import napari_diffslva.prepare.edges as edges_mod
    import napari_diffslva.prepare.faces as faces_mod
    import napari_diffslva.prepare.flow as flow_mod

    def boom(*a, **k):
        raise AssertionError("recomputed a cached stage")

    monkeypatch.setattr(faces_mod, "track_faces", boom)
    monkeypatch.setattr(edges_mod, "get_edge_detector", boom)
    monkeypatch.setattr(flow_mod, "frame_pair_flows", boom)
    monkeypatch.setattr(flow_mod, "pair_flow", boom)
    again = open_prepared(tmp_path / "run", clip)
    assert np.array_equal(again.control(3), edges)
    assert np.array_equal(again.track.boxes, prepared.track.boxes, equal_nan=True)
    # every pair the engine reads comes from the cache, both neighbours included (frames
    # left of the anchor are translated from the frame after them)
    for target, source in ((3, 2), (2, 3), (5, again.anchor), (again.anchor - 1, again.anchor)):
        again.flow(target, source)


def test_cached_neighbour_pulls_equal_a_direct_computation(clip, tmp_path):
    from napari_diffslva.prepare.flow import pair_flow

    prepared = run_to_end(prepare_clip(clip, tmp_path / "run", SMALL))
    for target, source in ((4, 3), (3, 4)):
        direct = pair_flow(prepared.source_frame(target), prepared.source_frame(source), SMALL.flow)
        cached = prepared.flow(target, source)
        np.testing.assert_allclose(cached.flow, direct.flow, atol=0.02)  # float16 storage
        np.testing.assert_array_equal(cached.occlusion_raw, direct.occlusion_raw)
    forward, backward = prepared.flow(4, 3), prepared.flow(3, 4)
    assert not np.array_equal(forward.occlusion_raw, backward.occlusion_raw)


def test_new_anchor_recomputes_flow_only(clip, tmp_path):
    first = run_to_end(prepare_clip(clip, tmp_path / "run", SMALL))
    edge_mtime = first.edges.path(0).stat().st_mtime_ns
    other = 0 if first.anchor != 0 else 7
    second = run_to_end(
        prepare_clip(clip, tmp_path / "run", PrepareSettings(short_side=128, anchor=other))
    )
    assert second.anchor == other
    assert second.edges.folder == first.edges.folder
    assert second.edges.path(0).stat().st_mtime_ns == edge_mtime
    assert second.flows.folder != first.flows.folder
    # the anchor's own pull field is the identity
    assert np.abs(second.flow(other, other).flow).max() == 0


def test_killed_prepare_resumes_missing_frames_only(clip, tmp_path):
    gen = prepare_clip(clip, tmp_path / "run", SMALL)
    stages = []
    for event in gen:
        stages.append(event.stage)
        if event.stage == "edges" and event.done == 3:
            gen.close()  # the user pressed cancel, or the process was killed
            break
    events = []
    prepared = run_to_end(prepare_clip(clip, tmp_path / "run", SMALL), events.append)
    assert prepared.edges.complete
    # only the missing frames are computed; progress counts over the whole clip
    n = prepared.info.frames
    assert [e.done for e in events if e.stage == "edges" and e.payload is None] == list(
        range(4, n + 1)
    )
    events = list(prepare_clip(clip, tmp_path / "run", SMALL))
    # nothing left to do: one "stage done" event per stage, carrying the prepared clip
    assert [(e.stage, e.done, e.total) for e in events] == [(s, n, n) for s in STAGES]
    assert all(e.payload.edges.complete and e.payload.flows.complete for e in events)


def test_run_folder_refuses_another_video(clip, tmp_path, real_clip):
    run_to_end(prepare_clip(clip, tmp_path / "run", SMALL, stages=("faces",)))
    with pytest.raises(DiffslvaError, match="another video"):
        run_to_end(prepare_clip(real_clip("asl_house.gif"), tmp_path / "run", SMALL))


def test_bad_settings_are_named():
    with pytest.raises(SettingsError, match="edgez"):
        PrepareSettings.from_dict({"edgez": "soft"})


def test_prepare_cli_json(clip, tmp_path, capsys):
    code = main(
        ["prepare", str(clip), "-o", str(tmp_path / "run"), "--short-side", "128", "--json"]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    assert d["frames"] == 8 and d["face_frames"] == 8
    assert d["lost_frames"] == [] and d["interpolated_frames"] == []
    assert set(d["seconds_per_frame"]) == {"faces", "edges", "flow"}


def test_face_mask_sources(clip, tmp_path):
    """Landmark mask by default; a BiSeNet parse when chosen; a painted mask wins."""
    import cv2
    import torch

    from napari_diffslva.nets.bisenet import BiSeNet

    prepared = run_to_end(prepare_clip(clip, tmp_path / "run", SMALL, stages=("faces",)))
    mask = prepared.face_mask(2)
    assert mask.shape == (240, 320) and mask.max() == pytest.approx(1.0, abs=1e-3)
    lm = prepared.track.landmarks[2]
    cx, cy = np.nanmean(lm, axis=0).astype(int)
    assert mask[cy, cx] > 0.99 and mask[5, 5] == 0
    # BiSeNet with random weights: every pixel is some class; the mask lands around the face
    torch.manual_seed(0)
    weights = tmp_path / "79999_iter.pth"
    torch.save(BiSeNet(19).state_dict(), weights)
    parsed = run_to_end(
        prepare_clip(
            clip,
            tmp_path / "run",
            PrepareSettings(short_side=128, face_parser="bisenet", parser_weights=str(weights)),
            stages=("faces",),
        )
    )
    pmask = parsed.face_mask(2)
    assert pmask.shape == (240, 320)
    outside = np.ones_like(pmask, bool)
    x0, y0, x1, y1 = prepared.track.boxes[2]
    w, h = x1 - x0, y1 - y0
    outside[max(0, int(y0 - h)) : int(y1 + h), max(0, int(x0 - w)) : int(x1 + w)] = False
    assert pmask[outside].max() == 0  # nothing far from the face
    painted = np.zeros((240, 320), np.uint8)
    painted[10:20, 10:20] = 255
    (tmp_path / "run" / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "run" / "masks" / "000002.png"), painted)
    assert np.array_equal(prepared.face_mask(2) > 0, painted > 0)
