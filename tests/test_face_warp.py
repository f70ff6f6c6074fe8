"""Landmark-driven warping backend: geometry, open mouths, eyes, neutral frame choice."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_diffslva.face import landmark_warp as lw
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
    shifted = np.abs(moved[y0:y1, x0 + 6:x1 + 6].astype(int) - crop[y0:y1, x0:x1]).mean()
    unshifted = np.abs(moved[y0:y1, x0:x1].astype(int) - crop[y0:y1, x0:x1]).mean()
    assert shifted < 2.0 < unshifted
    # the crop border stays put
    assert np.abs(moved[0].astype(int) - crop[0]).max() <= 1


def test_open_mouth_looks_open(talking):
    """Closed-mouth source, open-mouth driver: the output's mouth is open (dlib sees it) and
    shows the driver's mouth interior (teeth, cavity), not the source's lips stretched."""
    src_crop, src_lm = talking[CLOSED]
    drv_crop, drv_lm = talking[OPEN]
    out = next(lw.LandmarkWarpBackend().reenact(
        src_crop, src_lm, [drv_crop], [drv_lm], src_crop, src_lm))
    target = lw.target_landmarks(src_lm, drv_lm, src_lm)
    seen = face_landmarks(out, detect_faces(out)[0])
    assert lw.mouth_opening(seen) > 0.1
    inner = lw._polygon_mask(target[lw.INNER_MOUTH], out.shape[:2]) > 0

    def lightness(image):
        return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0][inner].astype(float)

    shown = lightness(out)
    interior = lightness(lw.piecewise_affine_warp(drv_crop, drv_lm, target))
    stretched = lightness(lw.piecewise_affine_warp(src_crop, src_lm, target))
    assert np.corrcoef(shown, interior)[0, 1] > 0.8  # feathered edge mixes in the lips
    assert np.corrcoef(shown, stretched)[0, 1] < 0.6
    # and darker than the lips around it, so it reads as an opening
    lips = (lw._polygon_mask(target[lw.OUTER_MOUTH], out.shape[:2]) > 0) & ~inner
    assert shown.mean() < 0.75 * cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 0][lips].mean()


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
            lw.MAX_EYE_OPENING * lw._eye_opening(src[eye]))
    drv[[37, 38, 43, 44], 1] += 3.5  # blink: allowed in full
    target = lw.target_landmarks(src, drv, src)
    assert lw._eye_opening(target[lw.EYES[0]]) < 0.5 * lw._eye_opening(src[lw.EYES[0]])


def test_neutral_frame(talking):
    lms = [talking[OPEN][1], None, talking[CLOSED][1]]
    assert lw.neutral_frame(lms) == 2
    assert lw.neutral_frame(lms, like=talking[OPEN][1]) == 0
    with pytest.raises(ValueError):
        lw.neutral_frame([None, None])
