"""Face detection and the per-clip face track on real clips (dlib HOG + 68 landmarks)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from napari_diffslva.errors import SettingsError
from napari_diffslva.prepare.faces import (
    DETECTED,
    EDITED,
    INTERPOLATED,
    LOST,
    FaceBox,
    FaceTrack,
    apply_edits,
    detect_faces,
    face_landmarks,
    track_faces,
)
from napari_diffslva.progress import Progress, run_to_end
from napari_diffslva.project import RunFolder
from napari_diffslva.video import read_frames


@pytest.fixture(scope="session")
def soup(real_clip):
    return read_frames(real_clip("sl_soup.mp4"))


@pytest.fixture(scope="session")
def soup_track(soup):
    return run_to_end(track_faces(soup))


@pytest.fixture(scope="session")
def house(real_clip):
    return read_frames(real_clip("asl_house.gif"))[::2]


@pytest.fixture(scope="session")
def house_track(house):
    return run_to_end(track_faces(house))


@pytest.fixture(scope="session")
def selfie(real_clip):
    return read_frames(real_clip("asl_selfie_webcam.mp4"))


@pytest.fixture(scope="session")
def selfie_track(selfie):
    return run_to_end(track_faces(selfie))


def _centres(track: FaceTrack) -> np.ndarray:
    return (track.boxes[:, :2] + track.boxes[:, 2:]) / 2


def test_small_faces_need_upsampling(house):
    """HOG misses 320x240 signers at native size; the automatic choice upsamples once."""
    frames = house[::6]
    assert sum(len(detect_faces(f, upsample=0)) for f in frames) == 0
    found = [detect_faces(f) for f in frames]
    assert all(len(boxes) >= 1 for boxes in found)
    box = found[0][0]
    assert box.width > 30 and box.height > 30 and box.score > 0
    assert np.array_equal(box.as_array(), [box.x0, box.y0, box.x1, box.y1])


@pytest.mark.parametrize("clip", ["house", "soup"])
def test_track_finds_the_face_and_moves_smoothly(clip, request):
    frames = request.getfixturevalue(clip)
    track = request.getfixturevalue(f"{clip}_track")
    assert len(track) == len(frames)
    assert len(track.face_frames) >= 0.95 * len(frames)
    size = track.boxes[:, 2] - track.boxes[:, 0]
    steps = np.linalg.norm(np.diff(_centres(track), axis=0), axis=1) / size[1:]
    assert np.nanmax(steps) < 0.3  # never jumps to another face
    for t in track.face_frames:
        x0, y0, x1, y1 = track.boxes[t]
        pad = 0.15 * (x1 - x0)
        lm = track.landmarks[t]
        inside = (lm[:, 0] > x0 - pad) & (lm[:, 0] < x1 + pad)
        inside &= (lm[:, 1] > y0 - pad) & (lm[:, 1] < y1 + pad)
        assert inside.mean() > 0.9, t
    assert track.landmarks.dtype == np.float32 and track.landmarks.shape[1:] == (68, 2)


def test_hand_over_face_is_reported_not_tracked(selfie_track):
    """asl_selfie_webcam: the hand crosses the face in frames ~18-33 (checked by eye)."""
    lost = set(selfie_track.lost_frames)
    occluded = set(np.flatnonzero(selfie_track.occluded).tolist())
    assert len(lost & set(range(18, 34))) >= 6
    assert occluded <= lost
    assert not lost - set(range(15, 37))  # clean frames keep their face
    for t in lost:
        assert np.isnan(selfie_track.boxes[t]).all() and np.isnan(selfie_track.landmarks[t]).all()
    assert not set(selfie_track.interpolated_frames) & occluded  # no face guessed over a hand


def test_false_positive_on_shirt_is_rejected(soup, soup_track):
    frames = soup[::4].copy()
    reference = soup_track.box(0)
    # a smaller copy of the signer's face pasted on the shirt, two face heights lower
    x0, y0, x1, y1 = (int(v) for v in reference.as_array())
    pad = int(0.3 * (x1 - x0))
    face = soup[0][y0 - pad : y1 + pad, x0 - pad : x1 + pad]
    small = cv2.resize(face, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    top = y1 + int(0.9 * (y1 - y0))
    left = int(reference.center[0] - small.shape[1] / 2)
    frames[:, top : top + small.shape[0], left : left + small.shape[1]] = small
    assert top + small.shape[0] <= frames.shape[1]
    assert len(detect_faces(frames[0])) >= 2  # the decoy is really detected
    track = run_to_end(track_faces(frames))
    expected = _centres(soup_track)[::4]
    found = _centres(track)
    ok = ~np.isnan(found[:, 0])
    assert ok.mean() > 0.9
    assert np.abs(found[ok] - expected[ok]).max() < 0.25 * reference.width


def test_short_gaps_are_interpolated_long_gaps_lost(house, house_track):
    frames = house[:16].copy()
    mean = frames.reshape(-1, 3).mean(0).astype(np.uint8)

    def blank(ts):
        out = frames.copy()
        for t in ts:
            x0, y0, x1, y1 = (int(v) for v in house_track.boxes[t])
            out[t, max(y0 - 10, 0) : y1 + 10, max(x0 - 10, 0) : x1 + 10] = mean
        return out

    events = []
    short = run_to_end(track_faces(blank([5, 6]), max_gap=3), events.append)
    assert events[-1] == Progress("faces", 16, 16, events[-1].seconds)
    assert short.interpolated_frames == [5, 6] and (short.status[5:7] == INTERPOLATED).all()
    assert (short.status[[4, 7]] == DETECTED).all()
    mid = (house_track.boxes[4] + house_track.boxes[7]) / 2
    assert np.abs(short.boxes[5:7].mean(0) - mid).max() < 1.0
    assert not np.isnan(short.landmarks[5]).any()
    long = run_to_end(track_faces(blank(range(4, 11)), max_gap=3))
    assert long.lost_frames == list(range(4, 11))
    assert (long.status[[3, 11]] == DETECTED).all()


def test_edits_honoured_and_json_round_trip(soup, soup_track, tmp_path):
    b = soup_track.boxes[3]
    moved = [float(b[0] + 4), float(b[1] + 2), float(b[2] + 4), float(b[3] + 2)]
    edits = json.loads(
        json.dumps({"boxes": {"3": moved}, "status": {"5": "occluded", "6": "lost", "7": "face"}})
    )
    edited = apply_edits(soup_track, edits, frames=soup)
    assert edited.status[3] == EDITED and np.allclose(edited.boxes[3], moved)
    lm = edited.landmarks[3]
    assert (lm[:, 0] > moved[0] - 10).all() and (lm[:, 0] < moved[2] + 10).all()
    assert edited.status[5] == LOST and edited.occluded[5] and np.isnan(edited.boxes[5]).all()
    assert edited.status[6] == LOST and not edited.occluded[6]
    assert edited.status[7] == EDITED
    assert soup_track.status[5] != LOST  # the input track is not modified
    assert 5 in edited.lost_frames and 3 in edited.edited_frames
    # without frames the landmarks move with the box
    shifted = apply_edits(soup_track, {"boxes": {3: moved}})
    assert np.allclose(shifted.landmarks[3], soup_track.landmarks[3] + [4, 2], atol=0.5)
    with pytest.raises(SettingsError, match="no box"):
        apply_edits(edited, {"status": {"6": "face"}})
    with pytest.raises(SettingsError, match="unknown status"):
        apply_edits(edited, {"status": {"6": "gone"}})
    # cache round trip through the run folder
    run = RunFolder(tmp_path / "run")
    run.save_cache("faces", "k", edited.to_arrays())
    back = FaceTrack.from_arrays(run.load_cache("faces", "k"))
    for name, value in edited.to_arrays().items():
        assert np.array_equal(getattr(back, name), value, equal_nan=value.dtype.kind == "f")


def test_landmarks_follow_the_box(soup):
    box = detect_faces(soup[0])[0]
    lm = face_landmarks(soup[0], box)
    shifted = soup[0][:, 10:]  # moving the image moves the landmarks
    box2 = FaceBox(box.x0 - 10, box.y0, box.x1 - 10, box.y1)
    lm2 = face_landmarks(np.ascontiguousarray(shifted), box2)
    assert np.abs((lm - [10, 0]) - lm2).mean() < 1.0
    assert isinstance(box.center, tuple) and box.area == box.width * box.height
