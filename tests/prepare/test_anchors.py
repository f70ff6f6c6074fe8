"""Anchor choice on a real signing clip: a detected frontal face, both hands in view."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from napari_diffslva.prepare import anchors as A


@pytest.fixture(scope="module")
def house(real_clip):
    """asl_house.gif (73 frames): hands down in frames 0-15 and 51-72, both hands signing
    in front of the dark shirt in 32-49 (checked by eye), and its face track."""
    from napari_diffslva.prepare.faces import track_faces
    from napari_diffslva.progress import run_to_end
    from napari_diffslva.video import read_frames

    frames = read_frames(real_clip("asl_house.gif"), 0, 73)
    return frames, run_to_end(track_faces(list(frames)))


def test_hands_in_view_on_a_real_clip(house):
    """Skin regions outside the face: none while the hands are down, both while signing in
    front of the shirt, though the wall behind the signer is skin-toned (regions that
    touch the border are the wall). Hands against that wall are not found (frames 20-31:
    hands raised beside the face score 0 or 1)."""
    frames, track = house
    counts = [A.hands_in_view(frames[i], track.landmarks[i]) for i in range(73)]
    assert all(counts[i] == 0 for i in [*range(0, 16), *range(51, 73)]), counts
    assert all(counts[i] == 2 for i in range(32, 50)), counts


def test_face_score_wants_a_detected_frontal_unoccluded_face(house):
    from napari_diffslva.prepare.faces import INTERPOLATED

    _, track = house
    scores = [A.face_score(track, i) for i in range(73)]
    assert min(scores) > 0.8  # a signer facing the camera throughout
    edited = track.copy()
    edited.status[10] = INTERPOLATED
    edited.occluded[11] = True
    profile = edited.landmarks[12].copy()
    profile[A.NOSE_TIP, 0] = profile[A.RIGHT_EYE_OUTER, 0]  # nose at the eye corner
    edited.landmarks[12] = profile
    assert [A.face_score(edited, i) for i in (10, 11, 12)] == [0.0, 0.0, 0.0]


def test_anchor_choice_and_placement_use_the_scores(house):
    """The first anchor: the most frontal face near the middle. Other anchors of a long
    clip (here one per 30 frames) move to frames with both hands in view when there are
    some within a quarter span."""
    from napari_diffslva.engine.anchors import plan_clip

    frames, track = house
    first = A.choose_anchor(track, 73)
    window = range(36 - 9, 36 + 10)
    assert first in window
    assert A.face_score(track, first) == max(A.face_score(track, i) for i in window)
    score = A.scorer(SimpleNamespace(track=track, reader=frames))  # as a prepared clip
    plan = plan_clip(73, first, 30, score)
    early = plan.anchors[1]
    assert early in (17, 18)  # of 6-18 (hands down until 15), the frames with both hands
    assert A.scorer(SimpleNamespace()) is None  # in-memory inputs: no face track
