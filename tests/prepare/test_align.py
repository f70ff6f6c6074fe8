"""Aligned face crops on a real clip: stable framing, exact inverse, paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_diffslva.prepare.align import (
    alignment_transforms,
    crop_face,
    paste_back,
    transform_points,
)
from napari_diffslva.prepare.faces import LOST, FaceBox, face_landmarks, track_faces
from napari_diffslva.progress import run_to_end
from napari_diffslva.video import read_frames


@pytest.fixture(scope="module")
def clip(real_clip):
    frames = read_frames(real_clip("sl_soup.mp4"), 0, 24)
    return frames, run_to_end(track_faces(frames))


def test_face_fills_the_crop_and_stays_put(clip):
    frames, track = clip
    transforms = alignment_transforms(track, 256)
    assert transforms.shape == (len(track), 2, 3) and transforms.dtype == np.float64
    eyes = []
    for t in track.face_frames:
        lm = transform_points(track.landmarks[t], transforms[t])
        eyes.append(np.stack([lm[36:42].mean(0), lm[42:48].mean(0)]))
        assert (lm > 0).all() and (lm < 256).all()  # the whole face with margin
    eyes = np.array(eyes)
    eye_dist = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=1)
    assert 45 < eye_dist.mean() < 75  # FFHQ framing: crop about 4 eye distances wide
    assert np.abs(eyes[:, 1, 1] - eyes[:, 0, 1]).max() < 4  # eyes level
    # a signer's head moves little: the eyes stay within a few crop pixels
    assert eyes.std(axis=0).max() < 4
    # smoothing removes frame-to-frame jitter of the framing
    raw = alignment_transforms(track, 256, smooth=0)
    jitter = np.abs(np.diff(transforms[:, :, 2], 2, axis=0)).mean()
    assert jitter < np.abs(np.diff(raw[:, :, 2], 2, axis=0)).mean()


def test_lost_frames_have_no_transform(clip):
    _, track = clip
    track = track.copy()
    track.status[3], track.landmarks[3] = LOST, np.nan
    transforms = alignment_transforms(track)
    assert np.isnan(transforms[3]).all() and not np.isnan(transforms[4]).any()


def test_inverse_maps_crop_landmarks_back(clip):
    frames, track = clip
    M = alignment_transforms(track, 256)[10]
    crop = crop_face(frames[10], M, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    # landmarks found again on the crop land on the source landmarks once mapped back
    box_src = track.boxes[10].reshape(2, 2)
    corners = transform_points(np.array([box_src[0], box_src[1]]), M)
    in_crop = face_landmarks(crop, FaceBox(*corners.min(0), *corners.max(0)))
    back = transform_points(in_crop, cv2.invertAffineTransform(M))
    assert np.abs(back - track.landmarks[10]).mean() < 1.5


def test_paste_back_reproduces_the_crop_region(clip):
    frames, track = clip
    M = alignment_transforms(track, 256)[5]
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8).repeat(64, 0).repeat(64, 1)
    pasted = paste_back(frames[5], patch, M, np.ones((256, 256), np.float32))
    again = crop_face(pasted, M, 256)
    inner = np.s_[24:-24, 24:-24]
    # up to resampling at the source's lower resolution (the face is ~130 px there)
    assert np.abs(again[inner].astype(int) - patch[inner]).mean() < 4
    # pixels the crop does not reach are untouched
    far = transform_points(np.array([[0.0, 0.0]]), M)[0]
    assert (far < 0).all()
    assert np.array_equal(pasted[0, 0], frames[5][0, 0])
    # a zero mask changes nothing
    same = paste_back(frames[5], patch, M, np.zeros((256, 256), np.float32))
    assert np.array_equal(same, frames[5])
