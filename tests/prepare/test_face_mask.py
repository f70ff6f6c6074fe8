"""Face masks from real landmarks (offline default) and the parser-label mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_diffslva.nets.bisenet import BiSeNet
from napari_diffslva.prepare.face_mask import (
    FACE_CLASSES,
    FaceParser,
    frame_face_mask,
    landmark_face_mask,
    parser_face_mask,
)
from napari_diffslva.prepare.faces import LOST, FaceTrack, detect_faces, face_landmarks
from napari_diffslva.video import read_frames


@pytest.fixture(scope="module")
def face(real_dir):
    image = read_frames(real_dir / "faces" / "obama_1.jpg")[0]
    box = max(detect_faces(image), key=lambda b: b.area)
    return image, face_landmarks(image, box)


def test_mask_covers_face_fades_and_reaches_forehead(face):
    image, lm = face
    h, w = image.shape[:2]
    mask = landmark_face_mask(lm, (h, w))
    assert mask.shape == (h, w) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    xs, ys = np.round(lm).astype(int).T
    assert (mask[ys, xs] > 0.5).all()  # every landmark inside
    assert mask[ys[30], xs[30]] > 0.99  # nose tip: solid
    face_w = np.ptp(lm[:, 0])
    far = np.ones((h, w), bool)
    far[
        max(int(lm[:, 1].min() - face_w), 0) : int(lm[:, 1].max() + 0.3 * face_w),
        max(int(lm[:, 0].min() - 0.3 * face_w), 0) : int(lm[:, 0].max() + 0.3 * face_w),
    ] = False
    assert mask[far].max() == 0.0
    # feathered edge: a band of intermediate values a few pixels wide, not a hard step
    row = mask[int(lm[30, 1])]
    soft = (row > 0.02) & (row < 0.98)
    assert 6 <= soft.sum() <= 0.4 * face_w
    # forehead: above the brows is face with the default lift, not without it
    brow_top = lm[17:27, 1].min()
    probe = (int(brow_top - 0.15 * face_w), int(lm[27, 0]))
    assert mask[probe] > 0.5
    assert landmark_face_mask(lm, (h, w), forehead=0.0)[probe] < 0.5


def test_masks_follow_the_track(face):
    image, lm = face
    track = FaceTrack.empty(3)
    for t in (0, 2):
        track.landmarks[t] = lm + [5 * t, 0]
        track.boxes[t] = [0, 0, 1, 1]
        track.status[t] = 1
    masks = np.stack([frame_face_mask(track, t, image.shape[:2]) >= 0.5 for t in range(3)])
    assert masks[0].any() and track.status[1] == LOST and not masks[1].any()
    shift = np.flatnonzero(masks[2].any(0))[0] - np.flatnonzero(masks[0].any(0))[0]
    assert shift == 10


def test_parser_mask_and_parse_shapes():
    labels = np.arange(19).reshape(1, 19).repeat(2, 0)
    mask = parser_face_mask(labels)
    assert mask.dtype == np.float32
    assert set(np.flatnonzero(mask[0])) == set(FACE_CLASSES)
    assert mask[0, 0] == 0 and mask[0, 17] == 0 and mask[0, 16] == 0  # background, hair, cloth
    torch.manual_seed(0)
    parser = FaceParser(BiSeNet().eval())
    out = parser.parse(np.zeros((40, 30, 3), np.uint8))
    assert out.shape == (40, 30) and out.min() >= 0 and out.max() < 19
