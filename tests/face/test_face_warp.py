"""Landmark-driven warping backend: geometry, open mouths painted from the source, the
teeth bit, eyes, neutral frame choice."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_diffslva.face import landmark_warp as lw
from napari_diffslva.face import mouth
from napari_diffslva.prepare.align import alignment_transforms, crop_face, transform_points
from napari_diffslva.prepare.faces import DETECTED, FaceTrack, detect_faces, face_landmarks
from napari_diffslva.video import read_frames

# face_talking.mp4 frames measured once: mouth closed at 56, wide open at 20.
CLOSED, OPEN = 56, 20


@pytest.fixture(scope="module")
def talking(real_clip):
    """Aligned 256 px crops and crop landmarks of a few face_talking frames."""
    frames = read_frames(real_clip("face_talking.mp4"), 0, 60)
    out = {}
    for t in (CLOSED, OPEN):
        box = detect_faces(frames[t])[0]
        lm = face_landmarks(frames[t], box)
        track = FaceTrack.empty(1)
        track.boxes[0], track.landmarks[0], track.status[0] = box.as_array(), lm, DETECTED
        m = alignment_transforms(track, 256, smooth=0)[0]
        out[t] = (crop_face(frames[t], m, 256), transform_points(lm, m))
    return out


def test_clip_facts_hold(talking):
    assert lw.mouth_opening(talking[CLOSED][1]) < 0.03
    assert lw.mouth_opening(talking[OPEN][1]) > 0.15


def test_warp_identity_and_translation(talking):
    crop, lm = talking[CLOSED]
    same = lw.piecewise_affine_warp(crop, lm, lm)
    assert np.abs(same.astype(int) - crop).max() <= 1
    moved = lw.piecewise_affine_warp(crop, lm, lm + [6.0, 0.0])
    # inside the face the content moved 6 px right
    y0, y1 = int(lm[:, 1].min()) + 10, int(lm[:, 1].max()) - 10
    x0, x1 = int(lm[:, 0].min()) + 10, int(lm[:, 0].max()) - 10
    shifted = np.abs(moved[y0:y1, x0 + 6 : x1 + 6].astype(int) - crop[y0:y1, x0:x1]).mean()
    unshifted = np.abs(moved[y0:y1, x0:x1].astype(int) - crop[y0:y1, x0:x1]).mean()
    assert shifted < 2.0 < unshifted
    # the crop border stays put
    assert np.abs(moved[0].astype(int) - crop[0]).max() <= 1


def test_open_mouth_painted_from_the_source(talking):
    """Closed-mouth source, open-mouth driver: the output's mouth is open (dlib sees it),
    darker than the lips around it, built from the source alone (the driving crops are not
    read: the same output with them passed as None), and shows teeth only when told."""
    src_crop, src_lm = talking[CLOSED]
    drv_crop, drv_lm = talking[OPEN]
    backend = lw.LandmarkWarpBackend()

    def render(crops, teeth):
        return next(backend.reenact(src_crop, src_lm, crops, [drv_lm], None, src_lm, [teeth]))

    out = render([drv_crop], True)
    assert np.array_equal(out, render([None], True))
    target = lw.target_landmarks(src_lm, drv_lm, src_lm)
    seen = face_landmarks(out, detect_faces(out)[0])
    assert lw.mouth_opening(seen) > 0.1
    inner = mouth.polygon_mask(target[mouth.INNER_MOUTH], out.shape[:2]) > 0
    lips = (mouth.polygon_mask(target[mouth.OUTER_MOUTH], out.shape[:2]) > 0) & ~inner

    def lightness(image):
        return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0].astype(float)

    plain = render([None], False)
    assert lightness(plain)[inner].mean() < 0.5 * lightness(plain)[lips].mean()
    # the teeth band: pixels lighter than the lips, only with teeth
    assert np.mean(lightness(out)[inner] > lightness(out)[lips].mean()) > 0.3
    assert np.mean(lightness(plain)[inner] > lightness(plain)[lips].mean()) < 0.02
    # outside the inner mouth and its one-pixel feather, the plain warp of the source
    warped = lw.piecewise_affine_warp(src_crop, src_lm, target)
    grown = cv2.dilate(inner.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.array_equal(out[~grown], warped[~grown])


def test_teeth_bit_from_the_driver(talking):
    """The one bit taken from the driver's mouth: teeth in face_talking's wide-open frame
    (upper and lower teeth visible), none in its closed one."""
    assert mouth.teeth_visible(*talking[OPEN])
    assert not mouth.teeth_visible(*talking[CLOSED])


def test_open_source_mouth_keeps_its_own_interior(talking):
    """An open source mouth driven to the same opening is only warped (its own teeth and
    cavity), not painted."""
    crop, lm = talking[OPEN]
    out = next(lw.LandmarkWarpBackend().reenact(crop, lm, [None], [lm], None, lm, [False]))
    assert np.abs(out.astype(int) - crop).max() <= 1


def test_eyes_open_at_most_a_quarter_more():
    src = np.zeros((68, 2))
    src[:, 0] = np.arange(68)
    src[36:42] = [[0, 0], [1, -1], [2, -1], [3, 0], [2, 1], [1, 1]]
    src[42:48] = src[36:42] + [6, 0]
    drv = src.copy()
    drv[[37, 38, 43, 44], 1] -= 2  # driver's upper lids go far up
    target = lw.target_landmarks(src, drv, src)
    for eye in lw.EYES:
        assert lw._eye_opening(target[eye]) == pytest.approx(
            lw.MAX_EYE_OPENING * lw._eye_opening(src[eye])
        )
    drv[[37, 38, 43, 44], 1] += 3.5  # blink: allowed in full
    target = lw.target_landmarks(src, drv, src)
    assert lw._eye_opening(target[lw.EYES[0]]) < 0.5 * lw._eye_opening(src[lw.EYES[0]])


def test_neutral_frame(talking):
    lms = [talking[OPEN][1], None, talking[CLOSED][1]]
    assert lw.neutral_frame(lms) == 2
    assert lw.neutral_frame(lms, like=talking[OPEN][1]) == 0
    with pytest.raises(ValueError):
        lw.neutral_frame([None, None])
